"""Proxy plugins: a remote service declared in `[proxy_plugins.<name>]`
stands in for a local plugin, as in containerd.

Each proxy type has a client factory (a table the built-in plugins provide:
plugins/builtins.py, as containerd's server holds one): `type = "snapshot"`
becomes `io.containerd.snapshotter.v1.<name>` whose instance is a
snapshotter client of the remote socket, `type = "content"` becomes
`io.containerd.content.v1.<name>` whose instance is a content store client.
So a proxy plugin satisfies its type's contract like a local one and every
consumer (the metadata layer, the services, GC) uses it unchanged. The
address is exported, so `plugins ls -d` shows where the plugin lives.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from .registry import Registration

# proxy type -> (plugin type, "module:function" making the client from
# (name, address)); imported only when such a proxy is configured
ClientFactories = Mapping[str, tuple[str, str]]


def _factory(path: str) -> Callable[[str, str], Any]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def registrations(proxies: dict[str, Any], factories: ClientFactories) -> list[Registration]:
    out = []
    for name, proxy in proxies.items():
        plugin_type, factory = factories[proxy.type]

        async def init(ic, name=name, proxy=proxy, factory=factory) -> Any:
            ic.meta.exports["address"] = proxy.address
            # clients connect on first use, so a remote that starts later is fine
            return _factory(factory)(name, proxy.address)

        out.append(Registration(type=plugin_type, id=name, init=init))
    return out
