"""An asyncio ttrpc client over a UNIX socket.

Calls are multiplexed on one connection by stream id (odd, increasing, as
ttrpc's client numbers them); one reader task hands each response to the
call waiting on its id. A deadline travels as `timeout_nano` and is also
enforced here, so a peer that never answers cannot hold a caller. When the
connection ends (the peer closed it, or `close()`), every pending call fails
with `Closed`, and so does every later one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Iterable, TypeVar

import structlog
from google.protobuf.message import DecodeError, Message

from pycontainerd.pkg import errdefs

from . import framing
from .messages import KeyValue, Request, Response
from .status import Closed, StatusError, from_status, RESOURCE_EXHAUSTED

log = structlog.get_logger(__name__)

NAMESPACE_KEY = "containerd-namespace-ttrpc"

M = TypeVar("M", bound=Message)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str = ""):
        self.address = address
        self._reader = reader
        self._writer = writer
        self._next_id = 1
        self._pending: dict[int, asyncio.Future] = {}
        self._closed: BaseException | None = None
        self._on_close: list[Callable[[], None]] = []
        self._done = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._receive(), name=f"ttrpc-client {address}")

    @classmethod
    async def connect(cls, path: str, timeout: float | None = None) -> "Client":
        """Connect to the ttrpc server listening on the UNIX socket `path`
        (a `unix://` prefix is accepted)."""
        path = path.removeprefix("unix://")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=framing.MAX_MESSAGE + framing.HEADER_LENGTH), timeout
            )
        except asyncio.TimeoutError:
            raise errdefs.DeadlineExceeded(f"ttrpc: connect {path}") from None
        except OSError as exc:
            raise errdefs.Unavailable(f"ttrpc: connect {path}: {exc.strerror or exc}") from None
        return cls(reader, writer, path)

    def peer_pid(self) -> int:
        """The pid of the process on the other end (SO_PEERCRED), 0 if unknown."""
        sock = self._writer.get_extra_info("socket")
        if sock is None:
            return 0
        import socket
        import struct

        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return 0
        return struct.unpack("3i", creds)[0]

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call `callback` (once) when the connection ends."""
        if self._done.is_set():
            callback()
        else:
            self._on_close.append(callback)

    async def wait_closed(self) -> None:
        await self._done.wait()

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        timeout: float | None = None,
        namespace: str | None = None,
        metadata: Iterable[tuple[str, str]] = (),
    ) -> M:
        """Call `service`/`method` with `request`; the answer parsed as
        `response_type`, or the errdefs class of the peer's status."""
        payload = request.SerializeToString()
        pairs = [KeyValue(key=k.lower(), value=v) for k, v in metadata]
        if namespace is not None:
            pairs.append(KeyValue(key=NAMESPACE_KEY, value=namespace))
        req = Request(service=service, method=method, payload=payload, metadata=pairs)
        if timeout is not None:
            req.timeout_nano = max(1, int(timeout * 1e9))
        body = req.SerializeToString()
        if len(body) > framing.MAX_MESSAGE:
            raise StatusError(RESOURCE_EXHAUSTED, framing.oversize_message(len(body)))
        if self._closed is not None:
            raise Closed()
        stream_id = self._next_id
        self._next_id += 2
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = future
        started = time.monotonic()
        try:
            self._writer.write(framing.encode(stream_id, framing.TYPE_REQUEST, body))
            await asyncio.wait_for(self._drain_and_wait(future), timeout)
        except asyncio.TimeoutError:
            raise errdefs.DeadlineExceeded(
                f"ttrpc: {service}/{method} after {time.monotonic() - started:.3f}s"
            ) from None
        except (ConnectionError, OSError):
            raise Closed() from None
        finally:
            self._pending.pop(stream_id, None)
        resp = future.result()
        if resp.status.code != 0:
            raise from_status(resp.status)
        try:
            return response_type.FromString(resp.payload)
        except DecodeError:
            raise errdefs.Unknown(f"ttrpc: {service}/{method}: cannot decode the response") from None

    async def _drain_and_wait(self, future: asyncio.Future) -> None:
        await self._writer.drain()
        await future

    async def _receive(self) -> None:
        reason: BaseException = Closed()
        try:
            while True:
                try:
                    header, body = await framing.read_message(self._reader)
                except framing.Oversized as exc:
                    self._resolve_error(exc.header.stream_id, StatusError(RESOURCE_EXHAUSTED, str(exc)))
                    continue
                if header.type != framing.TYPE_RESPONSE:
                    continue  # ttrpc has nothing else for a client to receive
                future = self._pending.get(header.stream_id)
                if future is None or future.done():
                    log.warning("ttrpc: response for an unknown stream", stream_id=header.stream_id, address=self.address)
                    continue
                try:
                    future.set_result(Response.FromString(body))
                except DecodeError:
                    future.set_exception(errdefs.Unknown("ttrpc: malformed response"))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._shut(reason)

    def _resolve_error(self, stream_id: int, err: BaseException) -> None:
        future = self._pending.get(stream_id)
        if future is not None and not future.done():
            future.set_exception(err)

    def _shut(self, reason: BaseException) -> None:
        if self._closed is not None:
            return
        self._closed = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Closed())
        self._pending.clear()
        try:
            self._writer.close()
        except Exception:  # the transport may already be gone
            pass
        self._done.set()
        for callback in self._on_close:
            try:
                callback()
            except Exception as exc:
                log.warning("ttrpc: on_close callback failed", error=str(exc))
        self._on_close.clear()

    async def close(self) -> None:
        """End the connection; pending calls fail with Closed."""
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._shut(Closed())
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
