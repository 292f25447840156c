"""The daemon's gRPC request metrics, as go-grpc-prometheus's server
interceptors count them in containerd (the same names, labels and label
values, so dashboards built on containerd read them unchanged):

  grpc_server_started_total{grpc_method,grpc_service,grpc_type}
  grpc_server_handled_total{grpc_code,grpc_method,grpc_service,grpc_type}
  grpc_server_msg_received_total{grpc_method,grpc_service,grpc_type}
  grpc_server_msg_sent_total{grpc_method,grpc_service,grpc_type}
  grpc_server_handling_seconds{...}   a histogram, only with grpc_histogram = true

grpc_type is unary, client_stream, server_stream or bidi_stream; grpc_code
is Go's name of the status code (OK, NotFound, ...). A unary call counts one
message received, and one sent when it succeeds; a stream counts each
message. The interceptor sits outside the daemon's errdefs interceptor, so
the code is the one the client receives. Per call it costs a dict lookup and
a few counter increments; the clock is read only when the histogram is on.
"""

from __future__ import annotations

import asyncio
import inspect
import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

_LABELS = ("grpc_method", "grpc_service", "grpc_type")  # Go writes label names sorted

# grpc-go's codes.Code.String()
_GO_CODE = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}

# handler attribute -> (go-grpc-prometheus's grpc_type, request streamed, response streamed)
_KINDS = (
    ("unary_unary", "unary", False, False),
    ("stream_unary", "client_stream", True, False),
    ("unary_stream", "server_stream", False, True),
    ("stream_stream", "bidi_stream", True, True),
)


def split_method(full: str) -> tuple[str, str]:
    """"/pkg.Service/Method" -> ("pkg.Service", "Method"), as go-grpc-prometheus splits it."""
    service, sep, method = full.lstrip("/").partition("/")
    return (service, method) if sep else ("unknown", "unknown")


class _Method:
    """One method's counters, resolved once (label lookups are the costly part)."""

    __slots__ = ("started", "received", "sent", "seconds", "_handled", "_handled_family", "_labels")

    def __init__(self, m: "GrpcServerMetrics", labels: tuple[str, str, str]):
        self._labels = labels
        self.started = m.started.labels(*labels)
        self.received = m.received.labels(*labels)
        self.sent = m.sent.labels(*labels)
        self.seconds = m.seconds.labels(*labels) if m.seconds is not None else None
        self._handled_family = m.handled
        self._handled = {"OK": m.handled.labels("OK", *labels)}

    def handled(self, code: str) -> None:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._handled_family.labels(code, *self._labels)
        child.inc()


class GrpcServerMetrics(grpc.aio.ServerInterceptor):
    """go-grpc-prometheus's ServerMetrics: the counters in `registry`, and
    the interceptor that moves them."""

    def __init__(self, registry: CollectorRegistry, histogram: bool):
        self.started = Counter("grpc_server_started_total", "Total number of RPCs started on the server.",
                               _LABELS, registry=registry)
        self.handled = Counter("grpc_server_handled_total",
                               "Total number of RPCs completed on the server, regardless of success or failure.",
                               ("grpc_code", *_LABELS), registry=registry)
        self.received = Counter("grpc_server_msg_received_total",
                                "Total number of RPC stream messages received on the server.",
                                _LABELS, registry=registry)
        self.sent = Counter("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.",
                            _LABELS, registry=registry)
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            _LABELS, registry=registry,  # prometheus-client's default buckets are Go's DefBuckets
        ) if histogram else None
        self._methods: dict[tuple[str, str], _Method] = {}

    def _method(self, full: str, rpc_type: str) -> _Method:
        m = self._methods.get((full, rpc_type))
        if m is None:
            service, method = split_method(full)
            m = self._methods[(full, rpc_type)] = _Method(self, (method, service, rpc_type))
        return m

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED before any interceptor in Go
            return None
        for kind, rpc_type, streamed_request, streamed_response in _KINDS:
            inner = getattr(handler, kind)
            if inner is None:
                continue
            m = self._method(details.method, rpc_type)
            if streamed_response and inspect.isasyncgenfunction(inner):
                wrapped = self._generator(inner, m, streamed_request)
            else:
                wrapped = self._coroutine(inner, m, streamed_request, streamed_response)
            return handler._replace(**{kind: wrapped})
        return handler

    def _coroutine(self, inner, m: _Method, streamed_request: bool, streamed_response: bool):
        timed = m.seconds is not None

        async def call(request, context):
            m.started.inc()
            start = time.perf_counter() if timed else 0.0
            if streamed_request:
                request = _counted(request, m.received)
            else:
                m.received.inc()
            if streamed_response:
                context = _CountingContext(context, m.sent)
            try:
                response = await inner(request, context)
            except BaseException as exc:
                _finish(m, context, exc, start)
                raise
            code = _finish(m, context, None, start)
            if code == "OK" and not streamed_response:
                m.sent.inc()
            return response

        return call

    def _generator(self, inner, m: _Method, streamed_request: bool):
        timed = m.seconds is not None

        async def call(request, context):
            m.started.inc()
            start = time.perf_counter() if timed else 0.0
            if streamed_request:
                request = _counted(request, m.received)
            else:
                m.received.inc()
            try:
                async for item in inner(request, context):
                    m.sent.inc()  # counted as handed to grpc: Go counts a SendMsg that succeeded
                    yield item
            except BaseException as exc:
                _finish(m, context, exc, start)
                raise
            _finish(m, context, None, start)

        return call


def _finish(m: _Method, context, exc: BaseException | None, start: float) -> str:
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        code = "Canceled"
    else:
        status = context.code()
        if status is None or isinstance(status, int):  # never set: OK, or Unknown for an escaped exception
            code = "Unknown" if exc is not None else "OK"
        else:
            code = _GO_CODE.get(status, "Unknown")
    m.handled(code)
    if m.seconds is not None:
        m.seconds.observe(time.perf_counter() - start)
    return code


async def _counted(requests, counter):
    async for request in requests:
        counter.inc()
        yield request


class _CountingContext:
    """The servicer context, counting what a coroutine handler writes to its stream."""

    __slots__ = ("_context", "_sent")

    def __init__(self, context, sent):
        self._context = context
        self._sent = sent

    async def write(self, message) -> None:
        await self._context.write(message)
        self._sent.inc()

    def __getattr__(self, name):
        return getattr(self._context, name)
