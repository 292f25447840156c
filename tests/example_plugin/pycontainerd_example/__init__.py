"""A third-party snapshotter: native's directories, with a quota."""

import asyncio
from dataclasses import dataclass

from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import errdefs
from pycontainerd.plugins.snapshotters.native import NativeSnapshotter


@dataclass
class Config:
    root_path: str = ""  # default: the plugin's own root directory
    max_snapshots: int = 100


class ExampleSnapshotter(NativeSnapshotter):
    """The whole Snapshotter contract (pycontainerd.pkg.snapshots) comes from
    native. Its methods block: the daemon calls them from worker threads."""

    def __init__(self, root: str, max_snapshots: int):
        super().__init__(root)
        self.max_snapshots = max_snapshots

    def prepare(self, key, parent="", labels=None):
        if len(self.walk()) >= self.max_snapshots:
            raise errdefs.FailedPrecondition(f"quota of {self.max_snapshots} snapshots reached")
        return super().prepare(key, parent, labels)


async def init(ic):
    root = ic.config.root_path or ic.root
    ic.meta.platforms.append("linux/amd64")
    ic.meta.exports.update(root=root, max_snapshots=str(ic.config.max_snapshots))
    return await asyncio.to_thread(ExampleSnapshotter, root, ic.config.max_snapshots)


@hookimpl
def pycontainerd_plugins():
    return [Registration(type=PluginType.SNAPSHOT, id="example", config=Config, init=init)]
