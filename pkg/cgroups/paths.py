"""Which cgroup hierarchy this host runs, and where a task's cgroup lives.

The mode is read from the mount table, never assumed: /sys/fs/cgroup being
a cgroup2 mount (with its cgroup.controllers file) is the unified mode;
otherwise the v1 hierarchies are used (hybrid when a cgroup2 mount sits at
/sys/fs/cgroup/unified beside them, as containerd's Mode() tells them
apart). A task's cgroup is found from its pid (/proc/<pid>/cgroup, as
containerd's PidPath does: each entry made relative to the root of the
mount of its hierarchy) or, failing that, from the spec's cgroupsPath,
which runc's cgroupfs driver places under every controller's mount.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pycontainerd.pkg import errdefs

CGROUP_ROOT = "/sys/fs/cgroup"
# the v1 controllers whose statistics containerd's cgroups library reads
V1_STAT_CONTROLLERS = ("pids", "cpu", "cpuacct", "memory", "blkio", "hugetlb", "rdma")


class Mode(enum.Enum):
    """containerd's cgroups.CGMode."""

    UNAVAILABLE = "unavailable"
    LEGACY = "legacy"
    HYBRID = "hybrid"
    UNIFIED = "unified"


@dataclass(frozen=True)
class Mount:
    """One cgroup mount: the hierarchy's directory shown at `mountpoint`
    (`root`, not / inside a cgroup namespace), its type and its options
    (on v1, the controllers it carries)."""

    root: str
    mountpoint: str
    fstype: str
    options: frozenset[str]


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


def mounts(mountinfo: str = "/proc/self/mountinfo") -> list[Mount]:
    """The cgroup and cgroup2 mounts, in mount order."""
    out: list[Mount] = []
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            try:
                sep = fields.index("-", 6)
            except ValueError:
                continue
            if len(fields) < sep + 4:
                continue
            fstype = fields[sep + 1]
            if fstype not in ("cgroup", "cgroup2"):
                continue
            options = frozenset(fields[sep + 3].split(",")) - {"rw", "ro"}
            out.append(Mount(_unescape(fields[3]), _unescape(fields[4]), fstype, options))
    return out


def _at(all_mounts: list[Mount], mountpoint: str) -> Mount | None:
    """The mount visible at `mountpoint` (the last one mounted there)."""
    found = None
    for m in all_mounts:
        if m.mountpoint == mountpoint:
            found = m
    return found


def mode(mountinfo: str = "/proc/self/mountinfo") -> Mode:
    """The host's cgroup mode, from what is mounted at /sys/fs/cgroup."""
    try:
        all_mounts = mounts(mountinfo)
    except OSError:
        return Mode.UNAVAILABLE
    top = _at(all_mounts, CGROUP_ROOT)
    if top is not None and top.fstype == "cgroup2":
        if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
            return Mode.UNIFIED
        return Mode.UNAVAILABLE
    if not any(m.fstype == "cgroup" for m in all_mounts):
        return Mode.UNAVAILABLE
    unified = _at(all_mounts, os.path.join(CGROUP_ROOT, "unified"))
    return Mode.HYBRID if unified is not None and unified.fstype == "cgroup2" else Mode.LEGACY


def v1_mounts(all_mounts: list[Mount] | None = None) -> dict[str, Mount]:
    """Each v1 controller (and named hierarchy, as `name=systemd`) -> its mount."""
    out: dict[str, Mount] = {}
    for m in all_mounts if all_mounts is not None else mounts():
        if m.fstype == "cgroup":
            for opt in m.options:
                out.setdefault(opt, m)
    return out


