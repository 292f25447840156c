"""io.containerd.grpc.v1.healthcheck: the standard grpc.health.v1 service
(from grpcio-health-checking): SERVING once the daemon has loaded its
plugins; when the plugin closes, watchers are told NOT_SERVING."""

from __future__ import annotations

from typing import Iterable

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl


class Service:
    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()

    def register(self, server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await self.servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        await self.servicer.enter_graceful_shutdown()


async def init(ic: InitContext) -> Service:
    svc = Service()
    await svc.start()
    return svc


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.GRPC, id="healthcheck", init=init)]
