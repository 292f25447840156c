"""A remote content store (`[proxy_plugins.<name>] type = "content"`) seen
through the content store contract (pkg/content.py) the local store
offers, so the metadata layer, the content service, the differ and GC use
it unchanged. `new_client` is the proxy plugin's instance (the factory
plugins/builtins.py names for the core).

This is containerd's content/proxy: the remote is a raw store served over
containerd.services.content.v1.Content (containerd's contentserver over a
local store, or `pycontainerd content serve`). It knows nothing of our
namespaces: the metadata layer keeps those, and hands this store its
namespaced backend refs (`<namespace>/<ref>`). The calls it makes are the
ones containerd's proxy makes: Info, List (walk), Delete, Read (a reader
first asks Info for the size), Status, ListStatuses, Update, Abort, and a
Write stream that opens with a STAT carrying the ref and expected total,
then WRITE at the tracked offset, and COMMIT with the total and digest.

The daemon talks to the remote on its event loop (the client's grpc.aio
channel). Callers on worker threads (the differ, copying or unpacking)
use `read_at_sync` and `write_sync`, which run the same coroutines on the
loop and wait for them.

Remote errors come back as the errdefs class their gRPC code says.

Garbage collection works over it as containerd's does over a proxy store:
the collector walks the remote (List) and deletes every blob no namespace
of this daemon records, and aborts the ingests none knows, found with
ListStatuses (the API has no cheaper ref walk; containerd's GC falls back
to the same). The store itself cannot be locked over the API: the
exclusive lock the collector holds is the metadata layer's own (as
containerd holds its metadata content store's lock, not the backend's),
which keeps this daemon's commits out of the sweep. Like containerd, this
assumes the remote store belongs to one daemon; a second daemon storing
into the same remote would see its blobs collected.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, TypeVar

import grpc
from google.protobuf import field_mask_pb2

from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.pkg import errdefs, errgrpc
from pycontainerd.pkg.content import Info, Status, info_from_pb, status_from_pb
from pycontainerd.pkg.timestamps import from_pb, to_pb

T = TypeVar("T")

READ_AHEAD = 1 << 20  # a reader asks for at least this much per Read stream
SYNC_TIMEOUT = 300.0  # a blocking call that waits longer than this is stuck


def _error(exc: grpc.RpcError) -> errdefs.ContainerdError:
    return errgrpc.from_grpc(exc.code(), exc.details())


class _Loop:
    """Runs coroutines on the loop the client was made on, for callers on
    other threads."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: int | None = None

    def bind(self) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self.thread = threading.get_ident()

    def run(self, coro: Awaitable[T]) -> T:
        if self.loop is None or threading.get_ident() == self.thread:
            coro.close()  # type: ignore[attr-defined]
            raise RuntimeError("a blocking proxy content call must come from a worker thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(SYNC_TIMEOUT)  # type: ignore[arg-type]

    def call_soon(self, fn, *args) -> None:
        if self.loop is None or threading.get_ident() == self.thread:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)


