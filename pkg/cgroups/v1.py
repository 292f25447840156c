"""cgroup v1 statistics into io.containerd.cgroups.v1.Metrics, field for
field as containerd's cgroups library fills it: cpu (cpu.stat throttling),
cpuacct (usage, user/kernel from cpuacct.stat in clock ticks, per cpu),
memory (memory.stat's keys, oom_control, and the usage/max/failcnt/limit
of plain, memsw, kmem and kmem.tcp), pids, blkio (the *_recursive files,
or the throttle files where those are empty), hugetlb and rdma.

Like the runc shim's Stat(IgnoreNotExist), a file that does not exist ends
that controller's part quietly (what was read before it stays): kernels
differ in what they offer (no swap accounting, no kmem, no hugetlb). Any
other error (a malformed file) is raised.
"""

from __future__ import annotations

import os
import re

from pycontainerd.api.cgroups.stats.v1 import metrics_pb2 as pb
from pycontainerd.pkg import errdefs

NANOSECONDS_IN_SECOND = 1_000_000_000
_U64_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


CLOCK_TICKS = _clock_ticks()


def parse_uint(text: str) -> int:
    """containerd's parseUint: a uint64; a negative number reads as 0."""
    text = text.strip()
    try:
        value = int(text, 10)
    except ValueError:
        raise ValueError(f"invalid number {text[:64]!r}") from None
    if value < 0:
        return 0
    if value > _U64_MAX:
        raise ValueError(f"value out of range {text[:64]!r}")
    return value


def read_uint(path: str) -> int:
    with open(path) as f:
        return parse_uint(f.read())


def parse_kv(line: str) -> tuple[str, int]:
    parts = line.split()
    if len(parts) != 2:
        raise ValueError(f"invalid format {line[:128]!r}")
    return parts[0], parse_uint(parts[1])


