"""Helpers every gRPC service plugin uses: errors, the namespace, the lease.

`ErrdefsInterceptor` is the edge every answer leaves through: a raised
errdefs error becomes the gRPC status containerd would send (code and
`<context>: <sentinel>` wording, through pkg/errgrpc), so service code just
raises; a request that is not valid protobuf, or an exception nobody
expected, gets a short answer with no Python internals in it; and no
message is longer than MAX_ERROR_MESSAGE. The namespace travels in the
request metadata under `containerd-namespace`, the lease under
`containerd-lease`, as with containerd.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable

import grpc
import structlog

from pycontainerd.pkg import errdefs, errgrpc, identifiers, leases, namespaces

from .registry import PluginType, Registration

log = structlog.get_logger(__name__)

NAMESPACE_HEADER = namespaces.GRPC_HEADER
def namespace(context: grpc.aio.ServicerContext) -> str:
    """The request's namespace; containerd's NamespaceRequired. Sent more
    than once, the first value counts, as in containerd (a proxy that
    appends its own header does not move the request elsewhere)."""
    value = ""
    for key, v in context.invocation_metadata() or ():
        if key == NAMESPACE_HEADER:
            value = v
            break
    if not value:
        raise errdefs.FailedPrecondition("namespace is required")
    try:
        identifiers.validate(value)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"namespace validation: {exc.message}") from None  # one sentinel
    return value


def service_pair(
    service_id: str,
    grpc_id: str,
    init_local: Callable[[Any], Awaitable[Any]],
    servicer: Callable[[Any], Any],
    requires: tuple[str, ...] = (),
    config: type | None = None,
) -> list[Registration]:
    """containerd's usual pair: `io.containerd.service.v1.<service_id>`
    does the work (`init_local` returns it), and `io.containerd.grpc.v1.
    <grpc_id>` serves it: its instance is `servicer(local)`, which must have
    `register(server)`."""

    async def init_grpc(ic: Any) -> Any:
        return servicer(ic.get(PluginType.SERVICE, service_id))

    return [
        Registration(type=PluginType.SERVICE, id=service_id, requires=requires, config=config, init=init_local),
        Registration(type=PluginType.GRPC, id=grpc_id, requires=(PluginType.SERVICE,), init=init_grpc),
    ]


def lease_of(context: grpc.aio.ServicerContext) -> str:
    """The lease the request carries, or "" (containerd's leases.FromContext)."""
    for key, value in context.invocation_metadata() or ():
        if key == leases.GRPC_HEADER:
            return value
    return ""



# -- the gRPC edge: every answer leaves through here ---------------------------

# An error's message travels as a header; gRPC clients refuse headers over
# 8-16 KiB (RESOURCE_EXHAUSTED instead of the real error), so it is cut to
# this many bytes on the wire (grpc-message is percent-encoded: a byte
# outside printable ASCII costs three).
MAX_ERROR_MESSAGE = 4096
_CUT_MARK = " ... "
_KEEP_TAIL = 64  # the end is kept: it holds the class (": not found")


def bounded_message(message: str, limit: int = MAX_ERROR_MESSAGE) -> str:
    """`message`, cut in the middle if its wire form is over `limit` bytes."""
    if len(message) <= limit // 12 or _wire_size(message) <= limit:
        return message
    tail = message[-_KEEP_TAIL:]
    budget = limit - _wire_size(tail) - len(_CUT_MARK)
    head, size = [], 0
    for ch in message[:-_KEEP_TAIL]:
        size += _wire_size(ch)
        if size > budget:
            break
        head.append(ch)
    return "".join(head) + _CUT_MARK + tail


def _wire_size(text: str) -> int:
    return sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in text.encode("utf-8", "replace"))


class _Undecodable:
    """What the request deserializer hands over instead of raising: grpc.aio
    would answer an exception there with UNKNOWN and the exception's class."""

    __slots__ = ()


_UNDECODABLE = _Undecodable()
# grpc-go's words (containerd's server): unary and streamed requests differ
_UNARY_DECODE_ERROR = "grpc: error unmarshalling request: proto: cannot parse invalid wire-format data"
_STREAM_DECODE_ERROR = "grpc: failed to unmarshal the received message proto: cannot parse invalid wire-format data"


