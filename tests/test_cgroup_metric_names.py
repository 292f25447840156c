"""The cgroups monitor's Prometheus metrics are containerd's: every name,
help text, unit and label list of containerd 1.6's metrics/cgroups v1 and
v2 (read from Debian's Go source of containerd), in containerd's order,
and nothing else. Also the OOM watcher's v2 logic (a rise of memory.events'
oom_kill is one OOM) where this host has no v2 memory controller to
exercise it."""

from __future__ import annotations

import asyncio
import os
import re

import pytest

from pycontainerd.pkg.cgroups import TaskCgroup
from pycontainerd.pkg.cgroups.oom import OOMWatcher
from pycontainerd.plugins.monitor import cgroup_metrics as names
from pycontainerd.plugins.monitor.cgroups import CgroupsMonitor

GO = "/usr/share/gocode/src/github.com/containerd/containerd/metrics/cgroups"
UNITS = {"Nanoseconds": "nanoseconds", "Seconds": "seconds", "Bytes": "bytes", "Total": "total"}
ENTRY = re.compile(
    r'name:\s*"(?P<name>[^"]+)",\s*help:\s*"(?P<help>[^"]*)",\s*'
    r'unit:\s*metrics\.(?:Unit\("(?P<custom>[^"]*)"\)|(?P<unit>\w+)),\s*'
    r'vt:\s*prometheus\.\w+,\s*(?:labels:\s*\[\]string\{(?P<labels>[^}]*)\},\s*)?'
)


def containerd_metrics(version: str, files: list[str]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    out = []
    for file in files:
        with open(os.path.join(GO, version, file)) as f:
            text = f.read()
        for m in ENTRY.finditer(text):
            unit = m.group("custom") if m.group("custom") is not None else UNITS[m.group("unit")]
            labels = tuple(x.strip().strip('"') for x in (m.group("labels") or "").split(",") if x.strip())
            out.append((m.group("name"), m.group("help"), unit, labels))
    return out


def ours(specs) -> list[tuple[str, str, str, tuple[str, ...]]]:
    return [(s.name, s.help, s.unit, s.labels) for s in specs]


needs_go_source = pytest.mark.skipif(not os.path.isdir(GO), reason="containerd's Go source is not installed")


@needs_go_source
def test_v1_metrics_are_containerds():
    # the collector's order: pids, cpu, memory, hugetlb, blkio
    expected = containerd_metrics("v1", ["pids.go", "cpu.go", "memory.go", "hugetlb.go", "blkio.go"])
    assert len(expected) > 60
    assert ours(names.V1_METRICS) == expected


@needs_go_source
def test_v2_metrics_are_containerds():
    expected = containerd_metrics("v2", ["pids.go", "cpu.go", "memory.go", "io.go"])
    assert len(expected) > 40
    assert ours(names.V2_METRICS) == expected


@needs_go_source
def test_v1_oom_counter_is_containerds():
    with open(os.path.join(GO, "v1", "oom.go")) as f:
        text = f.read()
    assert f'ns.NewDesc("memory_oom", "{names.V1_OOM_HELP}", metrics.Total, "container_id", "namespace")' in text
    assert names.V1_OOM_NAME == "container_memory_oom_total"


def test_full_names_follow_go_metrics():
    by_name = {s.full_name for s in names.V1_METRICS}
    for name in ("container_cpu_total_nanoseconds", "container_memory_usage_usage_bytes", "container_pids_current",
                 "container_pids_limit", "container_per_cpu_nanoseconds", "container_blkio_io_serviced_recursive_total",
                 "container_hugetlb_usage_bytes", "container_memory_kerneltcp_failcnt_total"):
        assert name in by_name
    v2 = {s.full_name for s in names.V2_METRICS}
    assert {"container_cpu_usage_usec_microseconds", "container_memory_usage_bytes", "container_io_rbytes_bytes",
            "container_memory_oom_total"} <= v2


def test_no_prometheus_leaves_no_collector():
    async def main():
        from pycontainerd.pkg.cgroups import Mode

        m = CgroupsMonitor(events=None, host_mode=Mode.HYBRID, no_prometheus=True)
        try:
            return m.collector
        finally:
            m.close()

    assert asyncio.run(main()) is None


def test_v2_oom_watch_counts_rises_of_oom_kill(tmp_path):
    """The watcher's v2 side on files written as the kernel writes them
    (this host's unified hierarchy has no memory controller): inotify sees
    memory.events change, a rise of oom_kill is that many OOMs, a change
    of another key is none, and a removed cgroup ends the watch."""
    d = tmp_path / "cg"
    d.mkdir()
    events = d / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    (d / "cgroup.events").write_text("populated 1\nfrozen 0\n")

    async def main():
        watcher = OOMWatcher()
        calls = []
        got = asyncio.Event()

        def on_oom():
            calls.append(1)
            got.set()

        assert await watcher.add("t-ns", TaskCgroup(version=2, v2_dir=str(d)), on_oom)
        events.write_text("low 0\nhigh 0\nmax 5\noom 0\noom_kill 0\n")  # pressure, no kill
        events.write_text("low 0\nhigh 0\nmax 6\noom 1\noom_kill 1\n")
        await asyncio.wait_for(got.wait(), 30)
        got.clear()
        events.write_text("low 0\nhigh 0\nmax 9\noom 3\noom_kill 3\n")
        while watcher.count("t-ns") < 3:
            await asyncio.wait_for(got.wait(), 30)
            got.clear()
        count = watcher.count("t-ns")
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
        for _ in range(300):  # the watch ends on its own once the cgroup is gone
            if watcher.count("t-ns") is None:
                break
            await asyncio.sleep(0.1)
        ended = watcher.count("t-ns") is None
        watcher.close()
        return calls, count, ended

    calls, count, ended = asyncio.run(main())
    assert count == 3 and len(calls) == 3
    assert ended


def test_v2_cgroup_without_memory_controller_is_not_watched(tmp_path):
    async def main():
        watcher = OOMWatcher()
        try:
            return await watcher.add("t-ns", TaskCgroup(version=2, v2_dir=str(tmp_path)), lambda: None)
        finally:
            watcher.close()

    assert asyncio.run(main()) is False
