"""Mounting what a snapshotter returns, as containerd's mount package does.

Used by the overlayfs start-up check, the differ, tests and anyone holding a
list of mounts. As in containerd (mount_linux.go), a mount is the mount(2)
system call: its options are split into flags and filesystem data with
containerd's table, and a read-only bind gets the remount that applies `ro`.
Two cases go through util-linux `mount` in a child process instead: an
overlay whose lowerdirs had to be made relative (mount data over one page:
containerd 1.6's compactLowerdirOption; the child mounts from their common
parent, which a multi-threaded daemon cannot chdir to) and `loop` (the child
sets up the loop device). A system call costs microseconds where the child
costs milliseconds, on every Apply and at every start.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass
class Mount:
    """One mount, as containerd's mount.Mount: type, source, options."""

    type: str
    source: str
    options: list[str] = field(default_factory=list)
    target: str = ""


def mounts_from_pb(ms: Iterable[Any]) -> list[Mount]:
    """Mounts from containerd.types.Mount messages."""
    return [Mount(m.type, m.source, list(m.options), m.target) for m in ms]


def mounts_to_pb(mounts: Iterable[Any]) -> list[Any]:
    """containerd.types.Mount messages for mounts (anything with type,
    source, options and, optionally, target)."""
    from pycontainerd.api.types import mount_pb2

    return [mount_pb2.Mount(type=m.type, source=m.source, options=list(m.options), target=getattr(m, "target", ""))
            for m in mounts]


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS = 0x1, 0x2, 0x4, 0x8, 0x10
MS_REMOUNT, MS_MANDLOCK, MS_DIRSYNC, MS_NOATIME, MS_NODIRATIME = 0x20, 0x40, 0x80, 0x400, 0x800
MS_BIND, MS_REC, MS_RELATIME, MS_STRICTATIME = 0x1000, 0x4000, 0x200000, 0x1000000
MNT_DETACH = 0x2

# containerd's parseMountOptions table: option -> (clears the flag?, flag)
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS), "atime": (True, MS_NOATIME), "bind": (False, MS_BIND),
    "defaults": (False, 0), "dev": (True, MS_NODEV), "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC), "exec": (True, MS_NOEXEC), "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME), "nodev": (False, MS_NODEV), "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC), "nomand": (True, MS_MANDLOCK), "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME), "nosuid": (False, MS_NOSUID), "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME), "remount": (False, MS_REMOUNT), "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY), "strictatime": (False, MS_STRICTATIME), "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)

PAGESIZE = os.sysconf("SC_PAGE_SIZE")


def _options_size(options: list[str]) -> int:
    return sum(len(o) + 1 for o in options)


def compact_lowerdir(options: list[str]) -> tuple[str, list[str]]:
    """(directory to mount from, options with relative lowerdirs), or
    ("", options) when nothing can be compacted."""
    idx = next((i for i, o in enumerate(options) if o.startswith("lowerdir=")), -1)
    if idx < 0:
        return "", options
    dirs = options[idx][len("lowerdir="):].split(":")
    if len(dirs) == 1:
        return "", options
    common = os.path.commonprefix([min(dirs), max(dirs)])
    if not common:
        return "", options
    # snapshot ids are digits: step back to the parent directory so that
    # ".../snapshots/1" and ".../snapshots/12" do not share "1"
    common = os.path.dirname(common)
    if common == "/":
        return "", options
    common += "/"
    rel = [d[len(common):] for d in dirs]
    out = options[:idx] + options[idx + 1:] + ["lowerdir=" + ":".join(rel)]
    return common, out


def parse_options(options: Iterable[str]) -> tuple[int, str, bool]:
    """(mount flags, filesystem data, loop?) as containerd's parseMountOptions:
    an option not in the table (or with no flag) is data for the filesystem."""
    flags, data, loop = 0, [], False
    for o in options:
        clear, flag = _FLAGS.get(o, (False, 0))
        if flag:
            flags = flags & ~flag if clear else flags | flag
        elif o == "loop":
            loop = True
        else:
            data.append(o)
    return flags, ",".join(data), loop


