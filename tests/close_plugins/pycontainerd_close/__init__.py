"""Plugins for the daemon's stop path.

`close-raises` requires every other plugin, so it starts last and is
closed first; its close() raises. `close-marker` writes `closed` into its
state directory when it is closed, which shows the daemon went on closing
plugins after the failure.
"""

import os

from pycontainerd.core.registry import PluginType, Registration, hookimpl


class Raises:
    def close(self):
        raise OSError("the example device will not let go")


class Marker:
    def __init__(self, path):
        self.path = path

    async def close(self):
        with open(self.path, "w") as f:
            f.write("closed\n")


async def init_raises(ic):
    return Raises()


async def init_marker(ic):
    os.makedirs(ic.state, exist_ok=True)
    return Marker(os.path.join(ic.state, "closed"))


@hookimpl
def pycontainerd_plugins():
    return [
        Registration(type=PluginType.INTERNAL, id="close-marker", init=init_marker),
        Registration(type=PluginType.INTERNAL, id="close-raises", requires=("*",), init=init_raises),
    ]
