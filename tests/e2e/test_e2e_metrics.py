"""The [metrics] endpoint: /v1/metrics in Prometheus' text format, with
go-grpc-prometheus's gRPC counters moving by what the clients did, the
histogram with grpc_histogram = true, and the process_* series."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import grpc
import pytest
from google.protobuf import empty_pb2
from prometheus_client.parser import text_string_to_metric_families

from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc

pytestmark = pytest.mark.e2e

VERSION = ("Version", "containerd.services.version.v1.Version", "unary")
NS_GET = ("Get", "containerd.services.namespaces.v1.Namespaces", "unary")
CONTENT_LIST = ("List", "containerd.services.content.v1.Content", "server_stream")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics_daemon(daemon, histogram: bool):
    address = f"127.0.0.1:{_free_port()}"
    proc = daemon(config={"metrics": {"address": address, "grpc_histogram": histogram}})
    proc.metrics_url = f"http://{address}/v1/metrics"
    return proc


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _labels(method: tuple[str, str, str], **more: str) -> tuple:
    name, service, kind = method
    return tuple(sorted({"grpc_method": name, "grpc_service": service, "grpc_type": kind, **more}.items()))


def _delta(before: dict, after: dict, name: str, labels: tuple) -> float:
    return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)


def _requests(address: str) -> int:
    """5 Versions (OK), 3 Gets of a namespace that is not there (NotFound),
    one content List (a server stream); returns how many List answers came."""
    with grpc.insecure_channel("unix:" + address) as ch:
        version = version_pb2_grpc.VersionStub(ch)
        for _ in range(5):
            version.Version(empty_pb2.Empty(), timeout=10)
        namespaces = namespace_pb2_grpc.NamespacesStub(ch)
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as err:
                namespaces.Get(namespace_pb2.GetNamespaceRequest(name="nowhere"), timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        content = content_pb2_grpc.ContentStub(ch)
        answers = list(content.List(content_pb2.ListContentRequest(), timeout=10,
                                    metadata=(("containerd-namespace", "default"),)))
    return len(answers)


def test_grpc_counters_move_by_what_clients_did(daemon):
    d = _metrics_daemon(daemon, histogram=True)
    before = _scrape(d.metrics_url)
    listed = _requests(d.address)
    after = _scrape(d.metrics_url)

    def delta(name, method, **more):
        return _delta(before, after, name, _labels(method, **more))

    assert delta("grpc_server_started_total", VERSION) == 5
    assert delta("grpc_server_handled_total", VERSION, grpc_code="OK") == 5
    assert delta("grpc_server_msg_received_total", VERSION) == 5
    assert delta("grpc_server_msg_sent_total", VERSION) == 5
    assert delta("grpc_server_handling_seconds_count", VERSION) == 5
    assert delta("grpc_server_handling_seconds_bucket", VERSION, le="+Inf") == 5
    assert after[("grpc_server_handling_seconds_sum", _labels(VERSION))] > 0

    assert delta("grpc_server_started_total", NS_GET) == 3
    assert delta("grpc_server_handled_total", NS_GET, grpc_code="NotFound") == 3
    assert delta("grpc_server_handled_total", NS_GET, grpc_code="OK") == 0
    assert delta("grpc_server_msg_received_total", NS_GET) == 3
    assert delta("grpc_server_msg_sent_total", NS_GET) == 0  # a failed unary call sends nothing

    assert delta("grpc_server_started_total", CONTENT_LIST) == 1
    assert delta("grpc_server_handled_total", CONTENT_LIST, grpc_code="OK") == 1
    assert delta("grpc_server_msg_received_total", CONTENT_LIST) == 1
    assert delta("grpc_server_msg_sent_total", CONTENT_LIST) == listed

    # Go's DefBuckets, as go-grpc-prometheus uses them
    les = sorted(float(dict(labels)["le"]) for (name, labels) in after
                 if name == "grpc_server_handling_seconds_bucket" and dict(labels)["grpc_method"] == "Version")
    assert les[:3] == [0.005, 0.01, 0.025] and les[-1] == float("inf")


def test_default_series_and_no_histogram_without_grpc_histogram(daemon):
    d = _metrics_daemon(daemon, histogram=False)
    _requests(d.address)
    after = _scrape(d.metrics_url)
    names = {name for name, _ in after}
    assert not any(n.startswith("grpc_server_handling_seconds") for n in names)
    assert after[("grpc_server_started_total", _labels(VERSION))] >= 5
    # what containerd's endpoint holds besides: its build info, the process_* series
    assert [v for (n, labels), v in after.items() if n == "containerd_build_info_total"] == [1.0]
    for series in ("process_open_fds", "process_max_fds", "process_resident_memory_bytes",
                   "process_virtual_memory_bytes", "process_start_time_seconds", "process_cpu_seconds_total"):
        assert after[(series, ())] > 0, series
    assert not any(n.endswith("_created") for n in names)  # Go's client writes none
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(d.metrics_url.replace("/v1/metrics", "/metrics"), timeout=30)
    assert err.value.code == 404


def test_a_busy_port_is_an_error_row_and_the_daemon_serves(daemon):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "127.0.0.1:%d" % taken.getsockname()[1]
        d = daemon(config={"metrics": {"address": address}})
        rows = [line for line in d.ctr("plugins", "ls").stdout.decode().splitlines() if "metrics" in line]
        assert len(rows) == 1 and rows[0].split()[:2] == ["io.containerd.internal.v1", "metrics"]
        assert rows[0].split()[-1] == "error"
        assert f"failed to get listener for metrics endpoint: {address}: address already in use" in d.log()
