"""A third-party snapshotter-type plugin: a directory per snapshot."""

import os
from dataclasses import dataclass

from pycontainerd.core.registry import PluginType, Registration, hookimpl


@dataclass
class Config:
    root_path: str = ""  # default: the plugin's own root directory
    max_snapshots: int = 100


class ExampleSnapshotter:
    def __init__(self, root: str, max_snapshots: int):
        self.root, self.max_snapshots = root, max_snapshots

    def prepare(self, key: str) -> str:
        path = os.path.join(self.root, "snapshots", key)
        os.makedirs(path, exist_ok=False)
        return path


async def init(ic):
    root = ic.config.root_path or ic.root
    ic.meta.platforms.append("linux/amd64")
    ic.meta.exports.update(root=root, max_snapshots=str(ic.config.max_snapshots))
    return ExampleSnapshotter(root, ic.config.max_snapshots)


@hookimpl
def pycontainerd_plugins():
    return [Registration(type=PluginType.SNAPSHOT, id="example", config=Config, init=init)]
