"""A snapshotter's own metastore, as containerd's snapshots/storage package.

Every local snapshotter keeps the record of its snapshots (numeric ids that
name the directories on disk, kinds, parent chains, labels, timestamps and
the usage computed at commit) in one sqlite database under its root,
`metadata.db`. A snapshotter opens a transaction, does its filesystem work
while the transaction is open, and commits only when the disk is ready, so a
crash leaves either the old record or the new one, never half of each; a
directory without a record is an orphan that `Cleanup` removes.

The semantics and error wording are containerd's (bolt.go): creating from a
parent that is not committed is refused, committing anything but an active
snapshot is refused, removing a snapshot that still has children is refused,
and an unknown key is NotFound. Ids are never reused (AUTOINCREMENT), so a
directory left behind by a crash can never be mistaken for a new snapshot.

All methods block: snapshotters call them from a worker thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from pycontainerd.pkg import errdefs
from pycontainerd.pkg.labels import update_by_paths
from pycontainerd.pkg.snapshots import KIND_ACTIVE, KIND_COMMITTED, KIND_NAMES, KIND_VIEW, Info, Usage


@dataclass
class Snapshot:
    """What a snapshotter needs to build mounts: its id, kind and the ids of
    its parents, nearest first."""

    id: str
    kind: int
    parent_ids: list[str]


SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    key     TEXT NOT NULL UNIQUE,
    kind    INTEGER NOT NULL,
    parent  TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    size    INTEGER NOT NULL DEFAULT 0,
    inodes  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots (parent);
CREATE TABLE IF NOT EXISTS labels (
    key   TEXT NOT NULL,
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (key, name)
);
"""


