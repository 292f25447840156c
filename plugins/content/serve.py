"""`pycontainerd content serve`: a raw local content store, standalone,
over containerd.services.content.v1.Content on a UNIX socket.

This is what `[proxy_plugins.<name>] type = "content"` talks to, in
containerd or in pycontainerd:

    pycontainerd content serve --address /run/pycontent.sock --root /var/lib/pycontent

Like containerd's contentserver over content/local, the store has no
namespaces and no metadata: the daemon using it keeps those, and names its
ingests with refs that are already unique per namespace. The namespace
header and leases are ignored. The store has no label store either, so
Update is refused (containerd's wording) and blobs carry no labels.
"""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
from google.protobuf import empty_pb2

from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.core import errdefs
from pycontainerd.core.service import ErrdefsInterceptor

from .local import Info, LocalStore, Status, digest_error

LIST_BLOCK = 100  # infos per List message, as containerd sends them
READ_CHUNK = 1 << 20


def _ts(ns: int):
    from google.protobuf import timestamp_pb2

    return timestamp_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def info_to_pb(info: Info) -> pb.Info:
    return pb.Info(digest=info.digest, size=info.size, created_at=_ts(info.created_at),
                   updated_at=_ts(info.updated_at), labels=info.labels)


def status_to_pb(st: Status) -> pb.Status:
    return pb.Status(started_at=_ts(st.started_at), updated_at=_ts(st.updated_at), ref=st.ref,
                     offset=st.offset, total=st.total, expected=st.expected)


class RawContentService(pb_grpc.ContentServicer):
    """containerd's contentserver over one local store."""

    def __init__(self, store: LocalStore):
        self.store = store

    async def Info(self, request, context):
        if digest_error(request.digest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'"{request.digest}" failed validation')
        return pb.InfoResponse(info=info_to_pb(await self.store.info(request.digest)))

    async def Update(self, request, context):
        if digest_error(request.info.digest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'"{request.info.digest}" failed validation')
        raise errdefs.FailedPrecondition("update not supported on immutable content store")

    async def List(self, request, context):
        infos = await self.store.walk(*request.filters)
        for i in range(0, len(infos), LIST_BLOCK):
            yield pb.ListContentResponse(info=[info_to_pb(x) for x in infos[i:i + LIST_BLOCK]])

    async def Delete(self, request, context):
        err = digest_error(request.digest)
        if err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err)
        await self.store.delete(request.digest)
        return empty_pb2.Empty()

    async def Read(self, request, context):
        err = digest_error(request.digest)
        if err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{request.digest}: {err}")
        info = await self.store.info(request.digest)
        ra = await self.store.reader_at(request.digest)
        try:
            offset = max(request.offset, 0)
            if offset > info.size:
                await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"read past object length {info.size} bytes")
            size = request.size
            if size <= 0 or offset + size > info.size:
                size = info.size - offset
            sent = 0
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
            st = await self.store.status(request.ref)
        except errdefs.ContainerdError as exc:
            raise type(exc)(f'could not get status for ref "{request.ref}": {exc.message}') from None
        return pb.StatusResponse(status=status_to_pb(st))

    async def ListStatuses(self, request, context):
        statuses = await self.store.list_statuses(*request.filters)
        return pb.ListStatusesResponse(statuses=[status_to_pb(s) for s in statuses])

    async def Abort(self, request, context):
        await self.store.abort(request.ref)
        return empty_pb2.Empty()

    async def Write(self, request_iterator, context):
        """The STAT / WRITE / COMMIT protocol: the first message names the
        ref and takes its lock until the stream ends; every answer carries
        the current offset; a write must come at the current offset, and one
        at offset 0 on a non-empty ingest restarts it."""
        requests = request_iterator.__aiter__()
        try:
            req = await requests.__anext__()
        except StopAsyncIteration:
            return
        ref = req.ref
        if not ref:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must have a reference")
        total, expected = req.total, req.expected
        if expected:
            err = digest_error(expected)
            if err:
                raise errdefs.InvalidArgument(f"cannot calculate blob path from invalid digest: {err}")
        wr = await self.store.writer(ref, total, expected)
        msg = pb.WriteContentResponse()  # fields carry over between answers, as containerd's do
        try:
            while True:
                msg.action = req.action
                ws = wr.status()
                msg.offset = ws.offset
                if req.expected:
                    expected = req.expected
                    if await asyncio.to_thread(self.store.exists, req.expected):
                        await wr.close()
                        try:
                            await self.store.abort(ref)
                        except errdefs.ContainerdError:
                            pass
                        await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                            f"blob with expected digest {req.expected} exists")
                if req.total > 0:
                    total = req.total
                if req.action == pb.STAT:
                    msg.digest = wr.digest()
                    msg.started_at.CopyFrom(_ts(ws.started_at))
                    msg.updated_at.CopyFrom(_ts(ws.updated_at))
                    msg.total = total
                elif req.action in (pb.WRITE, pb.COMMIT):
                    if req.offset > 0 and req.offset != ws.offset:
                        await context.abort(grpc.StatusCode.OUT_OF_RANGE,
                                            f"write @{req.offset} must occur at current offset {ws.offset}")
                    if req.offset == 0 and ws.offset > 0:
                        await wr.truncate(0)
                        msg.offset = 0
                    if req.data:
                        n = await wr.write(req.data)
                        if n != len(req.data):
                            await context.abort(grpc.StatusCode.DATA_LOSS, f"wrote {n} of {len(req.data)} bytes")
                        msg.offset += n
                    if req.action == pb.COMMIT:
                        # a raw store has no labels to keep; the commit's are dropped
                        await wr.commit(total, expected)
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
        finally:
            await wr.close()


async def serve(address: str, root: str) -> None:
    store = await asyncio.to_thread(LocalStore, root)
    server = grpc.aio.server(interceptors=[ErrdefsInterceptor()])
    pb_grpc.add_ContentServicer_to_server(RawContentService(store), server)
    os.makedirs(os.path.dirname(os.path.abspath(address)), exist_ok=True)
    if os.path.exists(address):
        os.unlink(address)
    server.add_insecure_port("unix:" + address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"serving content store on {address} (root {root})", flush=True)
    try:
        await stop.wait()
    finally:
        # open writers end with their streams; their ingests stay resumable
        await server.stop(1)
        try:
            os.unlink(address)
        except FileNotFoundError:
            pass


def main(args) -> int:
    """Entry for `pycontainerd content serve` (args: serve_address, serve_root)."""
    import sys

    try:
        asyncio.run(serve(args.serve_address, args.serve_root))
    except OSError as exc:
        print(f"pycontainerd: {exc}", file=sys.stderr)
        return 1
    return 0
