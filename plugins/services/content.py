"""The content service: containerd.services.content.v1.Content.

`io.containerd.service.v1.content-service` wraps the namespaced content
store the metadata plugin hands out (plugins/metadata/content.py, over the
local store or a proxy one) and also publishes `/content/delete`; other
plugins (GC, the differ, images next) share the same store through the
metadata plugin. `io.containerd.grpc.v1.content` serves it
over gRPC the way containerd's contentserver does, including the Write
stream's STAT / WRITE / COMMIT protocol: the first message names the ref
(and maybe the expected size and digest), every answer carries the current
offset, a write must happen at the current offset (offset 0 on a non-empty
ingest restarts it), and COMMIT verifies size and digest. A stream that
ends without COMMIT leaves the ingest in place, resumable.
"""

from __future__ import annotations

from typing import Iterable

import grpc
from google.protobuf import empty_pb2

from pycontainerd.api.events import content_pb2 as events_pb
from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.core.service import lease_of, namespace, service_pair
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.content import Info, Status
from pycontainerd.pkg.digest import digest_error, validate_digest
from pycontainerd.pkg.timestamps import to_pb
from pycontainerd.plugins.metadata.content import ContentStore

SERVICE_ID = "content-service"
LIST_BLOCK = 100  # infos per List message, as containerd sends them
READ_CHUNK = 1 << 20


def info_to_pb(info: Info) -> pb.Info:
    return pb.Info(digest=info.digest, size=info.size, created_at=to_pb(info.created_at),
                   updated_at=to_pb(info.updated_at), labels=info.labels)


def status_to_pb(st: Status) -> pb.Status:
    return pb.Status(started_at=to_pb(st.started_at), updated_at=to_pb(st.updated_at), ref=st.ref,
                     offset=st.offset, total=st.total, expected=st.expected)


_WRITE_ACTIONS = frozenset(pb.WriteAction.values())


def check_write_request(req: pb.WriteContentRequest, first: bool) -> None:
    """What containerd's Write would act on blindly: an action it does not
    know (it answers as if nothing happened) and a negative offset (it
    truncates to it) are refused here. A malformed expected digest on the
    first message is refused at once; on a later one it is what containerd
    makes of it: a commit that cannot match (FailedPrecondition)."""
    if req.action not in _WRITE_ACTIONS:
        raise errdefs.InvalidArgument(f"unknown write action {req.action}")
    if req.offset < 0:
        raise errdefs.InvalidArgument(f"write offset {req.offset} must not be negative")
    if first and req.expected:
        validate_digest(req.expected)


class Local:
    """The namespaced store plus the events containerd's service publishes."""

    def __init__(self, store: ContentStore, events):
        self.store = store
        self.events = events

    async def delete(self, ns: str, dgst: str, lease: str = "") -> None:
        await self.store.delete(ns, dgst, lease)
        self.events.publish(ns, "/content/delete", events_pb.ContentDelete(digest=dgst))


