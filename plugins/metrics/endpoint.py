"""io.containerd.internal.v1.metrics: the daemon's Prometheus registry and
containerd's `[metrics]` endpoint.

With `[metrics] address = "host:port"` it serves `/v1/metrics` there in
Prometheus' text format (prometheus-client writes it), holding what
containerd's endpoint holds by default: the process collector's process_*
series (containerd gets them from the Go client's default registry; Go's
go_* runtime series become prometheus-client's python_gc_* and python_info),
containerd_build_info_total{revision,version}, and go-grpc-prometheus's
gRPC request counters (grpc_histogram = true adds the latency histogram), as
containerd counts them whenever it serves metrics (grpcmetrics.py).

Other plugins add their own series to the same registry (the one hook):

    metrics = ic.get(PluginType.INTERNAL, "metrics")   # in their init
    metrics.register(collector)                        # a prometheus-client collector

This plugin is the first of plugins/builtins.py MODULES and requires
nothing, so containerd's graph walk initialises it before every other
plugin: no `requires` is needed (and requiring the whole internal type
would be fragile: containerd's restart plugin requires the services, and
its tasks service requires the monitors).

`register` keeps the collector for every scrape; when no address is set it
is not kept (nothing is served, and prometheus-client is never imported:
`metrics.enabled` says which, so a plugin can skip building one). Collectors
are called in a worker thread at scrape time, so a `collect` may read files.
"""

from __future__ import annotations

from typing import Any, Iterable

import structlog

from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl

log = structlog.get_logger(__name__)

PATH = "/v1/metrics"


class Metrics:
    """The registry (None when not serving), its endpoint, and the gRPC
    interceptor the daemon puts on its server (`server_interceptors`)."""

    def __init__(self) -> None:
        self.enabled = False
        self.registry: Any = None
        self.address = ""  # host:port actually bound (a port of 0 is resolved)
        self.server_interceptors: tuple = ()
        self._server: Any = None

    def register(self, collector: Any) -> None:
        """Add a prometheus-client collector (an object with `collect()`
        yielding metric families) to what every scrape returns."""
        if self.registry is not None:
            self.registry.register(collector)

    async def serve(self, address: str, grpc_histogram: bool) -> None:
        import prometheus_client
        from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

        from pycontainerd.pkg import httpserve

        from .grpcmetrics import GrpcServerMetrics

        host, port = httpserve.split_host_port(address)  # ValueError names the address
        # Go's client writes no *_created series; dashboards expect none
        prometheus_client.disable_created_metrics()
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(_BuildInfo())
        grpc_metrics = GrpcServerMetrics(registry, histogram=grpc_histogram)

        async def handle(request: httpserve.Request) -> httpserve.Response:
            if request.path != PATH:
                return httpserve.text(404, "404 page not found")
            if request.method not in ("GET", "HEAD"):
                return httpserve.text(405, "method not allowed")
            import asyncio

            body = await asyncio.to_thread(prometheus_client.generate_latest, registry)
            return httpserve.Response(200, body, content_type=prometheus_client.CONTENT_TYPE_LATEST)

        try:
            self._server = await httpserve.serve(handle, host=host, port=port)
        except OSError as exc:
            import os

            reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's strerror repeats the address
            raise RuntimeError(f"failed to get listener for metrics endpoint: {address}: {reason.lower()}") from None
        bound = self._server.sockets[0].getsockname()
        self.address = f"{bound[0]}:{bound[1]}"
        self.registry = registry
        self.server_interceptors = (grpc_metrics,)
        self.enabled = True
        log.info("serving metrics", address=self.address, path=PATH, grpc_histogram=grpc_histogram)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None


class _BuildInfo:
    """containerd_build_info_total{revision,version} 1, as containerd's
    metrics package registers it."""

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        from pycontainerd.core import version

        family = CounterMetricFamily("containerd_build_info", "containerd build information",
                                     labels=("revision", "version"))
        family.add_metric((version.revision(), version.VERSION), 1)
        yield family


async def init(ic: InitContext) -> Metrics:
    metrics = Metrics()
    cfg = getattr(ic.daemon_config, "metrics", None)
    if cfg is not None and cfg.address:
        await metrics.serve(cfg.address, cfg.grpc_histogram)
    return metrics


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.INTERNAL, id="metrics", init=init)]
