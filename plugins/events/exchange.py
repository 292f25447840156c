"""io.containerd.event.v1.exchange: the daemon's events exchange as a plugin,
so services that publish can require it like any other dependency."""

from __future__ import annotations

from typing import Iterable

from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl


async def init(ic: InitContext):
    return ic.events


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.EVENT, id="exchange", init=init)]
