"""The leases service over the metadata store.

`io.containerd.service.v1.leases-service` is containerd's lease manager
plus one thing: a delete with `sync` runs a garbage collection and returns
after it, so what the lease held is gone from disk when the call returns.
`io.containerd.grpc.v1.leases` serves it as containerd.services.leases.v1.
Leases, generating the id (containerd's random form) when the request
leaves it empty. containerd publishes no lease events, and neither do we.
"""

from __future__ import annotations

from typing import Iterable

from google.protobuf import empty_pb2

from pycontainerd.api.services.leases.v1 import leases_pb2 as pb
from pycontainerd.api.services.leases.v1 import leases_pb2_grpc as pb_grpc
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.core.service import namespace, service_pair
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.timestamps import to_pb
from pycontainerd.pkg.leases import Lease, Resource, random_id
from pycontainerd.plugins.metadata.leases import LeaseManager

SERVICE_ID = "leases-service"


class Local:
    """The lease manager with a synchronous delete that waits for the GC."""

    def __init__(self, manager: LeaseManager, gc):
        self.manager = manager
        self.gc = gc

    async def create(self, ns: str, lease_id: str, labels: dict[str, str]) -> Lease:
        return await self.manager.create(ns, lease_id, labels)

    async def delete(self, ns: str, lease_id: str, sync: bool = False) -> None:
        await self.manager.delete(ns, lease_id)
        if sync:
            await self.gc.schedule_and_wait()

    async def list(self, ns: str, *filter_strings: str) -> list[Lease]:
        return await self.manager.list(ns, *filter_strings)

    async def add_resource(self, ns: str, lease_id: str, resource: Resource) -> None:
        await self.manager.add_resource(ns, lease_id, resource)

    async def delete_resource(self, ns: str, lease_id: str, resource: Resource) -> None:
        await self.manager.delete_resource(ns, lease_id, resource)

    async def list_resources(self, ns: str, lease_id: str) -> list[Resource]:
        return await self.manager.list_resources(ns, lease_id)


def lease_to_pb(lease: Lease) -> pb.Lease:
    return pb.Lease(id=lease.id, created_at=to_pb(lease.created_at), labels=lease.labels)


MAX_LEASE_ID = 255  # bytes


def validate_lease_id(lease_id: str) -> None:
    """A caller's lease id is bounded and printable. It is not held to the
    identifier rule: containerd's own clients (leases.WithRandomID, used by
    ctr) make ids such as `123-ab_-` that the rule refuses, and containerd
    1.6 stores any string."""
    size = len(lease_id.encode("utf-8", "surrogatepass"))
    if size > MAX_LEASE_ID or any(ord(c) < 0x20 or ord(c) == 0x7F for c in lease_id):
        raise errdefs.InvalidArgument(
            f"lease id {errdefs.quote(lease_id)} must be at most {MAX_LEASE_ID} bytes with no control characters"
        )


class Service(pb_grpc.LeasesServicer):
    def __init__(self, local: Local):
        self.local = local

    def register(self, server) -> None:
        pb_grpc.add_LeasesServicer_to_server(self, server)

    async def Create(self, request, context):
        ns = namespace(context)
        if request.id:
            validate_lease_id(request.id)
        lease = await self.local.create(ns, request.id or random_id(), dict(request.labels))
        return pb.CreateResponse(lease=lease_to_pb(lease))

    async def Delete(self, request, context):
        await self.local.delete(namespace(context), request.id, request.sync)
        return empty_pb2.Empty()

    async def List(self, request, context):
        leases = await self.local.list(namespace(context), *request.filters)
        return pb.ListResponse(leases=[lease_to_pb(lease) for lease in leases])

    async def AddResource(self, request, context):
        r = Resource(id=request.resource.id, type=request.resource.type)
        await self.local.add_resource(namespace(context), request.id, r)
        return empty_pb2.Empty()

    async def DeleteResource(self, request, context):
        r = Resource(id=request.resource.id, type=request.resource.type)
        await self.local.delete_resource(namespace(context), request.id, r)
        return empty_pb2.Empty()

    async def ListResources(self, request, context):
        resources = await self.local.list_resources(namespace(context), request.id)
        return pb.ListResourcesResponse(resources=[pb.Resource(id=r.id, type=r.type) for r in resources])


async def init_local(ic: InitContext) -> Local:
    return Local(LeaseManager(ic.get(PluginType.METADATA)), ic.get(PluginType.GC))


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return service_pair(SERVICE_ID, "leases", init_local, Service, requires=(PluginType.METADATA, PluginType.GC))