def read_kv(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(path) as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            try:
                key, value = parse_kv(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: {exc}") from None
            out[key] = value
    return out


def stat_cpu(d: str, m: pb.Metrics) -> None:
    for key, value in read_kv(os.path.join(d, "cpu.stat")).items():
        if key == "nr_periods":
            m.cpu.throttling.periods = value
        elif key == "nr_throttled":
            m.cpu.throttling.throttled_periods = value
        elif key == "throttled_time":
            m.cpu.throttling.throttled_time = value


def stat_cpuacct(d: str, m: pb.Metrics) -> None:
    path = os.path.join(d, "cpuacct.stat")
    with open(path) as f:
        fields = f.read().split()
    if len(fields) != 4:
        raise ValueError(f"{path} is expected to have 4 fields")
    if fields[0] != "user" or fields[2] != "system":
        raise ValueError(f"unexpected fields in {path}")
    user, kernel = parse_uint(fields[1]), parse_uint(fields[3])
    total = read_uint(os.path.join(d, "cpuacct.usage"))
    with open(os.path.join(d, "cpuacct.usage_percpu")) as f:
        per_cpu = [parse_uint(v) for v in f.read().split()]
    usage = m.cpu.usage
    usage.total = total
    usage.user = user * NANOSECONDS_IN_SECOND // CLOCK_TICKS
    usage.kernel = kernel * NANOSECONDS_IN_SECOND // CLOCK_TICKS
    del usage.per_cpu[:]
    usage.per_cpu.extend(per_cpu)


# memory.stat key -> MemoryStat field
_MEMORY_STAT_KEYS = {
    "cache": "cache",
    "rss": "rss",
    "rss_huge": "rss_huge",
    "mapped_file": "mapped_file",
    "dirty": "dirty",
    "writeback": "writeback",
    "pgpgin": "pg_pg_in",
    "pgpgout": "pg_pg_out",
    "pgfault": "pg_fault",
    "pgmajfault": "pg_maj_fault",
    "inactive_anon": "inactive_anon",
    "active_anon": "active_anon",
    "inactive_file": "inactive_file",
    "active_file": "active_file",
    "unevictable": "unevictable",
    "hierarchical_memory_limit": "hierarchical_memory_limit",
    "hierarchical_memsw_limit": "hierarchical_swap_limit",
    "total_cache": "total_cache",
    "total_rss": "total_rss",
    "total_rss_huge": "total_rss_huge",
    "total_mapped_file": "total_mapped_file",
    "total_dirty": "total_dirty",
    "total_writeback": "total_writeback",
    "total_pgpgin": "total_pg_pg_in",
    "total_pgpgout": "total_pg_pg_out",
    "total_pgfault": "total_pg_fault",
    "total_pgmajfault": "total_pg_maj_fault",
    "total_inactive_anon": "total_inactive_anon",
    "total_active_anon": "total_active_anon",
    "total_inactive_file": "total_inactive_file",
    "total_active_file": "total_active_file",
    "total_unevictable": "total_unevictable",
}

# (file infix, MemoryStat entry field): memory.<infix>usage_in_bytes, ...
_MEMORY_ENTRIES = (("", "usage"), ("memsw.", "swap"), ("kmem.", "kernel"), ("kmem.tcp.", "kernel_tcp"))


def stat_memory(d: str, m: pb.Metrics) -> None:
    raw = read_kv(os.path.join(d, "memory.stat"))
    mem = m.memory
    for entry in ("usage", "swap", "kernel", "kernel_tcp"):
        getattr(mem, entry).SetInParent()  # containerd always sends the four entries
    for key, field_name in _MEMORY_STAT_KEYS.items():
        setattr(mem, field_name, raw.get(key, 0))
    oom = read_kv(os.path.join(d, "memory.oom_control"))
    m.memory_oom_control.oom_kill_disable = oom.get("oom_kill_disable", 0)
    m.memory_oom_control.under_oom = oom.get("under_oom", 0)
    m.memory_oom_control.oom_kill = oom.get("oom_kill", 0)
    # without swap accounting the memsw files are absent: skip that entry
    # only (containerd's OptionalSwap), the kernel ones may still be there
    for infix, entry_name in _MEMORY_ENTRIES:
        entry = getattr(mem, entry_name)
        if infix == "memsw." and not os.path.exists(os.path.join(d, "memory.memsw.usage_in_bytes")):
            continue
        for file_name, attr in (("usage_in_bytes", "usage"), ("max_usage_in_bytes", "max"),
                                ("failcnt", "failcnt"), ("limit_in_bytes", "limit")):
            setattr(entry, attr, read_uint(os.path.join(d, f"memory.{infix}{file_name}")))


def stat_pids(d: str, m: pb.Metrics) -> None:
    current = read_uint(os.path.join(d, "pids.current"))
    with open(os.path.join(d, "pids.max")) as f:
        text = f.read().strip()
    m.pids.current = current
    m.pids.limit = 0 if text == "max" else parse_uint(text)


# the recursive blkio files and the BlkIOStat field each fills
_BLKIO_RECURSIVE = (
    ("sectors_recursive", "sectors_recursive"),
    ("io_service_bytes_recursive", "io_service_bytes_recursive"),
    ("io_serviced_recursive", "io_serviced_recursive"),
    ("io_queued_recursive", "io_queued_recursive"),
    ("io_service_time_recursive", "io_service_time_recursive"),
    ("io_wait_time_recursive", "io_wait_time_recursive"),
    ("io_merged_recursive", "io_merged_recursive"),
    ("time_recursive", "io_time_recursive"),
)
# used where the recursive files are absent or empty (no CFQ/BFQ scheduler)
_BLKIO_THROTTLE = (
    ("throttle.io_serviced", "io_serviced_recursive"),
    ("throttle.io_service_bytes", "io_service_bytes_recursive"),
)
_BLKIO_SPLIT = re.compile(r"[ :]+")


def block_devices(partitions: str = "/proc/partitions") -> dict[tuple[int, int], str]:
    """(major, minor) -> /dev/<name>, from /proc/partitions (first name wins)."""
    out: dict[tuple[int, int], str] = {}
    with open(partitions) as f:
        for i, line in enumerate(f):
            if i < 2:
                continue
            fields = line.split()
            if len(fields) < 4:
                continue
            out.setdefault((int(fields[0]), int(fields[1])), os.path.join("/dev", fields[3]))
    return out


def _blkio_entries(path: str, devices: dict[tuple[int, int], str]) -> list[pb.BlkIOEntry]:
    out = []
    with open(path) as f:
        for line in f:
            fields = [x for x in _BLKIO_SPLIT.split(line.strip()) if x]
            if not fields:
                continue
            if len(fields) < 3:
                if len(fields) == 2 and fields[0] == "Total":
                    continue
                raise ValueError(f"invalid line found while parsing {path}: {line.strip()[:128]}")
            major, minor = int(fields[0]), int(fields[1])
            op, value = ("", fields[2]) if len(fields) < 4 else (fields[2], fields[3])
            out.append(pb.BlkIOEntry(op=op, device=devices.get((major, minor), ""), major=major,
                                     minor=minor, value=parse_uint(value)))
    return out


def stat_blkio(d: str, m: pb.Metrics, partitions: str = "/proc/partitions") -> None:
    m.blkio.SetInParent()
    devices = block_devices(partitions)
    size = 0
    if os.path.lexists(os.path.join(d, "blkio.io_serviced_recursive")):
        for file_name, field_name in _BLKIO_RECURSIVE:
            entries = _blkio_entries(os.path.join(d, f"blkio.{file_name}"), devices)
            getattr(m.blkio, field_name).extend(entries)
            size += len(entries)
    if size:
        return
    for file_name, field_name in _BLKIO_THROTTLE:
        getattr(m.blkio, field_name).extend(_blkio_entries(os.path.join(d, f"blkio.{file_name}"), devices))


_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def huge_page_sizes(sysfs: str = "/sys/kernel/mm/hugepages") -> list[str]:
    """The page sizes as the hugetlb files name them (`2MB`, `1GB`), from
    /sys/kernel/mm/hugepages/hugepages-<n>kB."""
    out = []
    for name in sorted(os.listdir(sysfs)):
        number = name.split("-", 1)[1]
        size = float(int(number.rstrip("kB")) * 1024)
        unit = 0
        while size >= 1024 and unit < len(_SIZE_UNITS) - 1:
            size /= 1024
            unit += 1
        out.append(f"{size:g}{_SIZE_UNITS[unit]}")
    return out


def stat_hugetlb(d: str, m: pb.Metrics) -> None:
    for size in huge_page_sizes():
        entry = pb.HugetlbStat(pagesize=size)
        entry.usage = read_uint(os.path.join(d, f"hugetlb.{size}.usage_in_bytes"))
        entry.max = read_uint(os.path.join(d, f"hugetlb.{size}.max_usage_in_bytes"))
        entry.failcnt = read_uint(os.path.join(d, f"hugetlb.{size}.failcnt"))
        m.hugetlb.append(entry)


def rdma_entries(lines: list[str], cls=pb.RdmaEntry) -> list:
    """Lines of `<device> hca_handle=<n|max> hca_object=<n|max>`; others skipped."""
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        entry = cls(device=parts[0])
        for kv in parts[1:]:
            key, _, value = kv.partition("=")
            try:
                number = _U32_MAX if value == "max" else min(parse_uint(value), _U32_MAX)
            except ValueError:
                continue
            if key == "hca_handle":
                entry.hca_handles = number
            elif key == "hca_object":
                entry.hca_objects = number
        out.append(entry)
    return out


def stat_rdma(d: str, m: pb.Metrics) -> None:
    with open(os.path.join(d, "rdma.current")) as f:
        current = f.read().split("\n")
    with open(os.path.join(d, "rdma.max")) as f:
        limit = f.read().split("\n")
    if len(current) != len(limit):
        return
    m.rdma.current.extend(rdma_entries(current))
    m.rdma.limit.extend(rdma_entries(limit))


_STATERS = {
    "pids": stat_pids,
    "cpu": stat_cpu,
    "cpuacct": stat_cpuacct,
    "memory": stat_memory,
    "blkio": stat_blkio,
    "hugetlb": stat_hugetlb,
    "rdma": stat_rdma,
}


def stat(dirs: dict[str, str]) -> pb.Metrics:
    """The v1 Metrics of a cgroup, given each controller's directory
    (paths.TaskCgroup.v1_dirs). The CPU message is always there, as
    containerd sends it; the others only for the controllers present."""
    if not any(os.path.isdir(d) for d in dirs.values()):
        raise errdefs.NotFound("cgroup deleted")
    m = pb.Metrics()
    m.cpu.usage.SetInParent()
    m.cpu.throttling.SetInParent()
    for name, stater in _STATERS.items():
        d = dirs.get(name)
        if d is None:
            continue
        try:
            stater(d, m)
        except FileNotFoundError:
            continue
    return m
