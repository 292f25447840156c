"""Mounting what a snapshotter returns, as containerd's mount package does.

Used by tests, the differ and anyone holding a list of mounts. Mounts go
through util-linux `mount` (it understands `bind`/`rbind`/`ro` the way
ctr's printed commands expect). An overlay whose options would overflow the
one page the kernel accepts for mount data gets containerd 1.6's treatment
(mount_linux.go compactLowerdirOption): the lowerdirs are rewritten
relative to their common parent directory and the mount runs from there.
"""

from __future__ import annotations

import os
import subprocess
from typing import Iterable

from .storage import Mount

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


def mount(m: Mount, target: str) -> None:
    options = list(m.options)
    cwd = None
    if m.type == "overlay" and _options_size(options) >= PAGESIZE - 512:
        chdir, options = compact_lowerdir(options)
        cwd = chdir or None
    data = ",".join(o for o in options)
    if len(data) > PAGESIZE:
        raise OSError("mount options is too long")
    argv = ["mount", "-t", m.type, m.source, target]
    if data:
        argv += ["-o", data]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if r.returncode:
        raise OSError(f"mount {m.type} {m.source} on {target}: {r.stderr.strip()}")


def mount_all(mounts: Iterable[Mount], target: str) -> None:
    for m in mounts:
        mount(m, target)


def unmount(target: str, lazy: bool = False) -> None:
    r = subprocess.run(["umount", *(["-l"] if lazy else []), target], capture_output=True, text=True)
    if r.returncode and "not mounted" not in r.stderr:
        raise OSError(f"umount {target}: {r.stderr.strip()}")
