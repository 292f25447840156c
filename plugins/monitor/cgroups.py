"""io.containerd.monitor.v1.cgroups: containerd 1.6's metrics/cgroups.

For every task the Tasks service hands it (pkg.monitor.TaskInfo), the
monitor finds the task's cgroup once (pkg.cgroups.load: from its pid, else
its cgroupsPath) and
- exports the cgroup's statistics to Prometheus with containerd's names
  and labels (plugins/monitor/cgroup_metrics.py), read at every scrape;
- watches it for OOM (when the task asks for it: see pkg/monitor.py) and
  publishes `/tasks/oom` (containerd.events.TaskOOM) on the exchange.

The hierarchy is detected at init: cgroup v2 metrics on a unified host,
v1 metrics otherwise (hybrid included), as containerd chooses; a host
without cgroups skips the plugin.

`collector` is a prometheus-client collector: register it on the
[metrics] endpoint's registry (`registry.register(monitor.collector)`); it
is None with `no_prometheus = true`. Its `collect()` reads cgroup files,
so the endpoint calls it off the event loop (generate_latest in a thread).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import structlog

from pycontainerd.core.context import InitContext, SkipPlugin
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import errdefs, platforms
from pycontainerd.pkg.monitor import TaskInfo

from . import cgroup_metrics as names

log = structlog.get_logger(__name__)

TASK_OOM_TOPIC = "/tasks/oom"


@dataclass
class Config:
    """[plugins."io.containerd.monitor.v1.cgroups"], containerd's key."""

    # export no Prometheus metrics (OOM events are still published)
    no_prometheus: bool = False


@dataclass(frozen=True)
class _Entry:
    namespace: str
    id: str
    labels: dict[str, str]
    cgroup: Any  # pkg.cgroups.TaskCgroup


def task_key(namespace: str, task_id: str) -> str:
    """containerd's collector key, `<id>-<namespace>`."""
    return f"{task_id}-{namespace}"


class CgroupsCollector:
    """The Prometheus side: a prometheus-client custom collector over the
    monitored tasks. Thread-safe: tasks are added and removed on the loop
    while a scrape reads them in a worker thread."""

    def __init__(self, version: int, oom_counts: Any = None):
        self.version = version
        self.specs = names.V2_METRICS if version == 2 else names.V1_METRICS
        self._oom_counts = oom_counts  # () -> [(namespace, id, labels, count)], v1 only
        self._lock = threading.Lock()
        self._tasks: dict[str, _Entry] = {}

    def add(self, key: str, entry: _Entry) -> None:
        with self._lock:
            self._tasks.setdefault(key, entry)

    def remove(self, key: str) -> None:
        with self._lock:
            self._tasks.pop(key, None)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._tasks

    def _families(self) -> dict[tuple[str, str], Any]:
        from prometheus_client.core import Metric

        families: dict[tuple[str, str], Any] = {}
        for spec in self.specs:
            families[(spec.full_name, spec.help)] = Metric(spec.full_name, spec.help, "gauge")
        if self.version == 1:
            families[(names.V1_OOM_NAME, names.V1_OOM_HELP)] = Metric(names.V1_OOM_FAMILY, names.V1_OOM_HELP, "counter")
        return families

    def describe(self) -> Iterator[Any]:
        """The metric families without samples (what the registry checks for clashes)."""
        return iter(self._families().values())

    def collect(self) -> Iterator[Any]:
        families = self._families()
        with self._lock:
            entries = list(self._tasks.values())
        for entry in entries:
            try:
                stats = entry.cgroup.stat()
            except (errdefs.ContainerdError, OSError, ValueError) as exc:
                log.error("stat task", id=entry.id, namespace=entry.namespace, error=str(exc))
                continue
            base = {names.ID_LABEL: entry.id, "namespace": entry.namespace}
            for spec in self.specs:
                family = families[(spec.full_name, spec.help)]
                for value, label_values in spec.get(stats):
                    labels = {**base, **dict(zip(spec.labels, label_values)), **entry.labels}
                    family.add_sample(spec.full_name, labels, value)
        if self.version == 1 and self._oom_counts is not None:
            family = families[(names.V1_OOM_NAME, names.V1_OOM_HELP)]
            for namespace, task_id, labels, count in self._oom_counts():
                family.add_sample(names.V1_OOM_NAME, {names.ID_LABEL: task_id, "namespace": namespace, **labels},
                                  float(count))
        # a family without samples is left out, as the Go client does
        return iter([f for f in families.values() if f.samples])


