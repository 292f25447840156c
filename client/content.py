"""Client calls for containerd's Content service (pycontainerd or a real
containerd alike), shaped after containerd's content/proxy store.

`write_blob` is containerd's content.WriteBlob over the Write stream: it
opens the writer (retrying while another writer holds the ref, as
content.OpenWriter does), asks for the current offset with STAT, resumes
from there (seeking the input, or skipping bytes when it cannot seek), sends
1 MiB WRITE messages, each answered before the next, and ends with COMMIT
carrying the expected size and digest.
"""

from __future__ import annotations

import io
import queue
import random
import time
from typing import Any, BinaryIO, Iterator

import grpc
from google.protobuf import field_mask_pb2

from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.pkg import errdefs, errgrpc
from pycontainerd.pkg.content import Info, Status, info_from_pb, status_from_pb

from .errors import ClientError

CHUNK = 1 << 20


# what the calls return: the content contract's own types (times in ns)
ContentInfo = Info
ContentStatus = Status


def _rpc_error(exc: grpc.RpcError) -> errdefs.ContainerdError:
    return errgrpc.from_grpc(exc.code(), exc.details())


class ContentClient:
    """Content calls over a pyctr `Client` (its channel, namespace, timeout)."""

    def __init__(self, client: Any, lease: str = ""):
        self.client = client
        self.lease = lease
        self.stub = pb_grpc.ContentStub(client.channel)

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return self.client.leased_metadata(self.lease)

    def _unary(self, method, request):
        try:
            return method(request, metadata=self._metadata, timeout=self.client.timeout)
        except grpc.RpcError as exc:
            raise _rpc_error(exc) from None

    def info(self, dgst: str) -> ContentInfo:
        return info_from_pb(self._unary(self.stub.Info, pb.InfoRequest(digest=dgst)).info)

    def update(self, dgst: str, labels: dict[str, str], paths: list[str]) -> ContentInfo:
        request = pb.UpdateRequest(info=pb.Info(digest=dgst, labels=labels),
                                   update_mask=field_mask_pb2.FieldMask(paths=paths))
        return info_from_pb(self._unary(self.stub.Update, request).info)

    def list(self, *filters: str) -> list[ContentInfo]:
        out = []
        try:
            for r in self.stub.List(pb.ListContentRequest(filters=list(filters)), metadata=self._metadata,
                                    timeout=self.client.timeout):
                out.extend(info_from_pb(i) for i in r.info)
        except grpc.RpcError as exc:
            raise _rpc_error(exc) from None
        return out

    def delete(self, dgst: str) -> None:
        self._unary(self.stub.Delete, pb.DeleteContentRequest(digest=dgst))

    def read(self, dgst: str, offset: int = 0, size: int = 0) -> Iterator[bytes]:
        try:
            for r in self.stub.Read(pb.ReadContentRequest(digest=dgst, offset=offset, size=size),
                                    metadata=self._metadata, timeout=self.client.timeout):
                yield r.data
        except grpc.RpcError as exc:
            raise _rpc_error(exc) from None

    def status(self, ref: str) -> ContentStatus:
        return status_from_pb(self._unary(self.stub.Status, pb.StatusRequest(ref=ref)).status)

    def list_statuses(self, *filters: str) -> list[ContentStatus]:
        r = self._unary(self.stub.ListStatuses, pb.ListStatusesRequest(filters=list(filters)))
        return [status_from_pb(s) for s in r.statuses]

    def abort(self, ref: str) -> None:
        self._unary(self.stub.Abort, pb.AbortRequest(ref=ref))

    # -- writing --------------------------------------------------------------------

    def writer(self, ref: str, total: int = 0, expected: str = "") -> "RemoteWriter":
        """Open a writer, retrying while the ref is locked (Unavailable)."""
        delay = 16
        deadline = None if self.client.timeout is None else time.monotonic() + self.client.timeout
        while True:
            w = RemoteWriter(self, ref)
            try:
                w.open(total, expected)
                return w
            except errdefs.Unavailable:
                w.close()
                if deadline is not None and time.monotonic() > deadline:
                    raise
                time.sleep(random.randrange(delay) / 1000)
                delay = min(delay * 2, 2048)
            except BaseException:
                w.close()
                raise

    def write_blob(self, ref: str, reader: BinaryIO, size: int = 0, expected: str = "",
                   labels: dict[str, str] | None = None) -> str:
        """content.WriteBlob: returns the digest ("" when the blob was there)."""
        try:
            w = self.writer(ref, size, expected)
        except errdefs.AlreadyExists:
            return ""
        try:
            offset = w.offset
            if offset > 0:
                _seek(reader, offset)
            copied = 0
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    break
                w.write(chunk)
                copied += len(chunk)
            if size and copied < size - offset:
                raise ClientError("failed to read expected number of bytes: unexpected EOF")
            try:
                return w.commit(size, expected, labels)
            except errdefs.AlreadyExists:
                return expected
            except errdefs.ContainerdError as exc:
                raise type(exc)(f'failed commit on ref "{ref}": {exc.message}') from None
        finally:
            w.close()


