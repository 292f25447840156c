"""The diff service: containerd.services.diff.v1.Diff (services/diff).

`io.containerd.service.v1.diff-service` holds the differs named in its
config, in order of preference (`default = ["walking"]`, containerd's key
for it); Apply and Diff try them in that order and stop at the first that
does not answer "not implemented". `io.containerd.grpc.v1.diff` serves it.
The request's namespace and lease (gRPC metadata) go to the differ, so the
layer Diff writes is namespaced and held by the caller's lease like any
other content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from pycontainerd.api.services.diff.v1 import diff_pb2 as pb
from pycontainerd.api.services.diff.v1 import diff_pb2_grpc as pb_grpc
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.core.service import lease_of, namespace, service_pair
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.mount import mounts_from_pb
from pycontainerd.pkg.oci import descriptor

SERVICE_ID = "diff-service"


@dataclass
class Config:
    """[plugins."io.containerd.service.v1.diff-service"]."""

    # differs to try, in order of preference; the first that supports the
    # request (does not answer "not implemented") is used
    default: list[str] = field(default_factory=lambda: ["walking"])


class Local:
    def __init__(self, differs: list[Any]):
        self.differs = differs

    async def apply(self, ns: str, desc, mounts: list[Any], payloads: dict | None = None):
        err: BaseException | None = None
        for differ in self.differs:
            try:
                return await differ.apply(ns, desc, mounts, payloads)
            except errdefs.NotImplementedErr as e:
                err = e
        raise err or errdefs.NotImplementedErr("no differ configured")

    async def diff(self, ns: str, left: list[Any], right: list[Any], media_type: str = "", ref: str = "",
                   labels: dict[str, str] | None = None, lease: str = ""):
        err: BaseException | None = None
        for differ in self.differs:
            try:
                return await differ.compare(ns, left, right, media_type, ref, labels, lease)
            except errdefs.NotImplementedErr as e:
                err = e
        raise err or errdefs.NotImplementedErr("no differ configured")


class Service(pb_grpc.DiffServicer):
    def __init__(self, local: Local):
        self.local = local

    def register(self, server) -> None:
        pb_grpc.add_DiffServicer_to_server(self, server)

    async def Apply(self, request, context):
        applied = await self.local.apply(namespace(context), descriptor.from_pb(request.diff), mounts_from_pb(request.mounts),
                                         dict(request.payloads) or None)
        return pb.ApplyResponse(applied=descriptor.to_pb(applied))

    async def Diff(self, request, context):
        desc = await self.local.diff(namespace(context), mounts_from_pb(request.left), mounts_from_pb(request.right),
                                     request.media_type, request.ref, dict(request.labels) or None,
                                     lease_of(context))
        return pb.DiffResponse(diff=descriptor.to_pb(desc))


async def init_local(ic: InitContext) -> Local:
    differs = ic.get_all(PluginType.DIFF)
    ordered = []
    for name in ic.config.default:
        if name not in differs:
            raise RuntimeError(f"needed differ not loaded: {name}")
        ordered.append(differs[name])  # each passed the differ contract at load
    return Local(ordered)


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return service_pair(SERVICE_ID, "diff", init_local, Service, requires=(PluginType.DIFF,), config=Config)
