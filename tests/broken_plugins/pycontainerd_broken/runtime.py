"""Two plugins that import fine but go wrong in init: one errors, one skips."""

from pycontainerd.core.context import SkipPlugin
from pycontainerd.core.registry import PluginType, Registration, hookimpl


async def init_error(ic):
    raise RuntimeError("the example device is on fire")


async def init_skip(ic):
    raise SkipPlugin("no example hardware on this machine")


@hookimpl
def pycontainerd_plugins():
    return [
        Registration(type=PluginType.INTERNAL, id="broken-init", init=init_error),
        Registration(type=PluginType.INTERNAL, id="skipper", init=init_skip),
    ]