class DecodeFailure(Exception):
    """A request (or a streamed request message) is not valid protobuf."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _safe_deserializer(deserialize):
    if deserialize is None:
        return None

    def decode(data: bytes):
        try:
            return deserialize(data)
        except Exception:  # DecodeError, or a message type's own complaint
            return _UNDECODABLE

    return decode


class _BoundedContext:
    """The servicer context, with `abort` bounded like every other answer:
    handlers may quote what they were sent."""

    __slots__ = ("_context",)

    def __init__(self, context):
        self._context = context

    async def abort(self, code, details: str = "", trailing_metadata=()):
        await self._context.abort(code, bounded_message(details), trailing_metadata)

    def __getattr__(self, name):
        return getattr(self._context, name)


async def _decoded_stream(requests):
    async for request in requests:
        if request is _UNDECODABLE:
            raise DecodeFailure(_STREAM_DECODE_ERROR)
        yield request


def _one_response(inner, method: str, streamed_request: bool):
    async def call(request, context):
        try:
            if streamed_request:
                request = _decoded_stream(request)
            elif request is _UNDECODABLE:
                raise DecodeFailure(_UNARY_DECODE_ERROR)
            return await inner(request, _BoundedContext(context))
        except Exception as exc:
            await _abort(context, method, exc)

    return call


def _streamed_response(inner, method: str, streamed_request: bool):
    async def call(request, context):
        try:
            if streamed_request:
                request = _decoded_stream(request)
            elif request is _UNDECODABLE:
                raise DecodeFailure(_UNARY_DECODE_ERROR)
            async for item in inner(request, _BoundedContext(context)):
                yield item
        except Exception as exc:
            await _abort(context, method, exc)

    return call


_HANDLER_KINDS = (
    ("unary_unary", _one_response, False),
    ("stream_unary", _one_response, True),
    ("unary_stream", _streamed_response, False),
    ("stream_stream", _streamed_response, True),
)


class ErrdefsInterceptor(grpc.aio.ServerInterceptor):
    """The gRPC edge of every service: errdefs errors become containerd's
    statuses, a request that does not decode gets grpc-go's answer, anything
    unexpected is logged in full and answered with a short generic message,
    and no message is longer than MAX_ERROR_MESSAGE."""

    def __init__(self) -> None:
        self.requests = 0  # calls received (the debug socket's /debug/vars)

    async def intercept_service(self, continuation, details):
        self.requests += 1
        handler = await continuation(details)
        if handler is None:
            return None
        for kind, wrap, streamed_request in _HANDLER_KINDS:
            inner = getattr(handler, kind)
            if inner is not None:
                if not inspect.isasyncgenfunction(inner):
                    wrap = _one_response  # a coroutine; a streamed answer goes through context.write
                return handler._replace(
                    request_deserializer=_safe_deserializer(handler.request_deserializer),
                    **{kind: wrap(inner, details.method, streamed_request)},
                )
        return handler


async def _abort(context, method: str, exc: Exception) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc  # the handler aborted (bounded by _BoundedContext)
    code, message = answer_for(exc)
    if code == grpc.StatusCode.UNKNOWN and not isinstance(exc, errdefs.ContainerdError):
        log.error("unexpected error in handler", method=method, exc_info=exc)
    await context.abort(code, bounded_message(message))


def answer_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The (code, message) a handler's exception is answered with. Never a
    Python class name, traceback or errno dump: those go to the log."""
    if isinstance(exc, errdefs.ContainerdError):
        return errgrpc.to_grpc(exc)
    if isinstance(exc, DecodeFailure):
        return grpc.StatusCode.INTERNAL, exc.message
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        # a call to a proxy plugin failed: pass its status on
        return exc.code(), exc.details() or ""
    if isinstance(exc, NotImplementedError):  # a generated servicer's method left as is
        return grpc.StatusCode.UNIMPLEMENTED, "method not implemented"
    if isinstance(exc, OSError):
        # containerd's errors read "<what failed>: <strerror>"; the path
        # (under the daemon's root or state) and the errno stay in the log
        reason = (exc.strerror or "i/o error").lower()
        return grpc.StatusCode.UNKNOWN, f"{_OS_CONTEXT}: {reason}"
    return grpc.StatusCode.UNKNOWN, "internal error: see the daemon's log"


_OS_CONTEXT = "filesystem operation failed"


async def serve_standalone(address: str, register, what: str) -> None:
    """Serve one service alone on a UNIX socket until SIGTERM/SIGINT, for
    the `pycontainerd <kind> serve` commands that [proxy_plugins] talk to.
    `register(server)` adds the servicer."""
    import asyncio
    import os
    import signal

    server = grpc.aio.server(interceptors=[ErrdefsInterceptor()])
    register(server)
    os.makedirs(os.path.dirname(os.path.abspath(address)), exist_ok=True)
    if os.path.exists(address):
        os.unlink(address)
    server.add_insecure_port("unix:" + address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"serving {what} on {address}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop(1)
        try:
            os.unlink(address)
        except FileNotFoundError:
            pass
