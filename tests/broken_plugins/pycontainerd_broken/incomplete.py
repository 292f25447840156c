"""A snapshotter that only knows how to prepare: it imports and initialises
fine, but does not satisfy the Snapshotter contract, so the daemon lists it
as an `error` row naming what it lacks, and nothing uses it."""

import os

from pycontainerd.core.registry import PluginType, Registration, hookimpl


class HalfASnapshotter:
    def __init__(self, root: str):
        self.root = root

    def prepare(self, key: str, parent: str = "", labels=None):
        os.makedirs(os.path.join(self.root, key))
        return []


async def init(ic):
    return HalfASnapshotter(ic.root)


@hookimpl
def pycontainerd_plugins():
    return [Registration(type=PluginType.SNAPSHOT, id="incomplete", init=init)]
