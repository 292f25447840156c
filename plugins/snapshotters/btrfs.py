"""io.containerd.snapshotter.v1.btrfs: snapshots as btrfs subvolumes.

containerd's layout under the plugin root (which must be on btrfs):
`metadata.db`, and subvolumes `active/<id>`, `view/<id>` and
`snapshots/<id>` (committed, read-only). A snapshot without parent is a new
empty subvolume; one with a parent is a btrfs snapshot of the parent's
subvolume (copy-on-write, instant), read-only for a view. Commit snapshots
the active subvolume read-only into snapshots/<id> and deletes the active
one. Mounts are `btrfs` mounts of the filesystem's device with
`subvolid=<n>` (and `ro` unless active), as containerd returns them.

Subvolumes are made and removed with the `btrfs` command (Debian's
btrfs-progs). The plugin skips itself, with containerd's words, when its
root is not on btrfs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Iterable

import structlog

from pycontainerd.core.context import InitContext, SkipPlugin
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import errdefs, platforms
from pycontainerd.pkg.snapshots import KIND_ACTIVE, KIND_NAMES, KIND_VIEW, Mount

from .base import LocalSnapshotter, disk_usage, wrap
from .storage import MetaStore, Snapshot


log = structlog.get_logger(__name__)

KIND_DIRS = ("active", "view", "snapshots")


def mount_of(path: str) -> tuple[str, str, str]:
    """(mount point, fs type, source) of the mount holding `path`, from
    /proc/self/mountinfo (the deepest mount point that is a prefix)."""
    path = os.path.realpath(path)
    best = ("/", "", "")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4].replace("\\040", " ")
            fstype, source = right.split()[:2]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                best = (point, fstype, source)
    return best


def _btrfs(*args: str) -> str:
    r = subprocess.run(["btrfs", *args], capture_output=True, text=True)
    if r.returncode:
        raise OSError(f"btrfs {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def subvol_create(path: str) -> None:
    _btrfs("subvolume", "create", path)


def subvol_snapshot(target: str, source: str, readonly: bool) -> None:
    _btrfs("subvolume", "snapshot", *(["-r"] if readonly else []), source, target)


def subvol_delete(path: str) -> None:
    _btrfs("subvolume", "delete", path)


def subvol_id(path: str) -> int:
    return int(_btrfs("inspect-internal", "rootid", path).strip())


class BtrfsSnapshotter(LocalSnapshotter):
    def __init__(self, root: str, device: str):
        self.root = root
        self.device = device
        for d in KIND_DIRS:
            os.makedirs(os.path.join(root, d), mode=0o700, exist_ok=True)
        self.ms = MetaStore(os.path.join(root, "metadata.db"))

    def _dir(self, kind: int, sid: str) -> str:
        sub = {KIND_ACTIVE: "active", KIND_VIEW: "view"}.get(kind, "snapshots")
        return os.path.join(self.root, sub, sid)

    def active_dir(self, sid: str) -> str:
        return os.path.join(self.root, "active", sid)

    def mounts_of(self, s: Snapshot) -> list[Mount]:
        options = [f"subvolid={subvol_id(self._dir(s.kind, s.id))}"]
        if s.kind != KIND_ACTIVE:
            options.append("ro")
        return [Mount(type="btrfs", source=self.device, options=options)]

    def _create(self, kind: int, key: str, parent: str, labels: dict[str, str] | None) -> list[Mount]:
        with self.ms.transaction(True) as tx:
            s = tx.create_snapshot(kind, key, parent, labels)
            target = self._dir(kind, s.id)
            if s.parent_ids:
                subvol_snapshot(target, os.path.join(self.root, "snapshots", s.parent_ids[0]), kind == KIND_VIEW)
            else:
                subvol_create(target)
            try:
                return self.mounts_of(s)
            except Exception:
                subvol_delete(target)
                raise

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        with self.ms.transaction(True) as tx:
            sid, info, _ = tx.get_info(key)
            if info.kind != KIND_ACTIVE:
                raise errdefs.FailedPrecondition(f"failed to commit snapshot: snapshot \"{key}\" is not active")
            source, target = self.active_dir(sid), os.path.join(self.root, "snapshots", sid)
            usage = disk_usage(source)
            try:
                tx.commit_active(key, name, usage, labels)
            except Exception as exc:
                raise wrap(exc, "failed to commit snapshot") from None
            subvol_snapshot(target, source, True)
        try:
            subvol_delete(source)
        except OSError as exc:  # an orphan for Cleanup
            log.warning("failed to delete active subvolume", path=source, error=str(exc))

    def remove(self, key: str) -> None:
        with self.ms.transaction(True) as tx:
            try:
                sid, kind = tx.remove(key)
            except Exception as exc:
                raise wrap(exc, "failed to remove snapshot") from None
        self._delete(self._dir(kind, sid))

    def _delete(self, path: str) -> None:
        try:
            subvol_delete(path)
        except OSError as exc:
            if os.path.exists(path):
                log.warning("failed to delete subvolume", path=path, error=str(exc))

    def cleanup(self) -> None:
        with self.ms.transaction(True) as tx:
            live = {(KIND_NAMES[i.kind].lower(), sid) for sid, i in tx.walk()}
        orphans = []
        for sub in KIND_DIRS:
            kind = {"snapshots": "committed"}.get(sub, sub)
            for d in os.listdir(os.path.join(self.root, sub)):
                if (kind, d) not in live:
                    orphans.append(os.path.join(self.root, sub, d))
        for path in orphans:
            self._delete(path)


@dataclass
class Config:
    """[plugins."io.containerd.snapshotter.v1.btrfs"]."""

    # where the subvolumes live (on btrfs); empty: the plugin's own root directory
    root_path: str = ""


async def init(ic: InitContext) -> BtrfsSnapshotter:
    import asyncio

    root = ic.config.root_path or ic.root
    ic.meta.platforms.append(platforms.default_string())
    _, fstype, source = await asyncio.to_thread(mount_of, root)
    if fstype != "btrfs":
        raise SkipPlugin(f"path {root} ({fstype}) must be a btrfs filesystem to be used with the btrfs snapshotter")
    ic.meta.exports["root"] = root
    ic.meta.exports["device"] = source
    return await asyncio.to_thread(BtrfsSnapshotter, root, source)


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.SNAPSHOT, id="btrfs", config=Config, init=init)]
