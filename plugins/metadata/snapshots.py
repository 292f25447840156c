"""The namespaced view of a snapshotter, as containerd's metadata/snapshot.go.

A snapshotter knows nothing of namespaces: it holds one flat set of keys.
Each namespace sees its own keys; the metadata database maps them to
backend keys `<namespace>/<counter>/<key>` that are unique across
namespaces, resolves parents within the namespace, keeps the snapshot's
labels (table `labels`, kind 'snapshot', object `<snapshotter>/<key>`) and
its timestamps (table `snapshots`), and hands the backend only the labels it
should inherit (`containerd.io/snapshot/...`).

Every change runs in one metadata transaction on the database thread, with
the backend call made inside it (the backend is quick: directory and
metastore work), so both stores change together; `recover()` at start-up
settles the one window a crash can still leave (the backend changed, the
metadata transaction not yet committed) and removes backend snapshots no
namespace refers to. Failpoints (core/failpoint.py) sit in that window, so
tests crash the real daemon there. Removing a snapshot removes it from the
backend right away, after the metadata commit.

A lease named in the request header `containerd-lease` records the
snapshot in `lease_resources` with type `snapshots/<snapshotter>`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import structlog

from pycontainerd.core import failpoint, filters
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.labels import check_label_limits, validate_labels
from pycontainerd.pkg.snapshots import KIND_COMMITTED, Info, Mount, Usage, adapt_info
from pycontainerd.plugins.metadata.sqlite import (
    ensure_namespace,
    get_labels,
    labels_after_update,
    put_labels,
)

log = structlog.get_logger(__name__)

INHERITED_PREFIX = "containerd.io/snapshot/"
LABEL_KIND = "snapshot"


def inherited(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith(INHERITED_PREFIX)}


def parse_backend_key(bkey: str) -> tuple[str, str] | None:
    """(namespace, key) of `<namespace>/<counter>/<key>`, or None."""
    parts = bkey.split("/", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], parts[2]


class NamespacedSnapshotter:
    """One snapshotter (`name`) seen through the metadata store."""

    def __init__(self, db: Any, name: str, backend: Any):
        self.db = db
        self.name = name
        self.backend = backend

    # -- helpers (database thread) -------------------------------------------

    def _object(self, key: str) -> str:
        return f"{self.name}/{key}"

    def _row(self, conn: sqlite3.Connection, ns: str, key: str):
        return conn.execute(
            "SELECT backend_key, parent, created_at, updated_at FROM snapshots "
            "WHERE namespace = ? AND snapshotter = ? AND key = ?",
            (ns, self.name, key),
        ).fetchone()

    def _must_row(self, conn: sqlite3.Connection, ns: str, key: str):
        row = self._row(conn, ns, key)
        if row is None:
            raise errdefs.NotFound(f"snapshot {errdefs.cut(key)} does not exist")
        return row

    def _next_key(self, conn: sqlite3.Connection, ns: str, key: str) -> str:
        seq = conn.execute("SELECT COALESCE(MAX(rowid), 0) + 1 FROM snapshots").fetchone()[0]
        while conn.execute(
            "SELECT 1 FROM snapshots WHERE snapshotter = ? AND backend_key = ?", (self.name, f"{ns}/{seq}/{key}")
        ).fetchone():
            seq += 1
        return f"{ns}/{seq}/{key}"

    def _add_lease(self, conn: sqlite3.Connection, ns: str, lease: str, key: str) -> None:
        if not lease:
            return
        if conn.execute("SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (ns, lease)).fetchone() is None:
            raise errdefs.NotFound("lease does not exist")
        conn.execute(
            "INSERT OR IGNORE INTO lease_resources VALUES (?, ?, ?, ?)", (ns, lease, f"snapshots/{self.name}", key)
        )

    def _remove_lease(self, conn: sqlite3.Connection, ns: str, lease: str, key: str) -> None:
        if lease:
            conn.execute(
                "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?",
                (ns, lease, f"snapshots/{self.name}", key),
            )

    def _overlay(self, binfo: Info, ns: str, key: str, row, labels: dict[str, str]) -> Info:
        """containerd's overlayInfo: the backend's kind, the namespace's name,
        parent, times, and labels (metadata labels win)."""
        merged = dict(binfo.labels)
        merged.update(labels)
        return Info(name=key, kind=binfo.kind, parent=row[1], labels=merged, created=row[2], updated=row[3])

    async def _backend_key(self, ns: str, key: str) -> str:
        return await self.db.view(lambda conn: self._must_row(conn, ns, key)[0])

    # -- the Snapshotter API ---------------------------------------------------

    async def stat(self, ns: str, key: str) -> Info:
        def tx(conn: sqlite3.Connection):
            row = self._must_row(conn, ns, key)
            labels = get_labels(conn, ns, LABEL_KIND, self._object(key))
            return row, labels

        row, labels = await self.db.view(tx)
        binfo = await asyncio.to_thread(self.backend.stat, row[0])
        return self._overlay(binfo, ns, key, row, labels)

    async def update(self, ns: str, info: Info, paths: list[str]) -> Info:
        if not info.name:
            raise errdefs.InvalidArgument("")
        check_label_limits(info.labels, paths)

        def tx(conn: sqlite3.Connection) -> Info:
            row = self._must_row(conn, ns, info.name)
            current = get_labels(conn, ns, LABEL_KIND, self._object(info.name))
            labels = labels_after_update(current, info.labels, paths, f"snapshot {errdefs.quote(info.name)}")
            now = time.time_ns()
            put_labels(conn, ns, LABEL_KIND, self._object(info.name), labels, replace=True)
            conn.execute(
                "UPDATE snapshots SET updated_at = ? WHERE namespace = ? AND snapshotter = ? AND key = ?",
                (now, ns, self.name, info.name),
            )
            binfo = self.backend.update(Info(name=row[0], labels=inherited(labels)), paths)
            return self._overlay(binfo, ns, info.name, (row[0], row[1], row[2], now), labels)

        return await self.db.update(tx)

    async def usage(self, ns: str, key: str) -> Usage:
        return await asyncio.to_thread(self.backend.usage, await self._backend_key(ns, key))

    async def mounts(self, ns: str, key: str) -> list[Mount]:
        return await asyncio.to_thread(self.backend.mounts, await self._backend_key(ns, key))

    async def prepare(self, ns: str, key: str, parent: str, labels: dict[str, str], lease: str = "") -> list[Mount]:
        return await self._create(ns, key, parent, labels, lease, readonly=False)

    async def view(self, ns: str, key: str, parent: str, labels: dict[str, str], lease: str = "") -> list[Mount]:
        return await self._create(ns, key, parent, labels, lease, readonly=True)

    async def _create(self, ns: str, key: str, parent: str, labels: dict[str, str], lease: str,
                      readonly: bool) -> list[Mount]:
        if not key:
            raise errdefs.InvalidArgument("snapshot key must not be empty")
        labels = {k: v for k, v in labels.items() if v}
        try:
            validate_labels(labels)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"info.Labels: {exc.message}") from None

        def tx(conn: sqlite3.Connection) -> list[Mount]:
            ensure_namespace(conn, ns)
            if self._row(conn, ns, key) is not None:
                raise errdefs.AlreadyExists(f'snapshot "{errdefs.cut(key)}"')
            bparent = ""
            if parent:
                prow = self._row(conn, ns, parent)
                if prow is None:
                    raise errdefs.NotFound(f"parent snapshot {errdefs.cut(parent)} does not exist")
                bparent = prow[0]
            self._add_lease(conn, ns, lease, key)
            bkey = self._next_key(conn, ns, key)
            now = time.time_ns()
            conn.execute(
                "INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ns, self.name, key, bkey, parent, now, now),
            )
            put_labels(conn, ns, LABEL_KIND, self._object(key), labels, replace=True)
            create = self.backend.view if readonly else self.backend.prepare
            mounts = create(bkey, bparent, inherited(labels))
            # a crash here leaves a backend snapshot no record names
            failpoint.hit("snapshots.view.after-backend" if readonly else "snapshots.prepare.after-backend")
            return mounts

        return await self.db.update(tx)

    async def commit(self, ns: str, name: str, key: str, labels: dict[str, str], lease: str = "") -> None:
        labels = {k: v for k, v in labels.items() if v}
        try:
            validate_labels(labels)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"info.Labels: {exc.message}") from None

        def tx(conn: sqlite3.Connection) -> None:
            if self._row(conn, ns, name) is not None:
                raise errdefs.AlreadyExists(f'snapshot "{errdefs.cut(name)}"')
            self._add_lease(conn, ns, lease, name)
            row = self._must_row(conn, ns, key)
            bkey = row[0]
            name_key = self._next_key(conn, ns, name)
            now = time.time_ns()
            # the active record becomes the committed one (an update, not a
            # delete: a commit frees nothing, so it must not look like a
            # deletion to the garbage collector)
            conn.execute(
                "UPDATE snapshots SET key = ?, backend_key = ?, created_at = ?, updated_at = ? "
                "WHERE namespace = ? AND snapshotter = ? AND key = ?",
                (name, name_key, now, now, ns, self.name, key),
            )
            conn.execute("DELETE FROM labels WHERE namespace = ? AND kind = ? AND object = ?",
                         (ns, LABEL_KIND, self._object(key)))
            put_labels(conn, ns, LABEL_KIND, self._object(name), labels, replace=True)
            self._remove_lease(conn, ns, lease, key)
            self.backend.commit(name_key, bkey, inherited(labels))
            # a crash here leaves the backend committed, the metadata not
            failpoint.hit("snapshots.commit.after-backend")

        await self.db.update(tx)

    async def remove(self, ns: str, key: str, lease: str = "") -> None:
        def tx(conn: sqlite3.Connection) -> str:
            row = self._must_row(conn, ns, key)
            if conn.execute(
                "SELECT 1 FROM snapshots WHERE namespace = ? AND snapshotter = ? AND parent = ? LIMIT 1",
                (ns, self.name, key),
            ).fetchone():
                raise errdefs.FailedPrecondition("cannot remove snapshot with child")
            conn.execute(
                "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?", (ns, self.name, key)
            )
            conn.execute("DELETE FROM labels WHERE namespace = ? AND kind = ? AND object = ?",
                         (ns, LABEL_KIND, self._object(key)))
            self._remove_lease(conn, ns, lease, key)
            return row[0]

        bkey = await self.db.update(tx)
        try:
            await asyncio.to_thread(self.backend.remove, bkey)
        except errdefs.NotFound:
            pass
        except Exception as exc:  # the metadata no longer names it: recover() or Cleanup will
            log.warning("backend remove failed", snapshotter=self.name, key=bkey, error=str(exc))

    async def walk(self, ns: str, *filter_strings: str) -> list[Info]:
        flt = await filters.parse_all_off_loop(*filter_strings)

        def tx(conn: sqlite3.Connection):
            rows = conn.execute(
                "SELECT key, backend_key, parent, created_at, updated_at FROM snapshots "
                "WHERE namespace = ? AND snapshotter = ? ORDER BY key",
                (ns, self.name),
            ).fetchall()
            labels: dict[str, dict[str, str]] = {}
            prefix = self.name + "/"
            for obj, k, v in conn.execute(
                "SELECT object, key, value FROM labels WHERE namespace = ? AND kind = ? ORDER BY object, key",
                (ns, LABEL_KIND),
            ):
                if obj.startswith(prefix):
                    labels.setdefault(obj[len(prefix):], {})[k] = v
            return rows, labels

        rows, labels = await self.db.view(tx)
        binfos = {i.name: i for i in await asyncio.to_thread(self.backend.walk)}

        def select() -> list[Info]:  # off the loop: many rows, any filter
            out = []
            for key, bkey, parent, created, updated in rows:
                binfo = binfos.get(bkey)
                if binfo is None:
                    continue
                info = self._overlay(binfo, ns, key, (bkey, parent, created, updated), labels.get(key, {}))
                if flt.match(adapt_info(info)):
                    out.append(info)
            return out

        return await filters.matching(flt, select)

    async def cleanup(self) -> None:
        cleanup = getattr(self.backend, "cleanup", None)  # optional (pkg.snapshots.Cleaner)
        if cleanup is not None:
            await asyncio.to_thread(cleanup)

    # -- start-up -------------------------------------------------------------

    async def recover(self) -> None:
        """Make the metadata and the backend agree after a crash, without
        losing anything either side can still account for."""
        binfos = {i.name: i for i in await asyncio.to_thread(self.backend.walk)}

        def tx(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT namespace, key, backend_key, parent FROM snapshots WHERE snapshotter = ?", (self.name,)
            ).fetchall()
            by_bkey = {r[2]: r for r in rows}
            # a commit the backend made but the metadata did not record: roll it forward
            for bkey, binfo in sorted(binfos.items()):
                if bkey in by_bkey or binfo.kind != KIND_COMMITTED:
                    continue
                parsed = parse_backend_key(bkey)
                if parsed is None:
                    continue
                ns, name = parsed
                parent = ""
                if binfo.parent:
                    prow = by_bkey.get(binfo.parent)
                    if prow is None or prow[0] != ns:
                        continue
                    parent = prow[1]
                if self._row(conn, ns, name) is not None:
                    continue
                now = time.time_ns()
                ensure_namespace(conn, ns)
                conn.execute(
                    "INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (ns, self.name, name, bkey, parent, binfo.created or now, binfo.updated or now),
                )
                put_labels(conn, ns, LABEL_KIND, self._object(name), binfo.labels)
                by_bkey[bkey] = (ns, name, bkey, parent)
                log.warning("recovered committed snapshot", snapshotter=self.name, namespace=ns, key=name)
            # records whose backend snapshot is gone: drop them, children first
            missing = [r for r in by_bkey.values() if r[2] not in binfos]
            for ns, key, bkey, _ in missing:
                conn.execute("DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
                             (ns, self.name, key))
                conn.execute("DELETE FROM labels WHERE namespace = ? AND kind = ? AND object = ?",
                             (ns, LABEL_KIND, self._object(key)))
                conn.execute("DELETE FROM lease_resources WHERE namespace = ? AND type = ? AND id = ?",
                             (ns, f"snapshots/{self.name}", key))
                log.warning("dropped snapshot record missing in the backend", snapshotter=self.name,
                            namespace=ns, key=key)
            return [b for b in binfos if b not in by_bkey]

        orphans = await self.db.update(tx)
        await asyncio.to_thread(self._remove_orphans, orphans, binfos)

    def _remove_orphans(self, orphans: list[str], binfos: dict[str, Info]) -> None:
        """Remove backend snapshots no record names, children before parents."""
        left = set(orphans)
        while left:
            parents = {binfos[b].parent for b in binfos if binfos[b].parent}
            leaves = [b for b in left if b not in parents]
            if not leaves:
                break
            for b in leaves:
                try:
                    self.backend.remove(b)
                except Exception as exc:
                    log.warning("orphan remove failed", snapshotter=self.name, key=b, error=str(exc))
                left.discard(b)
                binfos.pop(b, None)
        cleanup = getattr(self.backend, "cleanup", None)  # optional (pkg.snapshots.Cleaner)
        try:
            if cleanup is not None:
                cleanup()
        except Exception as exc:
            log.warning("cleanup failed", snapshotter=self.name, error=str(exc))
