"""cgroup v2 statistics into io.containerd.cgroups.v2.Metrics, field for
field as containerd's cgroups/v2 Manager.Stat fills it: cpu.stat,
memory.stat, memory.current/max, memory.swap.current/max, pids.current/max,
memory.events, io.stat, rdma.current/max and the hugetlb files.

A file that is absent reads as zero (the controller is not enabled for this
cgroup), as in containerd. One difference: containerd reads cpu.stat only
when `cpu` is listed in cgroup.controllers, but the kernel always keeps
usage_usec/user_usec/system_usec there, so it is read whenever it exists
(the throttling keys are still only present with the cpu controller).
"""

from __future__ import annotations

import os

from pycontainerd.api.cgroups.v2.stats import metrics_pb2 as pb
from pycontainerd.pkg import errdefs

from .v1 import parse_uint, rdma_entries

U64_MAX = (1 << 64) - 1


def _value(text: str) -> int | str:
    """A number, or the text itself (`max`, or what is not a number)."""
    try:
        return parse_uint(text)
    except ValueError:
        return text


def read_kv(path: str) -> dict[str, int | str]:
    """A flat keyed file (`key value` lines); FileNotFoundError if absent."""
    out: dict[str, int | str] = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"error while parsing {path} (line={line.strip()[:128]!r}): invalid format")
            out[parts[0]] = _value(parts[1])
    return out


def _kv_or_empty(path: str) -> dict[str, int | str]:
    try:
        return read_kv(path)
    except FileNotFoundError:
        return {}


def _u64(values: dict[str, int | str], key: str) -> int:
    v = values.get(key, 0)
    return v if isinstance(v, int) else 0


def _single(path: str) -> int:
    """containerd's getStatFileContentUint64: absent or unreadable 0, `max` the uint64 max."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return 0
    if text == "max":
        return U64_MAX
    try:
        return parse_uint(text)
    except ValueError:
        return 0


def _pid_value(path: str) -> int:
    try:
        with open(path) as f:
            v = _value(f.read().strip())
    except FileNotFoundError:
        return 0
    if isinstance(v, int):
        return v
    return U64_MAX if v == "max" else 0


_MEMORY_KEYS = (
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty",
    "file_writeback", "anon_thp", "inactive_anon", "active_anon", "inactive_file", "active_file",
    "unevictable", "slab_reclaimable", "slab_unreclaimable", "pgfault", "pgmajfault",
    "workingset_refault", "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan",
    "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc",
    "thp_collapse_alloc",
)
_CPU_KEYS = ("usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec")
_MEMORY_EVENT_KEYS = ("low", "high", "max", "oom", "oom_kill")


def read_memory_events(d: str) -> dict[str, int | str]:
    """memory.events of a v2 cgroup ({} when the memory controller is off)."""
    return _kv_or_empty(os.path.join(d, "memory.events"))


def io_entries(d: str) -> list[pb.IOEntry]:
    """io.stat: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. ...` per device."""
    out: list[pb.IOEntry] = []
    try:
        with open(os.path.join(d, "io.stat")) as f:
            text = f.read()
    except OSError:
        return out
    for line in text.split("\n"):
        parts = line.split(" ")
        if len(parts) < 2:
            continue
        majmin = parts[0].split(":")
        if len(majmin) != 2:
            continue
        try:
            entry = pb.IOEntry(major=int(majmin[0]), minor=int(majmin[1]))
        except ValueError:
            return out
        for kv in parts[1:]:
            key, sep, value = kv.partition("=")
            if not sep or not value.isdigit():
                continue
            if key in ("rbytes", "wbytes", "rios", "wios"):
                setattr(entry, key, int(value))
        out.append(entry)
    return out


def _rdma(path: str) -> list[pb.RdmaEntry]:
    try:
        with open(path) as f:
            return rdma_entries(f.read().split("\n"), pb.RdmaEntry)
    except OSError:
        return []


def hugetlb_stats(d: str) -> list[pb.HugeTlbStat]:
    """hugetlb.<size>.current / .max, one entry per page size."""
    by_size: dict[str, pb.HugeTlbStat] = {}
    try:
        names = os.listdir(d)
    except OSError:
        return []
    for name in sorted(names):
        if "hugetlb" not in name or not (name.endswith("max") or name.endswith("current")):
            continue
        parts = name.split(".")
        if len(parts) < 3:
            continue
        entry = by_size.setdefault(parts[1], pb.HugeTlbStat(pagesize=parts[1]))
        value = _single(os.path.join(d, name))
        if parts[2] == "max":
            entry.max = value
        elif parts[2] == "current":
            entry.current = value
    return list(by_size.values())


def stat(d: str) -> pb.Metrics:
    """The v2 Metrics of one unified cgroup directory."""
    if not os.path.isdir(d):
        raise errdefs.NotFound("cgroup deleted")
    cpu = _kv_or_empty(os.path.join(d, "cpu.stat"))
    memory = _kv_or_empty(os.path.join(d, "memory.stat"))
    m = pb.Metrics()
    for part in (m.pids, m.cpu, m.memory, m.io, m.rdma):
        part.SetInParent()  # containerd always sends these, zero when absent
    m.pids.current = _pid_value(os.path.join(d, "pids.current"))
    m.pids.limit = _pid_value(os.path.join(d, "pids.max"))
    for key in _CPU_KEYS:
        setattr(m.cpu, key, _u64(cpu, key))
    for key in _MEMORY_KEYS:
        setattr(m.memory, key, _u64(memory, key))
    m.memory.usage = _single(os.path.join(d, "memory.current"))
    m.memory.usage_limit = _single(os.path.join(d, "memory.max"))
    m.memory.swap_usage = _single(os.path.join(d, "memory.swap.current"))
    m.memory.swap_limit = _single(os.path.join(d, "memory.swap.max"))
    events = read_memory_events(d)
    if events:
        for key in _MEMORY_EVENT_KEYS:
            setattr(m.memory_events, key, _u64(events, key))
    m.io.usage.extend(io_entries(d))
    m.rdma.current.extend(_rdma(os.path.join(d, "rdma.current")))
    m.rdma.limit.extend(_rdma(os.path.join(d, "rdma.max")))
    m.hugetlb.extend(hugetlb_stats(d))
    return m
