"""The containers service: containerd.services.containers.v1.Containers.

`io.containerd.service.v1.containers-service` is the metadata plugin's
container store (plugins/metadata/containers.py) plus what containerd's
service adds: it publishes `/containers/create`, `/containers/update` and
`/containers/delete` after each change, and refuses an update without an
id before the store sees it. `io.containerd.grpc.v1.containers` serves it,
List in one answer and ListStream one container per message.

One difference from containerd 1.6, on purpose: Delete refuses while the
runtime holds a task for the container (FAILED_PRECONDITION, the wording
containerd's client uses for the same check). containerd's server drops the
record and leaves the task running with no container to reach it through:
no API call can kill or delete it until a restart.
"""

from __future__ import annotations

from typing import Iterable

from google.protobuf import empty_pb2

from pycontainerd.api.events import container_pb2 as events_pb
from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as pb_grpc
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.core.service import namespace, service_pair
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.containerstore import Container, container_from_pb, container_to_pb

SERVICE_ID = "containers-service"


class IDRequired(errdefs.InvalidArgument):
    """containerd's service refuses an update without an id with a bare
    status message (no sentinel appended)."""

    sentinel = ""

    def __init__(self) -> None:
        super().__init__("Container.ID required")


class TaskExists(errdefs.FailedPrecondition):
    def __init__(self, cid: str) -> None:
        super().__init__(f"cannot delete running task {errdefs.cut(cid)}")


class Local:
    """The container store, with events. `runtime` (the runtime v2 plugin,
    None when there is none) is asked whether a container still has a task."""

    def __init__(self, store, events, runtime=None):
        self.store = store
        self.events = events
        self.runtime = runtime

    async def get(self, ns: str, cid: str) -> Container:
        return await self.store.get(ns, cid)

    async def list(self, ns: str, *filter_strings: str) -> list[Container]:
        return await self.store.list(ns, *filter_strings)

    async def create(self, ns: str, c: Container) -> Container:
        created = await self.store.create(ns, c)
        event = events_pb.ContainerCreate(id=created.id, image=created.image)
        event.runtime.name = created.runtime.name
        if created.runtime.options is not None:
            event.runtime.options.CopyFrom(created.runtime.options)
        self.events.publish(ns, "/containers/create", event)
        return created

    async def update(self, ns: str, c: Container, paths: list[str]) -> Container:
        if not c.id:
            raise IDRequired()
        updated = await self.store.update(ns, c, paths)
        self.events.publish(ns, "/containers/update", events_pb.ContainerUpdate(
            id=updated.id, image=updated.image, labels=updated.labels, snapshot_key=updated.snapshot_key))
        return updated

    async def delete(self, ns: str, cid: str) -> None:
        if self.runtime is not None:
            try:
                await self.runtime.get(ns, cid)
            except errdefs.NotFound:
                pass
            else:
                raise TaskExists(cid)
        await self.store.delete(ns, cid)
        self.events.publish(ns, "/containers/delete", events_pb.ContainerDelete(id=cid))


class Service(pb_grpc.ContainersServicer):
    def __init__(self, local: Local):
        self.local = local

    def register(self, server) -> None:
        pb_grpc.add_ContainersServicer_to_server(self, server)

    async def Get(self, request, context):
        c = await self.local.get(namespace(context), request.id)
        return pb.GetContainerResponse(container=container_to_pb(c))

    async def List(self, request, context):
        found = await self.local.list(namespace(context), *request.filters)
        return pb.ListContainersResponse(containers=[container_to_pb(c) for c in found])

    async def ListStream(self, request, context):
        for c in await self.local.list(namespace(context), *request.filters):
            yield pb.ListContainerMessage(container=container_to_pb(c))

    async def Create(self, request, context):
        created = await self.local.create(namespace(context), container_from_pb(request.container))
        return pb.CreateContainerResponse(container=container_to_pb(created))

    async def Update(self, request, context):
        c = container_from_pb(request.container)
        if not c.id:  # containerd checks this before the namespace
            raise IDRequired()
        updated = await self.local.update(namespace(context), c, list(request.update_mask.paths))
        return pb.UpdateContainerResponse(container=container_to_pb(updated))

    async def Delete(self, request, context):
        await self.local.delete(namespace(context), request.id)
        return empty_pb2.Empty()


async def init_local(ic: InitContext) -> Local:
    try:
        runtime = ic.get(PluginType.RUNTIME_V2, "task")
    except errdefs.ContainerdError:  # none loaded (skipped without root, disabled): no tasks to protect
        runtime = None
    return Local(ic.get(PluginType.METADATA).containers, ic.get(PluginType.EVENT), runtime)


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return service_pair(SERVICE_ID, "containers", init_local, Service,
                        requires=(PluginType.EVENT, PluginType.METADATA, PluginType.RUNTIME_V2))
