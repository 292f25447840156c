"""Proxy plugins: a remote gRPC service declared in `[proxy_plugins.<name>]`
stands in for a local plugin, as in containerd.

`type = "snapshot"` becomes `io.containerd.snapshotter.v1.<name>`,
`type = "content"` becomes `io.containerd.content.v1.<name>`; the address is
exported so `plugins ls -d` shows where it lives. The instance holds a
lazily-connecting channel to the remote socket; the services that use
snapshotters and content stores wrap it in their client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .registry import PluginType, Registration

PROXY_TYPES = {"snapshot": PluginType.SNAPSHOT, "content": PluginType.CONTENT}


@dataclass
class ProxyPlugin:
    """A [proxy_plugins] entry with its open channel to the serving process."""

    name: str
    type: str
    address: str
    channel: Any

    async def close(self) -> None:
        await self.channel.close()


def registrations(proxies: dict[str, Any]) -> list[Registration]:
    out = []
    for name, proxy in proxies.items():
        plugin_type = PROXY_TYPES[proxy.type]

        async def init(ic, name=name, proxy=proxy, plugin_type=plugin_type) -> ProxyPlugin:
            import grpc  # a channel connects on first use, so a remote that starts later is fine

            ic.meta.exports["address"] = proxy.address
            target = proxy.address if proxy.address.startswith("unix:") else "unix:" + proxy.address
            return ProxyPlugin(name, plugin_type, proxy.address, grpc.aio.insecure_channel(target))

        out.append(Registration(type=plugin_type, id=name, init=init))
    return out
