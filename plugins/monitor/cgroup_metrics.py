"""The Prometheus metrics of containerd 1.6's cgroups monitor
(metrics/cgroups/v1 and v2), named, typed and labelled as containerd
exports them, so dashboards and alerts written for containerd work
unchanged.

A name is `container_<name>_<unit>` (docker/go-metrics' namespace
`container`; no unit suffix when the unit is empty). Every sample carries
`container_id` and `namespace` first, then the metric's own labels (`cpu`,
`page`, `op`/`device`/`major`/`minor`), then the task's extra labels
(`runtime`). All are gauges, as in containerd; the OOM count of cgroup v1
(kept by the OOM watcher, not read from the cgroup) is the one counter,
`container_memory_oom_total`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

NAMESPACE = "container"
ID_LABEL = "container_id"

# a getter returns (value, label values) pairs, [] when the section is absent
Getter = Callable[[Any], list[tuple[float, tuple[str, ...]]]]


@dataclass(frozen=True)
class MetricSpec:
    name: str  # without namespace and unit
    help: str
    unit: str
    labels: tuple[str, ...]
    get: Getter

    @property
    def full_name(self) -> str:
        base = f"{self.name}_{self.unit}" if self.unit else self.name
        return f"{NAMESPACE}_{base}"


def _scalar(section: str, path: str) -> Getter:
    """One value at `section.path` of the Metrics, when `section` is set."""
    parts = path.split(".")

    def get(m: Any) -> list[tuple[float, tuple[str, ...]]]:
        if not m.HasField(section):
            return []
        value: Any = getattr(m, section)
        for p in parts:
            value = getattr(value, p)
        return [(float(value), ())]

    return get


def _m(name: str, help: str, unit: str, section: str, path: str) -> MetricSpec:
    return MetricSpec(name, help, unit, (), _scalar(section, path))


NS, BYTES, TOTAL = "nanoseconds", "bytes", "total"
USEC = "microseconds"


# ---- cgroup v1 (io.containerd.cgroups.v1.Metrics) ----

def _v1_per_cpu(m: Any) -> list[tuple[float, tuple[str, ...]]]:
    if not m.HasField("cpu"):
        return []
    return [(float(v), (str(i),)) for i, v in enumerate(m.cpu.usage.per_cpu)]


def _v1_hugetlb(attr: str) -> Getter:
    def get(m: Any) -> list[tuple[float, tuple[str, ...]]]:
        return [(float(getattr(h, attr)), (h.pagesize,)) for h in m.hugetlb]

    return get


def _v1_blkio(field: str) -> Getter:
    def get(m: Any) -> list[tuple[float, tuple[str, ...]]]:
        if not m.HasField("blkio"):
            return []
        return [(float(e.value), (e.op, e.device, str(e.major), str(e.minor))) for e in getattr(m.blkio, field)]

    return get


# memory.stat's metrics: (metric name, MemoryStat field, help)
_V1_MEMORY_STAT = [
    ("memory_cache", "cache", "The cache amount used"),
    ("memory_rss", "rss", "The rss amount used"),
    ("memory_rss_huge", "rss_huge", "The rss_huge amount used"),
    ("memory_mapped_file", "mapped_file", "The mapped_file amount used"),
    ("memory_dirty", "dirty", "The dirty amount"),
    ("memory_writeback", "writeback", "The writeback amount"),
    ("memory_pgpgin", "pg_pg_in", "The pgpgin amount"),
    ("memory_pgpgout", "pg_pg_out", "The pgpgout amount"),
    ("memory_pgfault", "pg_fault", "The pgfault amount"),
    ("memory_pgmajfault", "pg_maj_fault", "The pgmajfault amount"),
    ("memory_inactive_anon", "inactive_anon", "The inactive_anon amount"),
    ("memory_active_anon", "active_anon", "The active_anon amount"),
    ("memory_inactive_file", "inactive_file", "The inactive_file amount"),
    ("memory_active_file", "active_file", "The active_file amount"),
    ("memory_unevictable", "unevictable", "The unevictable amount"),
    ("memory_hierarchical_memory_limit", "hierarchical_memory_limit", "The hierarchical_memory_limit amount"),
    ("memory_hierarchical_memsw_limit", "hierarchical_swap_limit", "The hierarchical_memsw_limit amount"),
    ("memory_total_cache", "total_cache", "The total_cache amount used"),
    ("memory_total_rss", "total_rss", "The total_rss amount used"),
    ("memory_total_rss_huge", "total_rss_huge", "The total_rss_huge amount used"),
    ("memory_total_mapped_file", "total_mapped_file", "The total_mapped_file amount used"),
    ("memory_total_dirty", "total_dirty", "The total_dirty amount"),
    ("memory_total_writeback", "total_writeback", "The total_writeback amount"),
    ("memory_total_pgpgin", "total_pg_pg_in", "The total_pgpgin amount"),
    ("memory_total_pgpgout", "total_pg_pg_out", "The total_pgpgout amount"),
    ("memory_total_pgfault", "total_pg_fault", "The total_pgfault amount"),
    ("memory_total_pgmajfault", "total_pg_maj_fault", "The total_pgmajfault amount"),
    ("memory_total_inactive_anon", "total_inactive_anon", "The total_inactive_anon amount"),
    ("memory_total_active_anon", "total_active_anon", "The total_active_anon amount"),
    ("memory_total_inactive_file", "total_inactive_file", "The total_inactive_file amount"),
    ("memory_total_active_file", "total_active_file", "The total_active_file amount"),
    ("memory_total_unevictable", "total_unevictable", "The total_unevictable amount"),
]

# the four memory entries: (metric prefix, MemoryStat entry, help word)
_V1_MEMORY_ENTRIES = [
    ("memory_usage", "usage", None),
    ("memory_swap", "swap", "swap"),
    ("memory_kernel", "kernel", "kernel"),
    ("memory_kerneltcp", "kernel_tcp", "kerneltcp"),
]


def _v1_memory_entry_metrics() -> list[MetricSpec]:
    out = []
    for prefix, entry, word in _V1_MEMORY_ENTRIES:
        if word is None:  # the plain entry's help reads differently in containerd
            helps = ("The usage failcnt", "The memory limit", "The memory maximum usage", "The memory usage")
        else:
            helps = (f"The {word} failcnt", f"The {word} limit", f"The {word} maximum usage", f"The {word} usage")
        out += [
            _m(f"{prefix}_failcnt", helps[0], TOTAL, "memory", f"{entry}.failcnt"),
            _m(f"{prefix}_limit", helps[1], BYTES, "memory", f"{entry}.limit"),
            _m(f"{prefix}_max", helps[2], BYTES, "memory", f"{entry}.max"),
            _m(f"{prefix}_usage", helps[3], BYTES, "memory", f"{entry}.usage"),
        ]
    return out


_BLKIO_LABELS = ("op", "device", "major", "minor")

V1_METRICS: list[MetricSpec] = [
    # pids
    _m("pids", "The limit to the number of pids allowed", "limit", "pids", "limit"),
    _m("pids", "The current number of pids", "current", "pids", "current"),
    # cpu
    _m("cpu_total", "The total cpu time", NS, "cpu", "usage.total"),
    _m("cpu_kernel", "The total kernel cpu time", NS, "cpu", "usage.kernel"),
    _m("cpu_user", "The total user cpu time", NS, "cpu", "usage.user"),
    MetricSpec("per_cpu", "The total cpu time per cpu", NS, ("cpu",), _v1_per_cpu),
    _m("cpu_throttle_periods", "The total cpu throttle periods", TOTAL, "cpu", "throttling.periods"),
    _m("cpu_throttled_periods", "The total cpu throttled periods", TOTAL, "cpu", "throttling.throttled_periods"),
    _m("cpu_throttled_time", "The total cpu throttled time", NS, "cpu", "throttling.throttled_time"),
    # memory
    *[_m(name, help, BYTES, "memory", field) for name, field, help in _V1_MEMORY_STAT],
    *_v1_memory_entry_metrics(),
    # hugetlb
    MetricSpec("hugetlb_usage", "The hugetlb usage", BYTES, ("page",), _v1_hugetlb("usage")),
    MetricSpec("hugetlb_failcnt", "The hugetlb failcnt", TOTAL, ("page",), _v1_hugetlb("failcnt")),
    MetricSpec("hugetlb_max", "The hugetlb maximum usage", BYTES, ("page",), _v1_hugetlb("max")),
    # blkio
    MetricSpec("blkio_io_merged_recursive", "The blkio io merged recursive", TOTAL, _BLKIO_LABELS,
               _v1_blkio("io_merged_recursive")),
    MetricSpec("blkio_io_queued_recursive", "The blkio io queued recursive", TOTAL, _BLKIO_LABELS,
               _v1_blkio("io_queued_recursive")),
    MetricSpec("blkio_io_service_bytes_recursive", "The blkio io service bytes recursive", BYTES, _BLKIO_LABELS,
               _v1_blkio("io_service_bytes_recursive")),
    MetricSpec("blkio_io_service_time_recursive", "The blkio io service time recursive", TOTAL, _BLKIO_LABELS,
               _v1_blkio("io_service_time_recursive")),
    MetricSpec("blkio_io_serviced_recursive", "The blkio io serviced recursive", TOTAL, _BLKIO_LABELS,
               _v1_blkio("io_serviced_recursive")),
    MetricSpec("blkio_io_time_recursive", "The blkio io time recursive", TOTAL, _BLKIO_LABELS,
               _v1_blkio("io_time_recursive")),
    MetricSpec("blkio_sectors_recursive", "The blkio sectors recursive", TOTAL, _BLKIO_LABELS,
               _v1_blkio("sectors_recursive")),
]

# the v1 OOM counter (containerd's oomCollector)
V1_OOM_FAMILY = f"{NAMESPACE}_memory_oom"  # prometheus-client adds _total to a counter family's name
V1_OOM_NAME = f"{V1_OOM_FAMILY}_total"
V1_OOM_HELP = "The number of times a container has received an oom event"


# ---- cgroup v2 (io.containerd.cgroups.v2.Metrics) ----

def _v2_io(attr: str) -> Getter:
    def get(m: Any) -> list[tuple[float, tuple[str, ...]]]:
        if not m.HasField("io"):
            return []
        return [(float(getattr(e, attr)), (str(e.major), str(e.minor))) for e in m.io.usage]

    return get


# memory.stat's metrics on v2: (metric name, MemoryStat field); help is "The <key> amount"
_V2_MEMORY_STAT = [
    ("memory_file_mapped", "file_mapped"), ("memory_file_dirty", "file_dirty"),
    ("memory_file_writeback", "file_writeback"), ("memory_pgactivate", "pgactivate"),
    ("memory_pgdeactivate", "pgdeactivate"), ("memory_pgfault", "pgfault"),
    ("memory_pgmajfault", "pgmajfault"), ("memory_pglazyfree", "pglazyfree"),
    ("memory_pgrefill", "pgrefill"), ("memory_pglazyfreed", "pglazyfreed"),
    ("memory_pgscan", "pgscan"), ("memory_pgsteal", "pgsteal"),
    ("memory_inactive_anon", "inactive_anon"), ("memory_active_anon", "active_anon"),
    ("memory_inactive_file", "inactive_file"), ("memory_active_file", "active_file"),
    ("memory_unevictable", "unevictable"), ("memory_anon", "anon"), ("memory_file", "file"),
    ("memory_kernel_stack", "kernel_stack"), ("memory_slab", "slab"), ("memory_sock", "sock"),
    ("memory_shmem", "shmem"), ("memory_anon_thp", "anon_thp"),
    ("memory_slab_reclaimable", "slab_reclaimable"), ("memory_slab_unreclaimable", "slab_unreclaimable"),
    ("memory_workingset_refault", "workingset_refault"), ("memory_workingset_activate", "workingset_activate"),
    ("memory_workingset_nodereclaim", "workingset_nodereclaim"), ("memory_thp_fault_alloc", "thp_fault_alloc"),
    ("memory_thp_collapse_alloc", "thp_collapse_alloc"),
]

V2_METRICS: list[MetricSpec] = [
    # pids
    _m("pids", "The limit to the number of pids allowed (cgroup v2)", "limit", "pids", "limit"),
    _m("pids", "The current number of pids (cgroup v2)", "current", "pids", "current"),
    # cpu
    _m("cpu_usage_usec", "Total cpu usage (cgroup v2)", USEC, "cpu", "usage_usec"),
    _m("cpu_user_usec", "Current cpu usage in user space (cgroup v2)", USEC, "cpu", "user_usec"),
    _m("cpu_system_usec", "Current cpu usage in kernel space (cgroup v2)", USEC, "cpu", "system_usec"),
    _m("cpu_nr_periods", "Current cpu number of periods (only if controller is enabled)", TOTAL, "cpu",
       "nr_periods"),
    _m("cpu_nr_throttled", "Total number of times tasks have been throttled (only if controller is enabled)",
       TOTAL, "cpu", "nr_throttled"),
    _m("cpu_throttled_usec",
       "Total time duration for which tasks have been throttled. (only if controller is enabled)", USEC, "cpu",
       "throttled_usec"),
    # memory
    _m("memory_usage", "Current memory usage (cgroup v2)", BYTES, "memory", "usage"),
    _m("memory_usage_limit", "Current memory usage limit (cgroup v2)", BYTES, "memory", "usage_limit"),
    _m("memory_swap_usage", "Current swap usage (cgroup v2)", BYTES, "memory", "swap_usage"),
    _m("memory_swap_limit", "Current swap usage limit (cgroup v2)", BYTES, "memory", "swap_limit"),
    *[_m(name, f"The {name[len('memory_'):]} amount", BYTES, "memory", field) for name, field in _V2_MEMORY_STAT],
    _m("memory_oom", "The number of times a container has received an oom event", TOTAL, "memory_events", "oom"),
    # io
    MetricSpec("io_rbytes", "IO bytes read", BYTES, ("major", "minor"), _v2_io("rbytes")),
    MetricSpec("io_wbytes", "IO bytes written", BYTES, ("major", "minor"), _v2_io("wbytes")),
    MetricSpec("io_rios", "Number of read IOs", TOTAL, ("major", "minor"), _v2_io("rios")),
    MetricSpec("io_wios", "Number of write IOs", TOTAL, ("major", "minor"), _v2_io("wios")),
]
