"""The namespaces service over the metadata store.

`io.containerd.service.v1.namespaces-service` does the work and publishes
`/namespaces/create|update|delete`; `io.containerd.grpc.v1.namespaces`
serves it as containerd.services.namespaces.v1.Namespaces. Update follows
containerd: with a field mask only `labels.<key>` paths are allowed (an
empty value removes the label); without one, the labels are replaced.
"""

from __future__ import annotations

from typing import Iterable

from google.protobuf import empty_pb2

from pycontainerd.api.events import namespace_pb2 as events_pb
from pycontainerd.api.services.namespaces.v1 import namespace_pb2 as pb
from pycontainerd.api.services.namespaces.v1 import namespace_pb2_grpc as pb_grpc
from pycontainerd.core import filters
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.core.service import NAMESPACE_HEADER, service_pair
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.labels import check_label_limits

SERVICE_ID = "namespaces-service"


def _request_namespace(context, fallback: str) -> str:
    """The namespace the event is published in: the caller's, as with
    containerd, or the namespace itself when the caller sent none."""
    for key, value in context.invocation_metadata() or ():
        if key == NAMESPACE_HEADER and value:
            return value
    return fallback


class Local:
    def __init__(self, db, events):
        self.store = db.namespaces
        self.events = events

    async def get(self, name: str) -> pb.Namespace:
        return pb.Namespace(name=name, labels=await self.store.labels(name))

    async def list(self, filter_string: str = "") -> list[pb.Namespace]:
        flt = await filters.parse_all_off_loop(*([filter_string] if filter_string else []))
        rows = await self.store.list()

        def select() -> list[pb.Namespace]:  # off the loop: many rows, any filter
            return [pb.Namespace(name=name, labels=labels) for name, labels in rows
                    if flt.match(filters.adapt_mapping({"name": name, "labels": labels}))]

        return await filters.matching(flt, select)

    async def create(self, ns: pb.Namespace, event_ns: str) -> pb.Namespace:
        await self.store.create(ns.name, dict(ns.labels))
        self.events.publish(event_ns or ns.name, "/namespaces/create", events_pb.NamespaceCreate(name=ns.name, labels=ns.labels))
        return ns

    async def update(self, ns: pb.Namespace, paths: list[str], event_ns: str) -> pb.Namespace:
        check_label_limits(ns.labels, paths)  # before walking them
        if paths:
            changes = {}
            for path in paths:
                if not path.startswith("labels."):
                    raise errdefs.InvalidArgument(f"cannot update {errdefs.quote(path)} field")
                key = path[len("labels."):]
                changes[key] = ns.labels.get(key, "")
            labels = await self.store.set_labels(ns.name, changes)
        else:
            labels = await self.store.set_labels(ns.name, dict(ns.labels), replace=True)
        self.events.publish(event_ns or ns.name, "/namespaces/update", events_pb.NamespaceUpdate(name=ns.name, labels=ns.labels))
        return pb.Namespace(name=ns.name, labels=labels)

    async def delete(self, name: str, event_ns: str) -> None:
        await self.store.delete(name)
        self.events.publish(event_ns or name, "/namespaces/delete", events_pb.NamespaceDelete(name=name))


class Service(pb_grpc.NamespacesServicer):
    def __init__(self, local: Local):
        self.local = local

    def register(self, server) -> None:
        pb_grpc.add_NamespacesServicer_to_server(self, server)

    async def Get(self, request, context):
        return pb.GetNamespaceResponse(namespace=await self.local.get(request.name))

    async def List(self, request, context):
        return pb.ListNamespacesResponse(namespaces=await self.local.list(request.filter))

    async def Create(self, request, context):
        ns = await self.local.create(request.namespace, _request_namespace(context, request.namespace.name))
        return pb.CreateNamespaceResponse(namespace=ns)

    async def Update(self, request, context):
        ns = await self.local.update(
            request.namespace, list(request.update_mask.paths), _request_namespace(context, request.namespace.name)
        )
        return pb.UpdateNamespaceResponse(namespace=ns)

    async def Delete(self, request, context):
        await self.local.delete(request.name, _request_namespace(context, request.name))
        return empty_pb2.Empty()


async def init_local(ic: InitContext) -> Local:
    return Local(ic.get(PluginType.METADATA), ic.get(PluginType.EVENT))


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return service_pair(SERVICE_ID, "namespaces", init_local, Service,
                        requires=(PluginType.EVENT, PluginType.METADATA))