class CgroupsMonitor:
    """The plugin's instance: a pkg.monitor.TaskMonitor."""

    def __init__(self, events: Any, host_mode: Any, no_prometheus: bool):
        from pycontainerd.pkg.cgroups import Mode
        from pycontainerd.pkg.cgroups.oom import OOMWatcher

        self._events = events
        self.mode = host_mode
        self.version = 2 if host_mode is Mode.UNIFIED else 1
        self._oom = OOMWatcher()
        self._watched: dict[str, tuple[str, str, dict[str, str]]] = {}  # key -> (namespace, id, labels)
        self._cgroups: dict[str, Any] = {}
        self.collector: CgroupsCollector | None = (
            None if no_prometheus else CgroupsCollector(self.version, self._oom_counts))

    def _oom_counts(self) -> list[tuple[str, str, dict[str, str], int]]:
        counts = self._oom.counts()
        return [(ns, tid, labels, counts[key]) for key, (ns, tid, labels) in list(self._watched.items())
                if key in counts]

    async def monitor(self, info: TaskInfo) -> None:
        from pycontainerd.pkg import cgroups

        key = task_key(info.namespace, info.id)
        if key in self._cgroups:
            return  # monitoring is idempotent
        try:
            cg = await asyncio.to_thread(cgroups.load, pid=info.pid or None, cgroups_path=info.cgroups_path,
                                         host_mode=self.mode)
        except errdefs.NotFound as exc:
            # the task is already gone (or never had a cgroup): nothing to watch
            log.warning("task cgroup not found", namespace=info.namespace, id=info.id, error=str(exc))
            return
        if key in self._cgroups:
            return
        self._cgroups[key] = cg
        labels = dict(info.labels)
        if self.collector is not None:
            self.collector.add(key, _Entry(info.namespace, info.id, labels, cg))
        if info.watch_oom:
            try:
                watching = await self._oom.add(key, cg, lambda: self._trigger(info.namespace, info.id))
            except OSError as exc:
                log.warning("OOM monitoring failed", namespace=info.namespace, id=info.id, error=str(exc))
                watching = False
            if watching:
                self._watched[key] = (info.namespace, info.id, labels)
            else:
                log.warning("OOM monitoring failed: no memory controller", namespace=info.namespace, id=info.id)
        log.debug("monitoring task", namespace=info.namespace, id=info.id, cgroup_version=cg.version)

    async def stop(self, info: TaskInfo) -> None:
        key = task_key(info.namespace, info.id)
        self._cgroups.pop(key, None)
        self._watched.pop(key, None)
        self._oom.remove(key)
        if self.collector is not None:
            self.collector.remove(key)

    def _trigger(self, namespace: str, task_id: str) -> None:
        """An OOM in a task's cgroup: publish containerd's TaskOOM event."""
        from pycontainerd.api.events import task_pb2

        log.info("task oom", namespace=namespace, id=task_id)
        try:
            self._events.publish(namespace, TASK_OOM_TOPIC, task_pb2.TaskOOM(container_id=task_id))
        except Exception as exc:
            log.error("post OOM event", namespace=namespace, id=task_id, error=str(exc))

    def close(self) -> None:
        self._oom.close()


async def init(ic: InitContext) -> CgroupsMonitor:
    from pycontainerd.pkg import cgroups

    host_mode = await asyncio.to_thread(cgroups.mode)
    if host_mode is cgroups.Mode.UNAVAILABLE:
        raise SkipPlugin("no cgroup hierarchy mounted at /sys/fs/cgroup")
    events = ic.get(PluginType.EVENT)
    monitor = CgroupsMonitor(events, host_mode, ic.config.no_prometheus)
    try:  # the [metrics] endpoint, always initialised first (plugins/builtins.py)
        endpoint = ic.get(PluginType.INTERNAL, "metrics")
    except errdefs.ContainerdError:
        endpoint = None
    if monitor.collector is not None and endpoint is not None and endpoint.enabled:
        endpoint.register(monitor.collector)
    ic.meta.platforms.append(platforms.default_string())
    return monitor


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.TASK_MONITOR, id="cgroups", init=init,
                         requires=(PluginType.EVENT,), config=Config)]
