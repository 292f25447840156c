"""What every local snapshotter shares: the metastore-backed Stat, Update,
Walk and Usage, the orphan Cleanup, the disk-usage walk and the filter
adaptor, so native.py, overlayfs.py and btrfs.py hold only what makes each
one different (how a snapshot's directory is made and mounted).

The snapshotter methods block (filesystem work inside a metastore
transaction, as containerd does): callers on the event loop run them in a
thread. The metadata layer calls them from its database thread, inside its
own transaction, so the two stores change together.
"""

from __future__ import annotations

import abc
import os
import shutil
from typing import Iterable

import structlog

from pycontainerd.core import filters
from pycontainerd.pkg.snapshots import KIND_ACTIVE, KIND_VIEW, Info, Mount, Usage, adapt_info

from .storage import MetaStore, Snapshot

log = structlog.get_logger(__name__)


def disk_usage(*roots: str) -> Usage:
    """continuity's fs.DiskUsage: every inode under the roots counted once,
    its allocated blocks (512-byte units) summed."""
    seen: set[tuple[int, int]] = set()
    size = 0

    def account(st: os.stat_result) -> None:
        nonlocal size
        ino = (st.st_dev, st.st_ino)
        if ino not in seen:
            seen.add(ino)
            size += st.st_blocks * 512

    for root in roots:
        account(os.lstat(root))
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                account(os.lstat(os.path.join(dirpath, name)))
    return Usage(size=size, inodes=len(seen))


class LocalSnapshotter(abc.ABC):
    """A snapshotter whose snapshots are directories `<root>/snapshots/<id>`
    recorded in `<root>/metadata.db`."""

    def __init__(self, root: str):
        self.root = root
        os.makedirs(os.path.join(root, "snapshots"), mode=0o700, exist_ok=True)
        self.ms = MetaStore(os.path.join(root, "metadata.db"))

    # -- what each snapshotter provides ------------------------------------------

    @abc.abstractmethod
    def _create(self, kind: int, key: str, parent: str, labels: dict[str, str] | None) -> list[Mount]:
        """Record and lay out a new active or view snapshot; its mounts."""

    @abc.abstractmethod
    def mounts_of(self, s: Snapshot) -> list[Mount]:
        """The mounts that present snapshot `s`."""

    def snapshot_dir(self, sid: str) -> str:
        return os.path.join(self.root, "snapshots", sid)

    def prepare(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        return self._create(KIND_ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        return self._create(KIND_VIEW, key, parent, labels)

    def active_dir(self, sid: str) -> str:
        """The directory whose usage an active snapshot reports."""
        return self.snapshot_dir(sid)

    # -- shared ---------------------------------------------------------------------

    def stat(self, key: str) -> Info:
        with self.ms.transaction() as tx:
            return tx.get_info(key)[1]

    def update(self, info: Info, fieldpaths: Iterable[str] = ()) -> Info:
        with self.ms.transaction(True) as tx:
            return tx.update_info(info, list(fieldpaths))

    def usage(self, key: str) -> Usage:
        with self.ms.transaction() as tx:
            sid, info, usage = tx.get_info(key)
        if info.kind == KIND_ACTIVE:
            return disk_usage(self.active_dir(sid))
        return usage

    def mounts(self, key: str) -> list[Mount]:
        with self.ms.transaction() as tx:
            s = tx.get_snapshot(key)
        return self.mounts_of(s)

    def walk(self, *filter_strings: str) -> list[Info]:
        flt = filters.parse_all(*filter_strings)
        with self.ms.transaction() as tx:
            infos = [info for _, info in tx.walk()]
        return [i for i in infos if flt.match(adapt_info(i))]

    def remove(self, key: str) -> None:
        """Forget the snapshot and delete its directory once the record is
        gone; a directory that survives a crash is an orphan for Cleanup."""
        with self.ms.transaction(True) as tx:
            sid, _ = tx.remove(key)
        self._remove_dir(self.snapshot_dir(sid))

    def cleanup(self) -> None:
        """Remove every directory under snapshots/ that no record names
        (leftovers of a crash or of a failed remove)."""
        snapshots = os.path.join(self.root, "snapshots")
        with self.ms.transaction(True) as tx:
            ids = tx.id_map()
            orphans = [os.path.join(snapshots, d) for d in os.listdir(snapshots) if d not in ids]
        for d in orphans:
            self._remove_dir(d)

    def _remove_dir(self, path: str) -> None:
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("failed to remove directory", path=path, error=str(exc))

    def close(self) -> None:
        self.ms.close()


def wrap(exc: Exception, context: str) -> Exception:
    """The same errdefs class with `context: ` in front, as Go's %w wrapping
    reads on the wire."""
    from pycontainerd.pkg import errdefs

    if isinstance(exc, errdefs.ContainerdError):
        inner = exc.message
        return type(exc)(f"{context}: {inner}" if inner else context)
    return exc

