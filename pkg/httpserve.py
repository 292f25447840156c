"""A small HTTP/1.1 server on the daemon's asyncio loop (the debug socket, the
[metrics] endpoint).

h11 parses and writes the protocol (sans-I/O, with a bound on the size of a
request's head); asyncio streams carry the bytes, so no thread and no second
loop is involved. What an operator's tools send is small and simple (GET,
one short body for a PUT): requests are read one at a time per connection,
bodies are capped at MAX_BODY, and every malformed request gets a 4xx and a
closed connection. A handler raising is logged and answered 500 with no
Python internals in the answer.

    server = await serve(handler, path="/run/x/debug.sock")   # or host=, port=
    ...
    await server.close()   # stops listening and ends open connections

`handler(request)` is a coroutine returning a `Response`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

import h11
import structlog

log = structlog.get_logger(__name__)

MAX_HEAD = 16 * 1024  # request line + headers; larger is answered 431
MAX_BODY = 64 * 1024  # the debug socket's bodies are a word ("debug")
IDLE_SECONDS = 60.0  # a connection that sends nothing this long is closed
READ_CHUNK = MAX_HEAD  # never more than a head per read, so h11 sees an over-long head as incomplete and refuses it


@dataclass
class Request:
    method: str
    path: str  # percent-decoded by nobody: the handlers match plain ASCII paths
    query: dict[str, str]
    body: bytes = b""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def split_host_port(address: str) -> tuple[str, int]:
    """Go's host:port ("127.0.0.1:1338", "[::1]:1338", ":1338" for every interface)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {address[:64]!r}: expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def text(status: int, message: str) -> Response:
    """A plain-text answer (a line ending in a newline, as Go's http.Error writes)."""
    return Response(status, (message.rstrip("\n") + "\n").encode())


Handler = Callable[[Request], Awaitable[Response]]


class Server:
    """A listening server and its open connections."""

    def __init__(self, handler: Handler):
        self._handler = handler
        self._connections: set[asyncio.Task] = set()
        self.listener: asyncio.AbstractServer | None = None

    @property
    def sockets(self):
        return self.listener.sockets if self.listener is not None else ()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await _connection(self._handler, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._connections.discard(task)
            writer.close()

    async def close(self) -> None:
        """Stop listening, end the open connections (idle keep-alive ones
        included: Python 3.11's server leaves them), wait for both."""
        if self.listener is None:
            return
        self.listener.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self.listener.wait_closed()
        self.listener = None


async def serve(handler: Handler, *, path: str | None = None, host: str | None = None,
                port: int | None = None) -> Server:
    """Serve `handler` on a UNIX socket `path`, or on `host:port`."""
    server = Server(handler)
    if path is not None:
        server.listener = await asyncio.start_unix_server(server._on_connection, path=path)
    else:
        server.listener = await asyncio.start_server(server._on_connection, host=host, port=port)
    return server


async def _connection(handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    while True:
        try:
            request = await _read_request(conn, reader)
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(conn, writer, text(status, _REASONS.get(status, "bad request")), head_only=False)
            return
        except _BodyTooLarge:
            await _send(conn, writer, text(413, "request body too large"), head_only=False)
            return
        if request is None:  # the client closed, or sat idle
            return
        try:
            response = await handler(request)
        except Exception:
            log.error("debug/metrics HTTP handler failed", path=request.path, exc_info=True)
            response = text(500, "internal error: see the daemon's log")
        await _send(conn, writer, response, head_only=request.method == "HEAD")
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


class _BodyTooLarge(Exception):
    pass


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader):
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await asyncio.wait_for(reader.read(READ_CHUNK), IDLE_SECONDS)
        except asyncio.TimeoutError:
            return None
        conn.receive_data(data)  # b"" tells h11 the peer closed


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
    event = await _next_event(conn, reader)
    if event is None or isinstance(event, h11.ConnectionClosed):
        return None
    if not isinstance(event, h11.Request):
        raise h11.RemoteProtocolError("expected a request", 400)
    body = bytearray()
    while True:
        part = await _next_event(conn, reader)
        if part is None or isinstance(part, h11.ConnectionClosed):
            return None
        if isinstance(part, h11.EndOfMessage):
            break
        if isinstance(part, h11.Data):
            body += part.data
            if len(body) > MAX_BODY:
                raise _BodyTooLarge()
    target = event.target.decode("ascii", "replace")
    parts = urlsplit(target)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return Request(method=event.method.decode("ascii", "replace"), path=parts.path, query=query, body=bytes(body))


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, head_only: bool) -> None:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("X-Content-Type-Options", "nosniff"),
        *response.headers,
    ]
    reason = _REASONS.get(response.status, "").encode()
    try:
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        if not head_only and response.body:
            data += conn.send(h11.Data(data=response.body))
        data += conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return
    writer.write(data)
    await writer.drain()


_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
    414: "URI Too Long", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented",
}