def _seek(reader: BinaryIO, offset: int) -> None:
    try:
        reader.seek(offset, io.SEEK_SET)
        return
    except (OSError, AttributeError, io.UnsupportedOperation):
        pass
    left = offset
    while left:
        got = reader.read(min(CHUNK, left))
        if not got:
            raise ClientError(f"unable to resume write: short read at {offset - left}")
        left -= len(got)


_END = object()


class RemoteWriter:
    """One Write stream: every request is answered before the next is sent."""

    def __init__(self, content: ContentClient, ref: str):
        self.ref = ref
        self.offset = 0
        self.digest = ""
        self._requests: queue.Queue = queue.Queue()
        self._responses = None
        self._content = content

    def _iter_requests(self):
        while True:
            item = self._requests.get()
            if item is _END:
                return
            yield item

    def _send(self, request: pb.WriteContentRequest) -> pb.WriteContentResponse:
        if self._responses is None:
            c = self._content
            self._responses = c.stub.Write(self._iter_requests(), metadata=c._metadata, timeout=c.client.timeout)
        self._requests.put(request)
        try:
            resp = next(self._responses)
        except grpc.RpcError as exc:
            raise _rpc_error(exc) from None
        except StopIteration:
            raise ClientError("write stream ended early") from None
        if resp.digest:
            self.digest = resp.digest
        return resp

    def open(self, total: int, expected: str) -> None:
        resp = self._send(pb.WriteContentRequest(action=pb.STAT, ref=self.ref, total=total, expected=expected))
        self.offset = resp.offset

    def stat(self) -> pb.WriteContentResponse:
        return self._send(pb.WriteContentRequest(action=pb.STAT))

    def write(self, data: bytes) -> int:
        resp = self._send(pb.WriteContentRequest(action=pb.WRITE, offset=self.offset, data=data))
        n = resp.offset - self.offset
        self.offset = resp.offset
        if n < len(data):
            raise ClientError("short write")
        return n

    def commit(self, size: int = 0, expected: str = "", labels: dict[str, str] | None = None) -> str:
        try:
            resp = self._send(pb.WriteContentRequest(action=pb.COMMIT, total=size, offset=self.offset,
                                                     expected=expected, labels=labels or {}))
        except errdefs.ContainerdError as exc:  # worded as containerd's proxy writer words it
            raise type(exc)(f"commit failed: {exc.message}") from None
        if size and resp.offset != size:
            raise ClientError(f"unexpected size: {resp.offset} != {size}")
        if expected and resp.digest != expected:
            raise ClientError(f"unexpected digest: {resp.digest} != {expected}")
        self.offset = resp.offset
        return resp.digest

    def close(self) -> None:
        self._requests.put(_END)
