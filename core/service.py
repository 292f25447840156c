"""Helpers every gRPC service plugin uses: errors and the namespace.

`ErrdefsInterceptor` turns a raised errdefs error into the gRPC status
containerd would send (code and `<context>: <sentinel>` wording), so
service code just raises. The namespace travels in the request metadata
under `containerd-namespace`, as with containerd.
"""

from __future__ import annotations

import re

import grpc
import structlog

from . import errdefs

log = structlog.get_logger(__name__)

NAMESPACE_HEADER = "containerd-namespace"
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


class ErrdefsInterceptor(grpc.aio.ServerInterceptor):
    """Maps errdefs errors (and unexpected ones, logged) onto gRPC statuses."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request, context):
                try:
                    return await inner_uu(request, context)
                except Exception as exc:
                    await _abort(context, method, exc)

            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request, context):
                try:
                    async for item in inner_us(request, context):
                        yield item
                except Exception as exc:
                    await _abort(context, method, exc)

            return handler._replace(unary_stream=unary_stream)
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(request_iterator, context):
                try:
                    return await inner_su(request_iterator, context)
                except Exception as exc:
                    await _abort(context, method, exc)

            return handler._replace(stream_unary=stream_unary)
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream_stream(request_iterator, context):
                try:
                    async for item in inner_ss(request_iterator, context):
                        yield item
                except Exception as exc:
                    await _abort(context, method, exc)

            return handler._replace(stream_stream=stream_stream)
        return handler


async def _abort(context, method: str, exc: Exception) -> None:
    if isinstance(exc, (grpc.aio.AbortError, grpc.RpcError)):
        raise exc
    if not isinstance(exc, errdefs.ContainerdError):
        log.error("unexpected error in handler", method=method, exc_info=exc)
    code, message = errdefs.to_grpc(exc)
    await context.abort(code, message)
