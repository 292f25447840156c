"""io.containerd.grpc.v1.version: containerd.services.version.v1.Version."""

from __future__ import annotations

from typing import Iterable

from pycontainerd.api.services.version.v1 import version_pb2 as pb
from pycontainerd.api.services.version.v1 import version_pb2_grpc as pb_grpc
from pycontainerd.core import version
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl


class Service(pb_grpc.VersionServicer):
    def __init__(self, revision: str):
        self.response = pb.VersionResponse(version=version.VERSION, revision=revision)

    def register(self, server) -> None:
        pb_grpc.add_VersionServicer_to_server(self, server)

    async def Version(self, request, context) -> pb.VersionResponse:
        return self.response


async def init(ic: InitContext) -> Service:
    return Service(version.revision())


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.GRPC, id="version", init=init)]