class ProxyContentStore:
    """containerd's proxy content store over one channel."""

    remote = True

    def __init__(self, name: str, address: str, channel: Any, owns_channel: bool = False):
        self.name = name
        self.address = address
        self.channel = channel
        self._owns_channel = owns_channel
        self.stub = pb_grpc.ContentStub(channel)
        self._loop = _Loop()
        try:
            self._loop.bind()
        except RuntimeError:  # made off the loop: bound on the first call
            pass

    # -- blobs ----------------------------------------------------------------------

    async def info(self, dgst: str) -> Info:
        self._loop.bind()
        try:
            r = await self.stub.Info(pb.InfoRequest(digest=dgst))
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return info_from_pb(r.info)

    async def update(self, info: Info, paths: list[str] | tuple[str, ...] = ()) -> Info:
        """Labels on the remote itself; the metadata layer keeps its own and
        never calls this. A raw local store refuses it, as containerd's does."""
        self._loop.bind()
        req = pb.UpdateRequest(
            info=pb.Info(digest=info.digest, size=info.size, created_at=to_pb(info.created_at),
                         updated_at=to_pb(info.updated_at), labels=info.labels),
            update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
        try:
            r = await self.stub.Update(req)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return info_from_pb(r.info)

    async def walk(self, *filter_strings: str) -> list[Info]:
        self._loop.bind()
        out = []
        try:
            async for r in self.stub.List(pb.ListContentRequest(filters=list(filter_strings))):
                out.extend(info_from_pb(i) for i in r.info)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return out

    async def delete(self, dgst: str) -> None:
        self._loop.bind()
        try:
            await self.stub.Delete(pb.DeleteContentRequest(digest=dgst))
        except grpc.RpcError as exc:
            raise _error(exc) from None

    async def reader_at(self, dgst: str) -> "ProxyReaderAt":
        # as containerd's proxy: the size comes from Info, so a missing blob
        # fails here rather than at the first read
        info = await self.info(dgst)
        return ProxyReaderAt(self, dgst, info.size)

    # -- ingests --------------------------------------------------------------------

    async def status(self, ref: str) -> Status:
        self._loop.bind()
        try:
            r = await self.stub.Status(pb.StatusRequest(ref=ref))
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return status_from_pb(r.status)

    async def list_statuses(self, *filter_strings: str) -> list[Status]:
        self._loop.bind()
        try:
            r = await self.stub.ListStatuses(pb.ListStatusesRequest(filters=list(filter_strings)))
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return [status_from_pb(s) for s in r.statuses]

    async def walk_status_refs(self) -> list[str]:
        """Every ingest's ref, for GC. The API has no cheaper call for it, so
        this lists the statuses: containerd's GC falls back to the same for
        a store that cannot walk its refs."""
        return [s.ref for s in await self.list_statuses()]

    async def abort(self, ref: str) -> None:
        self._loop.bind()
        try:
            await self.stub.Abort(pb.AbortRequest(ref=ref))
        except grpc.RpcError as exc:
            raise _error(exc) from None

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> "ProxyWriter":
        """Open a Write stream and STAT it: the remote takes the ref's lock
        for as long as the stream lives and answers with where the ingest
        stands (a resumed one has an offset)."""
        if not ref:
            raise errdefs.InvalidArgument("ref must not be empty")
        self._loop.bind()
        call = self.stub.Write()
        w = ProxyWriter(self, ref, call)
        try:
            r = await w._send(pb.WriteContentRequest(action=pb.STAT, ref=ref, total=total, expected=expected))
        except BaseException:
            await w.close()
            raise
        w.offset = r.offset
        w.total = r.total
        w.started_at = from_pb(r.started_at)
        w.updated_at = from_pb(r.updated_at)
        return w

    async def close(self) -> None:
        """Close the channel, when this client made it."""
        if self._owns_channel:
            await self.channel.close()


class ProxyReaderAt:
    """Positioned reads over Read streams. Reads that follow one another
    (a whole-blob read, an unpack) share one stream opened at the first
    offset and read on as they go; a jump elsewhere opens a new one."""

    def __init__(self, store: ProxyContentStore, dgst: str, size: int):
        self.store = store
        self.digest = dgst
        self.size = size
        self._call: Any = None
        self._pos = 0  # the offset the stream's next byte belongs to
        self._buf = bytearray()

    def _drop_stream(self) -> None:
        call, self._call = self._call, None
        self._buf = bytearray()
        if call is not None:
            call.cancel()

    async def read_at(self, offset: int, n: int) -> bytes:
        if n <= 0 or offset >= self.size:
            return b""
        n = min(n, self.size - offset)
        if self._call is None or offset != self._pos:
            self._drop_stream()
            # to the end of the blob: sequential reads keep using it
            self._call = self.store.stub.Read(pb.ReadContentRequest(digest=self.digest, offset=offset, size=0))
            self._pos = offset
        try:
            while len(self._buf) < n:
                r = await self._call.read()
                if r is grpc.aio.EOF:
                    break
                self._buf += r.data
        except grpc.RpcError as exc:
            self._drop_stream()
            raise _error(exc) from None
        except BaseException:
            self._drop_stream()
            raise
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self._pos += len(out)
        if not self._buf and self._pos >= self.size:
            self._drop_stream()
        return out

    def read_at_sync(self, offset: int, n: int) -> bytes:
        return self.store._loop.run(self.read_at(offset, n))

    def close(self) -> None:
        self.store._loop.call_soon(self._drop_stream)

    def __enter__(self) -> "ProxyReaderAt":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ProxyWriter:
    """One remote write transaction: containerd's remoteWriter. Status and
    digest are what the remote last answered, kept here so asking for them
    costs no round trip."""

    def __init__(self, store: ProxyContentStore, ref: str, call: Any):
        self.store = store
        self.ref = ref
        self.call = call
        self.offset = 0
        self.total = 0
        self.started_at = 0
        self.updated_at = 0
        self._digest = ""
        self._closed = False

    async def _send(self, req: Any) -> Any:
        """One request, one answer (the stream is used strictly in turns)."""
        if self._closed:
            raise errdefs.FailedPrecondition("cannot write on closed writer")
        try:
            await self.call.write(req)
            r = await self.call.read()
        except grpc.RpcError as exc:
            raise _error(exc) from None
        except asyncio.InvalidStateError:  # the remote ended the call
            r = grpc.aio.EOF
        if r is grpc.aio.EOF:
            code = await self.call.code()
            if code != grpc.StatusCode.OK:
                raise errgrpc.from_grpc(code, await self.call.details())
            raise errdefs.Unavailable(f"content proxy {self.store.name}: write stream for {self.ref} ended early")
        if r.digest:
            self._digest = r.digest
        return r

    def status(self) -> Status:
        return Status(ref=self.ref, offset=self.offset, total=self.total,
                      started_at=self.started_at, updated_at=self.updated_at)

    def digest(self) -> str:
        return self._digest

    async def write(self, data) -> int:
        if not len(data):
            return 0
        offset = self.offset
        r = await self._send(pb.WriteContentRequest(action=pb.WRITE, offset=offset, data=bytes(data)))
        n = r.offset - offset
        self.offset += n
        self.updated_at = time.time_ns()
        if n < len(data):
            raise errdefs.Unknown(f"short write: {n} of {len(data)} bytes")
        return n

    def write_sync(self, data) -> int:
        return self.store._loop.run(self.write(data))

    async def truncate(self, size: int) -> None:
        """As containerd's remote writer: only the tracked offset moves; the
        remote truncates when the next write (or the commit) comes at 0."""
        if size != 0:
            raise errdefs.InvalidArgument("Truncate: unsupported size")
        self.offset = 0
        self._digest = ""

    async def commit(self, size: int = 0, expected: str = "") -> str:
        """COMMIT with the size and digest to verify; the remote checks them
        and moves the blob into place. The stream ends either way."""
        try:
            r = await self._send(pb.WriteContentRequest(action=pb.COMMIT, total=size, offset=self.offset,
                                                        expected=expected))
            if size and r.offset != size:
                raise errdefs.FailedPrecondition(f"unexpected size: {r.offset} != {size}")
            if expected and r.digest != expected:
                raise errdefs.FailedPrecondition(f"unexpected digest: {r.digest} != {expected}")
            self.offset = r.offset
            return r.digest
        finally:
            await self.close()

    async def close(self) -> None:
        """End the stream and wait until the remote has let go of the ref,
        so a writer opened next on it does not find it locked."""
        if self._closed:
            return
        self._closed = True
        call = self.call
        try:
            await asyncio.shield(self._finish(call))
        except (grpc.RpcError, asyncio.InvalidStateError, asyncio.TimeoutError):
            call.cancel()
        except asyncio.CancelledError:
            call.cancel()
            raise

    @staticmethod
    async def _finish(call: Any) -> None:
        async def drain() -> None:
            if not call.done():
                await call.done_writing()
            while not call.done() and await call.read() is not grpc.aio.EOF:
                pass  # containerd's server may answer once more after the last request
            await call.code()

        await asyncio.wait_for(drain(), 30)


def new_client(name: str, address: str) -> ProxyContentStore:
    """The instance of a `type = "content"` proxy plugin: a client on its
    own grpc.aio channel (connected on first use)."""
    target = address if address.startswith("unix:") else "unix:" + address
    return ProxyContentStore(name, address, grpc.aio.insecure_channel(target), owns_channel=True)