def _strerror(err: int) -> str:
    """An errno in Go's words: the C library's text, lower case ("no such
    device"), which is what containerd's messages carry."""
    text = os.strerror(err)
    return text[:1].lower() + text[1:]


def _sys_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    if _libc.mount(os.fsencode(source), os.fsencode(target), os.fsencode(fstype), flags,
                   os.fsencode(data) if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} {source} on {target}: {_strerror(err)}")


def _mount_command(m: Mount, options: list[str], target: str, cwd: str | None) -> None:
    argv = ["mount", "-t", m.type, m.source, target]
    if options:
        argv += ["-o", ",".join(options)]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if r.returncode:
        raise OSError(f"mount {m.type} {m.source} on {target}: {r.stderr.strip()}")


def mount(m: Mount, target: str) -> None:
    options = list(m.options)
    chdir = ""
    if m.type == "overlay" and _options_size(options) >= PAGESIZE - 512:
        chdir, options = compact_lowerdir(options)
    flags, data, loop = parse_options(options)
    if len(data) > PAGESIZE:
        raise OSError("mount options is too long")
    if chdir or loop:
        _mount_command(m, options, target, chdir or None)
        return
    if not flags & MS_REMOUNT or data:
        _sys_mount(m.source, target, m.type, flags, data)
    if flags & (MS_BIND | MS_RDONLY) == MS_BIND | MS_RDONLY:
        # a bind mount ignores MS_RDONLY: the remount applies it
        _sys_mount("", target, "", flags | MS_REMOUNT, "")


def mount_all(mounts: Iterable[Mount], target: str) -> None:
    for m in mounts:
        mount(m, target)


def _umount2(target: str, flags: int) -> int:
    """0, or the errno of umount2(2)."""
    return 0 if _libc.umount2(os.fsencode(target), flags) == 0 else ctypes.get_errno()


def unmount(target: str, lazy: bool = False) -> bool:
    """containerd's Unmount: True when something was unmounted, False when
    `target` is no mount point (EINVAL); busy is retried for up to 2.5 s."""
    for _ in range(50):
        err = _umount2(target, MNT_DETACH if lazy else 0)
        if err != errno.EBUSY:
            break
        time.sleep(0.05)
    if err in (0, errno.EINVAL):
        return err == 0
    raise OSError(err, f"failed to unmount target {target}: {_strerror(err)}")


def unmount_all(target: str) -> None:
    """Unmount everything stacked on `target` (containerd's UnmountAll). One
    still busy after the retries is detached, so that a temporary directory
    is never removed with a live mount on it."""
    if not os.path.exists(target):
        return
    while True:
        try:
            if not unmount(target):
                return
        except OSError as e:
            if e.errno != errno.EBUSY or _umount2(target, MNT_DETACH):
                raise


def _mountinfo_path(field: str) -> str:
    """A mount point as /proc/self/mountinfo writes it (octal escapes for
    space, tab, newline and backslash), decoded."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points_under(root: str) -> list[str]:
    """Every mount point below `root` (not `root` itself), deepest first."""
    root = os.path.abspath(root)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4:
                point = _mountinfo_path(fields[4])
                if point.startswith(root + "/"):
                    found.append(point)
    return sorted(set(found), key=len, reverse=True)


def cleanup_temp_mounts(root: str) -> list[str]:
    """containerd's CleanupTempMounts, run at start: temporary mounts left
    under `root` by a daemon that was killed mid-operation (a layer being
    applied, two snapshots being diffed) are unmounted and their
    directories removed. Otherwise each crash leaves a mount pinning a
    snapshot's files for good. Returns a warning for each one that could
    not be cleaned; empty leftover directories are removed too."""
    warnings = []
    for point in mount_points_under(root):
        try:
            unmount_all(point)
            os.rmdir(point)
        except OSError as e:
            warnings.append(f"{point}: {e.strerror or e}")
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return warnings
    for name in entries:
        try:
            os.rmdir(os.path.join(root, name))  # only an empty one goes
        except OSError:
            pass
    return warnings