class Service(pb_grpc.ContentServicer):
    """Serves a store with the namespaced interface of ContentStore. The
    namespace comes from the request (`namespace_of`); a raw store served
    standalone (plugins/content/serve.py) passes one that reads none."""

    def __init__(self, local, namespace_of=namespace):
        self.local = local
        self.store = local.store
        self.namespace_of = namespace_of

    def register(self, server) -> None:
        pb_grpc.add_ContentServicer_to_server(self, server)

    async def Info(self, request, context):
        if digest_error(request.digest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{errdefs.quote(request.digest)} failed validation")
        info = await self.store.info(self.namespace_of(context), request.digest)
        return pb.InfoResponse(info=info_to_pb(info))

    async def Update(self, request, context):
        if digest_error(request.info.digest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{errdefs.quote(request.info.digest)} failed validation")
        wanted = Info(request.info.digest, request.info.size, labels=dict(request.info.labels))
        info = await self.store.update(self.namespace_of(context), wanted, list(request.update_mask.paths))
        return pb.UpdateResponse(info=info_to_pb(info))

    async def List(self, request, context):
        infos = await self.store.list(self.namespace_of(context), *request.filters)
        for i in range(0, len(infos), LIST_BLOCK):
            yield pb.ListContentResponse(info=[info_to_pb(x) for x in infos[i:i + LIST_BLOCK]])

    async def Delete(self, request, context):
        err = digest_error(request.digest)
        if err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err)
        await self.local.delete(self.namespace_of(context), request.digest, lease_of(context))
        return empty_pb2.Empty()

    async def Read(self, request, context):
        err = digest_error(request.digest)
        if err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{errdefs.cut(request.digest)}: {err}")
        ns = self.namespace_of(context)
        info = await self.store.info(ns, request.digest)
        ra = await self.store.reader_at(ns, request.digest)
        try:
            offset = max(request.offset, 0)
            if offset > info.size:
                await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"read past object length {info.size} bytes")
            size = request.size
            if size <= 0 or offset + size > info.size:
                size = info.size - offset
            sent = 0  # answers count from the start of this read, as containerd's do
            while sent < size:
                data = await ra.read_at(offset + sent, min(READ_CHUNK, size - sent))
                if not data:
                    break
                yield pb.ReadContentResponse(offset=sent, data=data)
                sent += len(data)
        finally:
            ra.close()

    async def Status(self, request, context):
        try:
            st = await self.store.status(self.namespace_of(context), request.ref)
        except errdefs.ContainerdError as exc:
            raise type(exc)(f'could not get status for ref "{errdefs.cut(request.ref)}": {exc.message}') from None
        return pb.StatusResponse(status=status_to_pb(st))

    async def ListStatuses(self, request, context):
        statuses = await self.store.list_statuses(self.namespace_of(context), *request.filters)
        return pb.ListStatusesResponse(statuses=[status_to_pb(s) for s in statuses])

    async def Abort(self, request, context):
        await self.store.abort(self.namespace_of(context), request.ref, lease_of(context))
        return empty_pb2.Empty()

    async def Write(self, request_iterator, context):
        ns = self.namespace_of(context)
        lease = lease_of(context)
        requests = request_iterator.__aiter__()
        try:
            req = await requests.__anext__()
        except StopAsyncIteration:
            return
        ref = req.ref
        if not ref:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must have a reference")
        check_write_request(req, first=True)
        total, expected = req.total, req.expected
        wr = await self.store.writer(ns, ref, total, expected, lease)
        # like containerd's, one answer message whose fields carry over
        msg = pb.WriteContentResponse()
        try:
            while True:
                msg.action = req.action
                ws = wr.status()
                msg.offset = ws.offset
                if req.expected:
                    expected = req.expected
                    try:
                        if digest_error(req.expected):
                            raise errdefs.NotFound(req.expected)  # no blob has such a name
                        await self.store.info(ns, req.expected)
                        found = True
                    except errdefs.NotFound:
                        found = False
                    if found:
                        await wr.close()
                        try:
                            await self.store.abort(ns, ref, lease)
                        except errdefs.ContainerdError:
                            pass
                        await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                            f"blob with expected digest {req.expected} exists")
                if req.total > 0:
                    total = req.total
                if req.action == pb.STAT:
                    msg.digest = wr.digest()
                    msg.started_at.CopyFrom(to_pb(ws.started_at))
                    msg.updated_at.CopyFrom(to_pb(ws.updated_at))
                    msg.total = total
                elif req.action in (pb.WRITE, pb.COMMIT):
                    if req.offset > 0 and req.offset != ws.offset:
                        await context.abort(grpc.StatusCode.OUT_OF_RANGE,
                                            f"write @{req.offset} must occur at current offset {ws.offset}")
                    if req.offset == 0 and ws.offset > 0:
                        await wr.truncate(0)
                        msg.offset = 0
                    data = req.data  # each access copies the field out of the message: once per request
                    if data:
                        n = await wr.write(data)
                        if n != len(data):
                            await context.abort(grpc.StatusCode.DATA_LOSS, f"wrote {n} of {len(data)} bytes")
                        msg.offset += n
                    if req.action == pb.COMMIT:
                        await wr.commit(total, expected, dict(req.labels) if req.labels else None)
                    msg.digest = wr.digest()
                answer = pb.WriteContentResponse()
                answer.CopyFrom(msg)
                yield answer
                if req.action == pb.COMMIT:
                    return
                try:
                    req = await requests.__anext__()
                except StopAsyncIteration:
                    return
                check_write_request(req, first=False)
        finally:
            await wr.close()


async def init_local(ic: InitContext) -> Local:
    store = ic.get(PluginType.METADATA).content_store
    if store is None:
        raise errdefs.NotFound("no content store loaded")
    return Local(store, ic.get(PluginType.EVENT))


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return service_pair(SERVICE_ID, "content", init_local, Service, requires=(PluginType.EVENT, PluginType.METADATA))
