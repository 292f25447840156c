"""Helpers every gRPC service plugin uses: errors, the namespace, the lease.

`ErrdefsInterceptor` turns a raised errdefs error into the gRPC status
containerd would send (code and `<context>: <sentinel>` wording, through
pkg/errgrpc), so service code just raises. The namespace travels in the
request metadata under `containerd-namespace`, the lease under
`containerd-lease`, as with containerd.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable

import grpc
import structlog

from pycontainerd.pkg import errdefs, errgrpc, leases, namespaces

from .registry import PluginType, Registration

log = structlog.get_logger(__name__)

NAMESPACE_HEADER = namespaces.GRPC_HEADER
_IDENTIFIER = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")
MAX_IDENTIFIER = 76


def validate_identifier(s: str) -> None:
    """containerd's identifiers.Validate, with its wording."""
    if not s:
        raise errdefs.InvalidArgument("identifier must not be empty")
    if len(s) > MAX_IDENTIFIER:
        raise errdefs.InvalidArgument(f"identifier {s!r} greater than maximum length ({MAX_IDENTIFIER} characters)")
    if not _IDENTIFIER.match(s):
        raise errdefs.InvalidArgument(f'identifier "{s}" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$')


def namespace(context: grpc.aio.ServicerContext) -> str:
    """The request's namespace; containerd's NamespaceRequired."""
    value = ""
    for key, v in context.invocation_metadata() or ():
        if key == NAMESPACE_HEADER:
            value = v
    if not value:
        raise errdefs.FailedPrecondition("namespace is required")
    try:
        validate_identifier(value)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"namespace validation: {exc}") from None
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


def _one_response(inner, method: str):
    async def call(request, context):
        try:
            return await inner(request, context)
        except Exception as exc:
            await _abort(context, method, exc)

    return call


def _streamed_response(inner, method: str):
    async def call(request, context):
        try:
            async for item in inner(request, context):
                yield item
        except Exception as exc:
            await _abort(context, method, exc)

    return call


_HANDLER_KINDS = (
    ("unary_unary", _one_response),
    ("stream_unary", _one_response),
    ("unary_stream", _streamed_response),
    ("stream_stream", _streamed_response),
)


class ErrdefsInterceptor(grpc.aio.ServerInterceptor):
    """Maps errdefs errors (and unexpected ones, logged) onto gRPC statuses."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        for kind, wrap in _HANDLER_KINDS:
            inner = getattr(handler, kind)
            if inner is not None:
                return handler._replace(**{kind: wrap(inner, details.method)})
        return handler


async def _abort(context, method: str, exc: Exception) -> None:
    if isinstance(exc, (grpc.aio.AbortError, grpc.RpcError)):
        raise exc
    if not isinstance(exc, errdefs.ContainerdError):
        log.error("unexpected error in handler", method=method, exc_info=exc)
    code, message = errgrpc.to_grpc(exc)
    await context.abort(code, message)


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
