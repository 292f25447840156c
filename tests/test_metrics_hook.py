"""The metrics plugin's hook: another plugin gets the metrics plugin through
its InitContext (it is registered first, so it is always initialised
before) and adds a collector; every scrape of /v1/metrics then holds that
plugin's series."""

from __future__ import annotations

import socket
import urllib.request

from pycontainerd.core.registry import PluginType, Registration
from pycontainerd.testing.daemon import InProcessDaemon, plugin_module


class _Tasks:
    """A collector as a monitor plugin would write one."""

    def __init__(self) -> None:
        self.calls = 0

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        self.calls += 1
        family = GaugeMetricFamily("container_example_tasks", "tasks seen by the example monitor",
                                   labels=("namespace",))
        family.add_metric(("default",), 3)
        yield family


def _monitor(seen: dict):
    async def init(ic):
        metrics = ic.get(PluginType.INTERNAL, "metrics")
        seen["enabled"] = metrics.enabled
        collector = _Tasks()
        seen["collector"] = collector
        metrics.register(collector)
        return collector

    # a type of its own: the built-in types may get contracts this stand-in does not meet
    reg = Registration(type="io.example.monitor.v1", id="example", init=init)
    return plugin_module("example_monitor", reg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_plugin_adds_its_collector_to_the_scrape():
    seen: dict = {}
    port = _free_port()
    with InProcessDaemon(plugins=[_monitor(seen)], config={"metrics": {"address": f"127.0.0.1:{port}"}}):
        assert seen["enabled"] is True
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/metrics", timeout=30).read().decode()
    assert 'container_example_tasks{namespace="default"} 3.0' in body.splitlines()
    assert "# HELP container_example_tasks tasks seen by the example monitor" in body
    assert seen["collector"].calls >= 1


def test_without_an_address_nothing_is_served_or_collected():
    seen: dict = {}
    with InProcessDaemon(plugins=[_monitor(seen)]) as d:
        metrics = d.daemon.plugins.get(PluginType.INTERNAL, "metrics")
        assert seen["enabled"] is False and metrics.registry is None and metrics.server_interceptors == ()
    assert seen["collector"].calls == 0
