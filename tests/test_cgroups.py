"""pkg/cgroups against the kernel's real cgroups: each test makes its own
cgroup, moves child processes it starts into it (a CPU burner, a memory
holder with threads, an allocator that overruns a limit), reads the
Metrics messages and checks they move as the kernel says they should,
then kills its children by pid and removes its cgroups.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from cgroup_support import BURN, Cgroup, fstype, hold, poll, v1_available, v2_mount
from pycontainerd.api.cgroups.stats.v1 import metrics_pb2 as v1pb
from pycontainerd.api.cgroups.v2.stats import metrics_pb2 as v2pb
from pycontainerd.pkg import cgroups, errdefs
from pycontainerd.pkg.cgroups import paths, v1, v2
from pycontainerd.pkg.cgroups.oom import OOMWatcher

MiB = 1 << 20

needs_v1 = pytest.mark.skipif(not v1_available(), reason="no cgroup v1 hierarchies on this host")
needs_v2 = pytest.mark.skipif(v2_mount() is None, reason="no cgroup2 mount on this host")


@pytest.fixture
def cg1():
    cg = Cgroup(1)
    try:
        yield cg
    finally:
        cg.remove()


@pytest.fixture
def cg2():
    cg = Cgroup(2)
    try:
        yield cg
    finally:
        cg.remove()


def test_mode_follows_what_is_mounted_at_sys_fs_cgroup():
    top = fstype("/sys/fs/cgroup")
    mode = cgroups.mode()
    if top == "cgroup2":
        assert mode is cgroups.Mode.UNIFIED
    elif fstype("/sys/fs/cgroup/unified") == "cgroup2":
        assert mode is cgroups.Mode.HYBRID
    else:
        assert mode is cgroups.Mode.LEGACY


def test_mode_of_a_host_without_cgroups(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
                         "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n")
    assert cgroups.mode(str(mountinfo)) is cgroups.Mode.UNAVAILABLE


@needs_v1
def test_v1_task_found_by_pid_and_by_cgroups_path(cg1):
    p = cg1.start(hold(1))
    assert p.stdout.readline() == "ready\n"
    by_pid = cgroups.load(pid=p.pid, host_mode=cgroups.Mode.LEGACY)
    assert by_pid.version == 1
    for controller in ("cpu", "cpuacct", "memory", "pids", "blkio"):
        assert os.path.samefile(by_pid.v1_dirs[controller], cg1.dirs[controller])
    # the cgroupfs cgroupsPath is relative to each hierarchy's root
    v1_paths, _ = paths.proc_cgroups(p.pid)
    by_path = cgroups.load(cgroups_path=v1_paths["cpu"], host_mode=cgroups.Mode.LEGACY)
    assert os.path.samefile(by_path.v1_dirs["cpu"], cg1.dirs["cpu"])


@needs_v1
def test_v1_cpu_time_grows_while_a_child_burns(cg1):
    cg1.start(BURN)
    task = cgroups.load(pid=cg1.children[0].pid, host_mode=cgroups.Mode.LEGACY)
    first = poll(lambda: (lambda m: m if m.cpu.usage.total > 0 else None)(task.stat()))
    later = poll(lambda: (lambda m: m if m.cpu.usage.total > first.cpu.usage.total
                          and m.cpu.usage.user > first.cpu.usage.user else None)(task.stat()))
    assert isinstance(later, v1pb.Metrics)
    assert len(later.cpu.usage.per_cpu) == os.cpu_count()
    assert sum(later.cpu.usage.per_cpu) > 0
    assert later.cpu.HasField("throttling")  # no quota: all zero, but sent as containerd sends it
    assert later.cpu.throttling.throttled_periods == 0


@needs_v1
def test_v1_memory_and_pids_of_a_holder(cg1):
    cg1.write("pids", "pids.max", "50")
    p = cg1.start(hold(64, threads=2))
    assert p.stdout.readline() == "ready\n"
    m = cgroups.load(pid=p.pid, host_mode=cgroups.Mode.LEGACY).stat()
    assert m.memory.usage.usage >= 64 * MiB
    assert m.memory.usage.max >= m.memory.usage.usage
    assert m.memory.rss >= 64 * MiB and m.memory.total_rss >= m.memory.rss
    assert m.memory.usage.limit > 0 and m.memory.hierarchical_memory_limit > 0
    assert m.HasField("memory_oom_control") and m.memory_oom_control.under_oom == 0
    assert m.pids.current == 3  # the process and its two threads
    assert m.pids.limit == 50
    assert m.HasField("blkio")


@needs_v1
def test_v1_absent_controllers_are_left_out(cg1):
    m = v1.stat({"cpuacct": cg1.dirs["cpuacct"]})
    assert not m.HasField("memory") and not m.HasField("pids") and not m.HasField("blkio")
    assert m.HasField("cpu")
    assert len(m.hugetlb) == 0 and not m.HasField("rdma")


@needs_v1
def test_v1_unlimited_pids_read_as_zero(cg1):
    m = v1.stat({"pids": cg1.dirs["pids"]})
    assert cg1.read("pids", "pids.max").strip() == "max"
    assert m.pids.limit == 0 and m.pids.current == 0


@needs_v1
def test_v1_removed_cgroup_is_not_found():
    cg = Cgroup(1)
    dirs = dict(cg.dirs)
    cg.remove()
    with pytest.raises(errdefs.NotFound, match="cgroup deleted"):
        v1.stat(dirs)


def test_v1_memory_stat_keys_and_blkio_lines(tmp_path):
    """Parsing, on files shaped as the kernel writes them (a kernel may
    lack some: each section is read as far as its files go)."""
    d = tmp_path
    (d / "memory.stat").write_text("cache 4096\nrss 8192\npgpgin 3\nhierarchical_memsw_limit 9\n"
                                   "total_pgmajfault 7\nunknown_key 1\n")
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 1\noom_kill 2\n")
    for infix in ("", "kmem.", "kmem.tcp."):
        for name, value in (("usage_in_bytes", 10), ("max_usage_in_bytes", 20), ("failcnt", 1),
                            ("limit_in_bytes", -1)):
            (d / f"memory.{infix}{name}").write_text(f"{value}\n")
    m = v1pb.Metrics()
    v1.stat_memory(str(d), m)
    assert (m.memory.cache, m.memory.rss, m.memory.pg_pg_in) == (4096, 8192, 3)
    assert m.memory.hierarchical_swap_limit == 9 and m.memory.total_pg_maj_fault == 7
    assert (m.memory_oom_control.under_oom, m.memory_oom_control.oom_kill) == (1, 2)
    assert m.memory.usage.usage == 10 and m.memory.kernel_tcp.max == 20
    assert m.memory.usage.limit == 0  # a negative number reads as 0, as containerd's parseUint
    assert m.HasField("memory") and m.memory.HasField("swap") and m.memory.swap.usage == 0  # no memsw files

    partitions = d / "partitions"
    partitions.write_text("major minor  #blocks  name\n\n 254        0  268435456 vda\n")
    (d / "blkio.throttle.io_serviced").write_text("254:0 Read 5\n254:0 Write 6\n254:0 Total 11\nTotal 11\n")
    (d / "blkio.throttle.io_service_bytes").write_text("254:0 Read 4096\n")
    m = v1pb.Metrics()
    v1.stat_blkio(str(d), m, partitions=str(partitions))
    ops = [(e.op, e.device, e.major, e.minor, e.value) for e in m.blkio.io_serviced_recursive]
    assert ops == [("Read", "/dev/vda", 254, 0, 5), ("Write", "/dev/vda", 254, 0, 6), ("Total", "/dev/vda", 254, 0, 11)]
    assert [e.value for e in m.blkio.io_service_bytes_recursive] == [4096]


def test_hugetlb_page_size_names(tmp_path):
    for n in ("hugepages-2048kB", "hugepages-1048576kB", "hugepages-64kB"):
        (tmp_path / n).mkdir()
    assert v1.huge_page_sizes(str(tmp_path)) == ["1GB", "2MB", "64KB"]


def test_v2_files_as_the_kernel_writes_them(tmp_path):
    d = tmp_path
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\n"
                                "nr_throttled 1\nthrottled_usec 20\n")
    (d / "memory.stat").write_text("anon 4096\nfile 8192\npgfault 12\nthp_collapse_alloc 1\n")
    (d / "memory.current").write_text("65536\n")
    (d / "memory.max").write_text("max\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n")
    (d / "pids.current").write_text("3\n")
    (d / "pids.max").write_text("max\n")
    (d / "io.stat").write_text("254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n")
    (d / "hugetlb.2MB.current").write_text("0\n")
    (d / "hugetlb.2MB.max").write_text("max\n")
    m = v2.stat(str(d))
    assert isinstance(m, v2pb.Metrics)
    assert (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec) == (1500, 1000, 500)
    assert (m.cpu.nr_periods, m.cpu.nr_throttled, m.cpu.throttled_usec) == (4, 1, 20)
    assert (m.memory.anon, m.memory.file, m.memory.pgfault, m.memory.thp_collapse_alloc) == (4096, 8192, 12, 1)
    assert m.memory.usage == 65536 and m.memory.usage_limit == (1 << 64) - 1
    assert m.memory.swap_usage == 0  # no memory.swap.current: 0
    assert (m.memory_events.max, m.memory_events.oom, m.memory_events.oom_kill) == (3, 2, 1)
    assert m.pids.current == 3 and m.pids.limit == (1 << 64) - 1
    assert [(e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios) for e in m.io.usage] == [(254, 0, 4096, 8192, 1, 2)]
    assert [(h.pagesize, h.current, h.max) for h in m.hugetlb] == [("2MB", 0, (1 << 64) - 1)]


@needs_v2
def test_v2_cpu_time_grows_while_a_child_burns(cg2):
    cg2.start(BURN)
    task = cgroups.load(pid=cg2.children[0].pid, host_mode=cgroups.Mode.UNIFIED) \
        if fstype("/sys/fs/cgroup") == "cgroup2" else cgroups.TaskCgroup(version=2, v2_dir=cg2.dirs[""])
    first = poll(lambda: (lambda m: m if m.cpu.usage_usec > 0 else None)(task.stat()))
    later = poll(lambda: (lambda m: m if m.cpu.usage_usec > first.cpu.usage_usec else None)(task.stat()))
    assert later.cpu.user_usec + later.cpu.system_usec > 0
    controllers = cg2.read("", "cgroup.controllers").split()
    # what the cgroup has no controller for is there, and zero
    assert later.HasField("memory") and later.HasField("pids")
    if "memory" not in controllers:
        assert later.memory.usage == 0 and not later.HasField("memory_events")
    if "pids" in controllers:
        assert later.pids.current == 1


@needs_v2
def test_v2_removed_cgroup_is_not_found():
    cg = Cgroup(2)
    d = cg.dirs[""]
    cg.remove()
    with pytest.raises(errdefs.NotFound, match="cgroup deleted"):
        v2.stat(d)


@needs_v1
def test_v1_oom_is_reported_once_per_kill(cg1):
    cg1.write("memory", "memory.limit_in_bytes", str(32 * MiB))
    if os.path.exists(os.path.join(cg1.dirs["memory"], "memory.memsw.limit_in_bytes")):
        cg1.write("memory", "memory.memsw.limit_in_bytes", str(32 * MiB))
    task = cgroups.TaskCgroup(version=1, v1_dirs=dict(cg1.dirs))

    async def main():
        watcher = OOMWatcher()
        fired = asyncio.Event()
        calls = []

        def on_oom():
            calls.append(1)
            fired.set()

        assert await watcher.add("t-default", task, on_oom)
        p = cg1.start(hold(256))
        await asyncio.wait_for(fired.wait(), 60)
        await asyncio.to_thread(p.wait)
        count = watcher.count("t-default")
        watcher.close()
        return p.returncode, calls, count

    returncode, calls, count = asyncio.run(main())
    assert returncode == -9  # killed by the OOM killer
    assert calls == [1] and count == 1
    assert "oom_kill 1" in cg1.read("memory", "memory.oom_control")


def test_mount_table_read_as_the_kernel_writes_it(tmp_path):
    """Combined controllers, a hierarchy mounted from inside a cgroup
    namespace (root not /), an escaped space, and the hybrid mode."""
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 /kubepods/pod1 /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
        "33 31 0:30 / /sys/fs/cgroup/my\\040memory rw - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n")
    assert cgroups.mode(str(mountinfo)) is cgroups.Mode.HYBRID
    by_controller = paths.v1_mounts(paths.mounts(str(mountinfo)))
    assert by_controller["cpu"] is by_controller["cpuacct"]
    assert by_controller["memory"].mountpoint == "/sys/fs/cgroup/my memory"
    cpu = by_controller["cpu"]
    assert paths._under(cpu.mountpoint, cpu.root, "/kubepods/pod1/c1") == "/sys/fs/cgroup/cpu,cpuacct/c1"
    assert paths._under(cpu.mountpoint, cpu.root, "/kubepods/pod1") == "/sys/fs/cgroup/cpu,cpuacct"


def test_systemd_cgroups_path_is_refused():
    with pytest.raises(errdefs.InvalidArgument, match="systemd"):
        cgroups.load(cgroups_path="system.slice:containerd:abc", host_mode=cgroups.Mode.LEGACY)
