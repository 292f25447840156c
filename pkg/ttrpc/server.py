"""An asyncio ttrpc server on a UNIX socket.

Services are registered by name with a table of method handlers. A handler
is a coroutine taking a `CallContext` (the request's metadata, its namespace
from `containerd-namespace-ttrpc`, its deadline) and the request payload as
bytes, and returning a protobuf message. What a handler raises becomes a
google.rpc.Status: errdefs classes keep their code and wording (bounded);
anything else is logged and answered as UNKNOWN. Requests on one connection
run concurrently, as ttrpc's server runs each in its own goroutine.

A peer that sends garbage costs only its own connection: an oversized
message is skipped and answered RESOURCE_EXHAUSTED, an undecodable request
or an even stream id INVALID_ARGUMENT (ttrpc's wording), any other message
type is ignored, and a broken stream closes that connection alone.

What one peer can hold is bounded: large request bodies are charged to one
server-wide `framing.Budget` while they are read and handled; a connection
buffers at most READ_LIMIT bytes it has not asked for; and it has at most
MAX_INFLIGHT calls running: past that, its requests wait in the socket (not
in memory) until one finishes, as do requests of a peer that does not read
its answers (the reply buffer is drained before the next request is read).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import structlog
from google.protobuf.message import DecodeError, Message

from pycontainerd.pkg import errdefs

from . import framing
from .client import NAMESPACE_KEY
from .messages import Request, Response, Status
from .status import INVALID_ARGUMENT, RESOURCE_EXHAUSTED, to_status

log = structlog.get_logger(__name__)

READ_LIMIT = 64 << 10  # bytes a connection's reader buffers ahead of what is asked
MAX_INFLIGHT = 128  # calls running at once for one connection
# asyncio's default backlog is 100: a burst of connections (a hostile one, or
# many shims at once) had every later connect fail with EAGAIN; Go listens
# with the system's maximum


@dataclass
class CallContext:
    service: str
    method: str
    metadata: dict[str, list[str]] = field(default_factory=dict)
    deadline: float | None = None  # time.monotonic() value, or None

    @property
    def namespace(self) -> str | None:
        values = self.metadata.get(NAMESPACE_KEY)
        return values[0] if values else None

    def timeout(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


Handler = Callable[[CallContext, bytes], Awaitable[Message]]


class Server:
    def __init__(self) -> None:
        self._services: dict[str, dict[str, Handler]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()
        self._budget = framing.Budget()

    def register(self, service: str, methods: dict[str, Handler]) -> None:
        if service in self._services:
            raise ValueError(f"duplicate service {service} registered")
        self._services[service] = dict(methods)

    async def listen(self, path: str, mode: int = 0o660) -> None:
        """Serve on a new UNIX socket at `path` (the caller removed whatever
        was there and holds whatever lock guards it)."""
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._connection, path, limit=READ_LIMIT, backlog=socket.SOMAXCONN
            )
        finally:
            os.umask(old)
        os.chmod(path, mode)

    async def close(self) -> None:
        """Stop listening and end every connection (in-flight calls are
        cancelled)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._connections.add(me)
        calls: set[asyncio.Task] = set()
        slots = asyncio.Semaphore(MAX_INFLIGHT)

        def reply(stream_id: int, resp: Response) -> None:
            if not writer.is_closing():
                writer.write(framing.encode(stream_id, framing.TYPE_RESPONSE, resp.SerializeToString()))

        try:
            while True:
                await slots.acquire()
                try:
                    header, body = await framing.read_message(reader, self._budget)
                except (framing.Oversized, framing.Busy) as exc:
                    slots.release()
                    reply(exc.header.stream_id, Response(status=Status(code=RESOURCE_EXHAUSTED, message=str(exc))))
                    await writer.drain()
                    continue
                except BaseException:
                    slots.release()
                    raise
                charged = framing.charge(header)
                req = self._request(header, body, reply)
                del body
                if req is None:
                    self._budget.give(charged)
                    slots.release()
                    await writer.drain()
                    continue
                task = asyncio.get_running_loop().create_task(self._call(header.stream_id, req, reply))
                calls.add(task)
                task.add_done_callback(calls.discard)
                task.add_done_callback(lambda _t, n=charged: (self._budget.give(n), slots.release()))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            for task in list(calls):
                task.cancel()
            self._connections.discard(me)
            writer.close()

    @staticmethod
    def _request(header: framing.Header, body: bytes, reply: Callable[[int, Response], None]) -> Request | None:
        """The request a message carries, or None when it is not one we
        run (another type: ignored; undecodable or an even stream id:
        answered INVALID_ARGUMENT with ttrpc's wording)."""
        if header.type != framing.TYPE_REQUEST:
            return None
        try:
            req = Request.FromString(body)
        except DecodeError as exc:
            msg = f"unmarshal request error: {errdefs.cut(str(exc))}"
            reply(header.stream_id, Response(status=Status(code=INVALID_ARGUMENT, message=msg)))
            return None
        if header.stream_id % 2 != 1:
            msg = "StreamID must be odd for client initiated streams"
            reply(header.stream_id, Response(status=Status(code=INVALID_ARGUMENT, message=msg)))
            return None
        return req

    async def _call(self, stream_id: int, req: Request, reply: Callable[[int, Response], None]) -> None:
        ctx = CallContext(service=req.service, method=req.method)
        for kv in req.metadata:
            ctx.metadata.setdefault(kv.key, []).append(kv.value)
        if req.timeout_nano > 0:
            ctx.deadline = time.monotonic() + req.timeout_nano / 1e9
        try:
            handler = self._resolve(req.service, req.method)
            result = await asyncio.wait_for(handler(ctx, req.payload), ctx.timeout())
            resp = Response(payload=result.SerializeToString())
            resp.status.SetInParent()  # ttrpc sends an OK status, not none
        except asyncio.TimeoutError:
            resp = Response(status=to_status(errdefs.DeadlineExceeded()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            resp = Response(status=to_status(exc))
        reply(stream_id, resp)

    def _resolve(self, service: str, method: str) -> Handler:
        methods = self._services.get(service)
        if methods is None:
            raise _Unimplemented(f"service {errdefs.cut(service)}")
        handler = methods.get(method)
        if handler is None:
            raise _Unimplemented(f"method {errdefs.cut(method)}")
        return handler


class _Unimplemented(errdefs.NotImplementedErr):
    """ttrpc's answer for an unknown service or method: UNIMPLEMENTED,
    saying just "service X" or "method Y"."""

    sentinel = ""