class Tx:
    """One transaction: the operations of containerd's storage package."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    # -- reading ------------------------------------------------------------

    def _row(self, key: str):
        return self.conn.execute(
            "SELECT id, kind, parent, created, updated, size, inodes FROM snapshots WHERE key = ?", (key,)
        ).fetchone()

    def _labels(self, key: str) -> dict[str, str]:
        return dict(self.conn.execute("SELECT name, value FROM labels WHERE key = ? ORDER BY name", (key,)).fetchall())

    def get_info(self, key: str) -> tuple[str, Info, Usage]:
        """(id, info, usage) of a snapshot; NotFound when the key is unknown."""
        row = self._row(key)
        if row is None:
            raise errdefs.NotFound("snapshot does not exist")
        sid, kind, parent, created, updated, size, inodes = row
        info = Info(key, kind, parent, self._labels(key), created, updated)
        return str(sid), info, Usage(size, inodes)

    def walk(self) -> Iterator[tuple[str, Info]]:
        rows = self.conn.execute("SELECT id, key, kind, parent, created, updated FROM snapshots ORDER BY key").fetchall()
        for sid, key, kind, parent, created, updated in rows:
            yield str(sid), Info(key, kind, parent, self._labels(key), created, updated)

    def parent_ids(self, parent: str) -> list[str]:
        """The ids of `parent` and its ancestors, nearest first."""
        if not parent:
            return []
        rows = self.conn.execute(
            "WITH RECURSIVE chain(id, parent, depth) AS ("
            " SELECT id, parent, 0 FROM snapshots WHERE key = ?"
            " UNION ALL SELECT s.id, s.parent, c.depth + 1 FROM snapshots s JOIN chain c ON s.key = c.parent)"
            " SELECT id, parent FROM chain ORDER BY depth",
            (parent,),
        ).fetchall()
        if not rows or rows[-1][1]:
            raise errdefs.NotFound("missing parent")
        return [str(r[0]) for r in rows]

    def get_snapshot(self, key: str) -> Snapshot:
        """An active snapshot or a view, with its parent chain."""
        row = self._row(key)
        if row is None:
            raise errdefs.NotFound("snapshot does not exist")
        sid, kind, parent = row[0], row[1], row[2]
        if kind not in (KIND_ACTIVE, KIND_VIEW):
            raise errdefs.FailedPrecondition(f"requested snapshot {key} not active or view")
        try:
            parents = self.parent_ids(parent)
        except errdefs.NotFound:
            raise errdefs.NotFound("parent does not exist") from None
        return Snapshot(str(sid), kind, parents)

    def id_map(self) -> dict[str, str]:
        return {str(sid): key for sid, key in self.conn.execute("SELECT id, key FROM snapshots")}

    # -- writing ------------------------------------------------------------

    def _put_labels(self, key: str, labels: dict[str, str]) -> None:
        self.conn.execute("DELETE FROM labels WHERE key = ?", (key,))
        self.conn.executemany("INSERT INTO labels VALUES (?, ?, ?)", [(key, k, v) for k, v in labels.items() if v])

    def create_snapshot(self, kind: int, key: str, parent: str = "", labels: dict[str, str] | None = None) -> Snapshot:
        if kind not in (KIND_ACTIVE, KIND_VIEW):
            raise errdefs.InvalidArgument(
                f"snapshot type {KIND_NAMES.get(kind, 'Unknown')} invalid; only snapshots of type Active or View can be created"
            )
        parent_ids: list[str] = []
        if parent:
            prow = self._row(parent)
            if prow is None:
                raise errdefs.NotFound(f'missing parent "{parent}" bucket')
            if prow[1] != KIND_COMMITTED:
                raise errdefs.InvalidArgument(f'parent "{parent}" is not committed snapshot')
            parent_ids = self.parent_ids(parent)
        if self._row(key) is not None:
            raise errdefs.AlreadyExists(f"snapshot {key}")
        now = time.time_ns()
        cur = self.conn.execute(
            "INSERT INTO snapshots (key, kind, parent, created, updated) VALUES (?, ?, ?, ?, ?)",
            (key, kind, parent, now, now),
        )
        self._put_labels(key, labels or {})
        return Snapshot(str(cur.lastrowid), kind, parent_ids)

    def update_info(self, info: Info, fieldpaths: list[str] | tuple[str, ...] = ()) -> Info:
        row = self._row(info.name)
        if row is None:
            raise errdefs.NotFound("snapshot does not exist")
        labels = update_by_paths(self._labels(info.name), info.labels, fieldpaths,
                                 f"snapshot {errdefs.quote(info.name)}")
        now = time.time_ns()
        self.conn.execute("UPDATE snapshots SET updated = ? WHERE key = ?", (now, info.name))
        self._put_labels(info.name, labels)
        return Info(info.name, row[1], row[2], labels, row[3], now)

    def commit_active(self, key: str, name: str, usage: Usage, labels: dict[str, str] | None = None) -> str:
        """Turn active `key` into committed `name`, keeping its id (and so its
        directory). Labels are replaced, not inherited."""
        if self._row(name) is not None:
            raise errdefs.AlreadyExists(f"committed snapshot {name}")
        row = self._row(key)
        if row is None:
            raise errdefs.NotFound(f'failed to get active snapshot "{key}"')
        if row[1] != KIND_ACTIVE:
            raise errdefs.FailedPrecondition(f'snapshot "{key}" is not active')
        now = time.time_ns()
        self.conn.execute(
            "UPDATE snapshots SET key = ?, kind = ?, created = ?, updated = ?, size = ?, inodes = ? WHERE key = ?",
            (name, KIND_COMMITTED, now, now, usage.size, usage.inodes, key),
        )
        self.conn.execute("DELETE FROM labels WHERE key = ?", (key,))
        self._put_labels(name, labels or {})
        return str(row[0])

    def remove(self, key: str) -> tuple[str, int]:
        """Forget a snapshot; returns (id, kind). Refused while it has children."""
        row = self._row(key)
        if row is None:
            raise errdefs.NotFound(f"snapshot {key}")
        if self.conn.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1", (key,)).fetchone():
            raise errdefs.FailedPrecondition("cannot remove snapshot with child")
        self.conn.execute("DELETE FROM snapshots WHERE key = ?", (key,))
        self.conn.execute("DELETE FROM labels WHERE key = ?", (key,))
        return str(row[0]), row[1]


class MetaStore:
    """The database file and its transactions (one at a time)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.RLock()
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        self._conn: sqlite3.Connection | None = conn

    @contextlib.contextmanager
    def transaction(self, writable: bool = False) -> Iterator[Tx]:
        """Commits when the block ends normally, rolls back when it raises."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise errdefs.Unavailable("metastore is closed")
            conn.execute("BEGIN IMMEDIATE" if writable else "BEGIN")
            try:
                yield Tx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
