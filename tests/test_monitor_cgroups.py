"""io.containerd.monitor.v1.cgroups in a real daemon, on real cgroups.

The test makes a cgroup, moves processes it starts into it, hands the
daemon's monitor a TaskInfo the way the Tasks service does, and checks
- the Prometheus output of the monitor's collector (registered on a
  prometheus-client registry, as the [metrics] endpoint registers it):
  containerd's names, types, help and labels, and values that move (CPU
  nanoseconds grow, memory usage covers what the child holds, the pid
  count is the child's processes and threads);
- an OOM kill in a cgroup with a small limit reaching clients as
  containerd's `/tasks/oom` TaskOOM event, through the Events service.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cgroup_support import BURN, Cgroup, hold, poll, v1_available, v2_mount
from pycontainerd.api.events import task_pb2
from pycontainerd.core.registry import PluginType
from pycontainerd.pkg.monitor import TaskInfo
from pycontainerd.testing.daemon import InProcessDaemon

MiB = 1 << 20
RUNTIME = "io.containerd.runc.v2"


@pytest.fixture(scope="module")
def daemon():
    d = InProcessDaemon().start()
    try:
        yield d
    finally:
        d.stop()


def on_loop(d: InProcessDaemon, coro):
    return asyncio.run_coroutine_threadsafe(coro, d._loop).result(60)


@pytest.fixture
def monitor(daemon):
    return daemon.daemon.plugins.get(PluginType.TASK_MONITOR, "cgroups")


@pytest.fixture
def cg(monitor):
    if monitor.version == 1 and not v1_available():
        pytest.skip("cgroup v1 mode without the controllers this test uses")
    if monitor.version == 2 and v2_mount() != "/sys/fs/cgroup":
        pytest.skip("no unified hierarchy")
    group = Cgroup(monitor.version)
    try:
        yield group
    finally:
        group.remove()


def scrape(registry: CollectorRegistry) -> tuple[str, dict[str, list]]:
    text = generate_latest(registry).decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)
    return text, samples


def value(samples: dict[str, list], name: str, task_id: str, **labels: str) -> float | None:
    for s in samples.get(name, []):
        if s.labels.get("container_id") == task_id and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def test_plugin_loads_with_the_host_platform(daemon):
    with daemon.client() as client:
        rows = {p.uri: p for p in client.plugins()}
    row = rows["io.containerd.monitor.v1.cgroups"]
    assert row.status == "ok"


def test_prometheus_output_of_a_monitored_task(daemon, monitor, cg):
    holder = cg.start(hold(64, threads=2))
    assert holder.stdout.readline() == "ready\n"
    cg.start(BURN)
    task_id = f"metrics-{os.getpid()}"
    info = TaskInfo(namespace="default", id=task_id, pid=holder.pid, labels={"runtime": RUNTIME}, watch_oom=False)
    on_loop(daemon, monitor.monitor(info))
    on_loop(daemon, monitor.monitor(info))  # idempotent: still one series per metric
    registry = CollectorRegistry()
    registry.register(monitor.collector)  # what the [metrics] endpoint does
    try:
        if monitor.version == 1:
            cpu, memory, pids = "container_cpu_total_nanoseconds", "container_memory_usage_usage_bytes", "container_pids_current"
        else:
            cpu, memory, pids = "container_cpu_usage_usec_microseconds", "container_memory_usage_bytes", "container_pids_current"
        text, samples = scrape(registry)
        assert f"# TYPE {cpu} gauge" in text
        if monitor.version == 1:
            assert "# HELP container_memory_usage_usage_bytes The memory usage\n" in text
            assert "# HELP container_cpu_total_nanoseconds The total cpu time\n" in text
            assert value(samples, "container_per_cpu_nanoseconds", task_id, cpu="0") is not None
        labels = {"namespace": "default", "runtime": RUNTIME}
        assert len([s for s in samples[cpu] if s.labels["container_id"] == task_id]) == 1
        # on v2 a controller is there only if delegated to the test's cgroup
        controllers = cg.read("", "cgroup.controllers").split() if monitor.version == 2 else ["memory", "pids"]
        if "memory" in controllers:
            assert value(samples, memory, task_id, **labels) >= 64 * MiB
        if "pids" in controllers:
            assert value(samples, pids, task_id, **labels) == 4  # holder, its two threads, the burner
        first = value(samples, cpu, task_id, **labels)
        poll(lambda: value(scrape(registry)[1], cpu, task_id, **labels) > first)

        on_loop(daemon, monitor.stop(info))
        text, samples = scrape(registry)
        assert value(samples, cpu, task_id) is None
        assert task_id not in text
    finally:
        registry.unregister(monitor.collector)


def test_a_task_already_gone_is_not_exported(daemon, monitor, cg):
    p = cg.start("pass\n")
    p.wait()
    info = TaskInfo(namespace="default", id=f"gone-{os.getpid()}", pid=p.pid)
    on_loop(daemon, monitor.monitor(info))  # no error: there is nothing to watch
    registry = CollectorRegistry()
    registry.register(monitor.collector)
    try:
        assert info.id not in scrape(registry)[0]
    finally:
        registry.unregister(monitor.collector)
        on_loop(daemon, monitor.stop(info))


def test_oom_kill_is_published_as_task_oom(daemon, monitor, cg):
    if monitor.version == 1:
        cg.write("memory", "memory.limit_in_bytes", str(32 * MiB))
        if os.path.exists(os.path.join(cg.dirs["memory"], "memory.memsw.limit_in_bytes")):
            cg.write("memory", "memory.memsw.limit_in_bytes", str(32 * MiB))
    else:
        if "memory" not in cg.read("", "cgroup.controllers").split():
            pytest.skip("no memory controller delegated to the test's cgroup")
        cg.write("", "memory.max", str(32 * MiB))
        if os.path.exists(os.path.join(cg.dirs[""], "memory.swap.max")):
            cg.write("", "memory.swap.max", "0")
    init = cg.start(hold(1))
    assert init.stdout.readline() == "ready\n"
    task_id = f"oom-{os.getpid()}"
    info = TaskInfo(namespace="default", id=task_id, pid=init.pid, labels={"runtime": RUNTIME})
    on_loop(daemon, monitor.monitor(info))

    events: queue.Queue = queue.Queue()
    client = daemon.client()
    subscribers = daemon.daemon.events.subscriber_count

    def listen():
        for envelope in client.subscribe('topic=="/tasks/oom"'):
            events.put(envelope)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        poll(lambda: daemon.daemon.events.subscriber_count > subscribers)
        hog = cg.start(hold(256))  # far over the limit: the kernel kills it
        envelope = events.get(timeout=60)
        assert hog.wait(60) == -9
        assert envelope.topic == "/tasks/oom" and envelope.namespace == "default"
        assert envelope.event.type_url == "containerd.events.TaskOOM"
        assert task_pb2.TaskOOM.FromString(envelope.event.value).container_id == task_id
        assert init.poll() is None  # the small process lives on

        registry = CollectorRegistry()
        registry.register(monitor.collector)
        try:
            text, samples = scrape(registry)
            assert value(samples, "container_memory_oom_total", task_id, namespace="default", runtime=RUNTIME) == 1
            if monitor.version == 1:  # the one counter, named as containerd's
                assert "# TYPE container_memory_oom_total counter\n" in text
        finally:
            registry.unregister(monitor.collector)
    finally:
        on_loop(daemon, monitor.stop(info))
        client.close()
        listener.join(10)