def proc_cgroups(pid: int | str) -> tuple[dict[str, str], str | None]:
    """/proc/<pid>/cgroup read: v1 controller -> path, and the unified
    (`0::`) path or None. Raises NotFound when the process is gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise errdefs.NotFound(f"process {pid}") from None
    v1: dict[str, str] = {}
    unified = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 3:
            continue
        if parts[1] == "":
            unified = parts[2]
            continue
        for name in parts[1].split(","):
            v1[name] = parts[2]
    return v1, unified


def _under(mountpoint: str, root: str, path: str) -> str:
    """The directory of cgroup `path` (as /proc shows it) in a mount of `root`."""
    rel = os.path.relpath(os.path.normpath("/" + path), root)
    if rel == "." or rel.startswith(".."):
        rel = "" if rel == "." else os.path.normpath("/" + path).lstrip("/")
    return os.path.normpath(os.path.join(mountpoint, rel))


def _clean(cgroups_path: str) -> str:
    """A cgroupfs-driver cgroupsPath (containerd's default is absolute,
    `/<namespace>/<id>`: below each hierarchy's root), as a path relative
    to that root. The systemd driver's `slice:prefix:name` form is refused:
    such tasks are found by pid."""
    if ":" in cgroups_path:
        raise errdefs.InvalidArgument(f"cgroups path {errdefs.quote(cgroups_path)}: the systemd driver's form is not supported")
    return os.path.normpath("/" + cgroups_path).lstrip("/")


@dataclass
class TaskCgroup:
    """A task's cgroup, found once: on v1 each controller's directory, on
    v2 the one unified directory. `stat()` reads it (blocking)."""

    version: int  # 1 or 2
    v1_dirs: dict[str, str] = field(default_factory=dict)
    v2_dir: str = ""

    def exists(self) -> bool:
        if self.version == 2:
            return os.path.isdir(self.v2_dir)
        return any(os.path.isdir(d) for d in self.v1_dirs.values())

    @property
    def memory_dir(self) -> str | None:
        """Where memory events are watched (v1 memory controller, or the v2 dir)."""
        if self.version == 2:
            return self.v2_dir
        return self.v1_dirs.get("memory")

    def stat(self) -> Any:
        """The cgroup's Metrics message (v1 or v2, by the hierarchy)."""
        if self.version == 2:
            from . import v2

            return v2.stat(self.v2_dir)
        from . import v1

        return v1.stat(self.v1_dirs)

    def stat_any(self) -> Any:
        """Metrics in a google.protobuf.Any, typed as containerd's typeurl
        does (`io.containerd.cgroups.v1.Metrics` / `...v2.Metrics`)."""
        from google.protobuf import any_pb2

        msg = self.stat()
        return any_pb2.Any(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


def load(pid: int | None = None, cgroups_path: str = "", host_mode: Mode | None = None,
         mountinfo: str = "/proc/self/mountinfo") -> TaskCgroup:
    """Find a task's cgroup from its pid (preferred: it is where the task
    really is) or from its spec's cgroupsPath. Controllers not mounted, or
    without a directory for this cgroup, are left out (containerd's Load
    does the same); none at all is NotFound `cgroup deleted`."""
    host_mode = host_mode or mode(mountinfo)
    if host_mode is Mode.UNAVAILABLE:
        raise errdefs.FailedPrecondition("cgroups are not available on this host")
    if not pid and not cgroups_path:
        raise errdefs.InvalidArgument("a pid or a cgroups path is required")
    relative = "" if pid else _clean(cgroups_path)
    all_mounts = mounts(mountinfo)
    if host_mode is Mode.UNIFIED:
        top = _at(all_mounts, CGROUP_ROOT)
        assert top is not None
        if pid:
            _, unified = proc_cgroups(pid)
            if unified is None:
                raise errdefs.NotFound(f"cgroup of process {pid}")
            directory = _under(top.mountpoint, top.root, unified)
        else:
            directory = os.path.join(top.mountpoint, relative)
        if not os.path.isdir(directory):
            raise errdefs.NotFound("cgroup deleted")
        return TaskCgroup(version=2, v2_dir=directory)
    by_controller = v1_mounts(all_mounts)
    procs = proc_cgroups(pid)[0] if pid else {}
    dirs: dict[str, str] = {}
    for name in V1_STAT_CONTROLLERS:
        m = by_controller.get(name)
        if m is None:
            continue
        if pid:
            if name not in procs:
                continue
            directory = _under(m.mountpoint, m.root, procs[name])
        else:
            directory = os.path.join(m.mountpoint, relative)
        if os.path.isdir(directory):
            dirs[name] = directory
    if not dirs:
        raise errdefs.NotFound("cgroup deleted")
    return TaskCgroup(version=1, v1_dirs=dirs)
