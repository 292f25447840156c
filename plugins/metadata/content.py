"""Each namespace's view of the shared content store (containerd's
metadata/content.go), kept in the sqlite metadata database.

The local store holds every blob once. A namespace sees a blob only when it
has a row in `blobs` for it: the row is written when a writer in that
namespace commits. When a blob already exists on disk (another namespace
ingested it) and the writer declares its expected digest and a matching
size, nothing is copied: the ingest is recorded as "shared" (`expected` set
in the `ingests` row), the client is told its offset is already the full
size, and the commit only adds the row. This is containerd's "shared"
content sharing policy.

Ingests are namespaced as well: the namespace's ref maps to a backend ref
`<namespace>/<ref>` in the local store, so two namespaces may use the same
ref without meeting. Labels live in the generic `labels` table (kind
'content'). When the request names a lease (gRPC metadata
`containerd-lease`), the ingest and then the committed blob are added to
that lease's resources (types "ingests" and "content"); the lease must exist.

Deleting a blob removes only this namespace's row. The file itself is
removed when no namespace (and no shared ingest) refers to it any more; the
garbage collector will take over that job, at which point it can turn
`delete_unreferenced` off.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from typing import AsyncIterator

from pycontainerd.core import filters
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.labels import check_label_limits, validate_labels
from pycontainerd.pkg.content import Info, Status, Store, adapt_info, adapt_status
from pycontainerd.pkg.digest import validate_digest
from pycontainerd.plugins.metadata.sqlite import (
    DB,
    ensure_namespace,
    get_labels,
    labels_after_update,
    put_labels,
)

KIND = "content"
UNLEASED_INGEST_TTL_NS = 24 * 3600 * 1_000_000_000


class RWLock:
    """Many commits at once, or one delete: a commit must not see its blob
    vanish between the backend commit and its row (containerd's cs.l).
    A waiting delete (or collection) goes before commits that arrive after
    it, as with Go's RWMutex: a steady stream of writers cannot starve it."""

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            async with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            self._writers_waiting += 1
            try:
                await self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            finally:
                self._writers_waiting -= 1
                self._cond.notify_all()
            self._writer = True
        try:
            yield
        finally:
            async with self._cond:
                self._writer = False
                self._cond.notify_all()


def backend_ref(namespace: str, ref: str) -> str:
    return f"{namespace}/{ref}"


def _check_lease(conn: sqlite3.Connection, namespace: str, lease: str) -> None:
    if conn.execute("SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (namespace, lease)).fetchone() is None:
        raise errdefs.NotFound("lease does not exist")


def _add_lease_resource(conn: sqlite3.Connection, namespace: str, lease: str, type_: str, id_: str) -> None:
    _check_lease(conn, namespace, lease)
    conn.execute("INSERT OR IGNORE INTO lease_resources VALUES (?, ?, ?, ?)", (namespace, lease, type_, id_))


def _remove_lease_resource(conn: sqlite3.Connection, namespace: str, lease: str, type_: str, id_: str) -> None:
    conn.execute(
        "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?",
        (namespace, lease, type_, id_),
    )


def _read_info(conn: sqlite3.Connection, namespace: str, dgst: str) -> Info | None:
    row = conn.execute(
        "SELECT size, created_at, updated_at FROM blobs WHERE namespace = ? AND digest = ?", (namespace, dgst)
    ).fetchone()
    if row is None:
        return None
    return Info(dgst, row[0], row[1], row[2], get_labels(conn, namespace, KIND, dgst))


class ContentStore:
    """The namespaced content store. Every call names its namespace (and,
    optionally, the lease the request carries)."""

    def __init__(self, db: DB, backend: Store, shared: bool = True, delete_unreferenced: bool = True):
        self.db = db
        self.backend = backend
        self.shared = shared
        self.delete_unreferenced = delete_unreferenced
        self.lock = RWLock()
        # per ingest: opening a writer (existence check + backend writer) and
        # committing (backend commit + blob record) never interleave, as in
        # containerd, where both happen in one bolt write transaction; else a
        # writer opened between a commit's two steps ingests the blob again
        self._ingest_locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def ingest_lock(self, namespace: str, ref: str):
        key = (namespace, ref)
        lock, users = self._ingest_locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._ingest_locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._ingest_locks[key]
            if users == 1:
                del self._ingest_locks[key]
            else:
                self._ingest_locks[key] = (lock, users - 1)

    # -- blobs ------------------------------------------------------------------

    async def info(self, namespace: str, dgst: str) -> Info:
        def tx(conn: sqlite3.Connection) -> Info:
            info = _read_info(conn, namespace, dgst)
            if info is None:
                raise errdefs.NotFound(f"content digest {errdefs.cut(dgst)}")
            return info

        return await self.db.view(tx)

    async def update(self, namespace: str, info: Info, paths: list[str] | tuple[str, ...] = ()) -> Info:
        """Only labels are mutable: `labels` replaces them all, `labels.<k>`
        sets (or, with an empty value, removes) one; no paths = `labels`."""
        dgst = info.digest
        check_label_limits(info.labels, paths)

        def tx(conn: sqlite3.Connection) -> Info:
            current = _read_info(conn, namespace, dgst)
            if current is None:
                raise errdefs.NotFound(f"content digest {errdefs.cut(dgst)}")
            labels = labels_after_update(current.labels, info.labels, paths, f"content info {errdefs.go_quote(dgst)}")
            put_labels(conn, namespace, KIND, dgst, labels, replace=True)
            now = time.time_ns()
            conn.execute("UPDATE blobs SET updated_at = ? WHERE namespace = ? AND digest = ?", (now, namespace, dgst))
            return Info(dgst, current.size, current.created_at, now, labels)

        return await self.db.update(tx)

    async def list(self, namespace: str, *filter_strings: str) -> list[Info]:
        flt = await filters.parse_all_off_loop(*filter_strings)

        def tx(conn: sqlite3.Connection) -> list[Info]:
            rows = conn.execute(
                "SELECT digest, size, created_at, updated_at FROM blobs WHERE namespace = ? ORDER BY digest",
                (namespace,),
            ).fetchall()
            labels: dict[str, dict[str, str]] = {}
            for obj, k, v in conn.execute(
                "SELECT object, key, value FROM labels WHERE namespace = ? AND kind = ? ORDER BY object, key",
                (namespace, KIND),
            ):
                labels.setdefault(obj, {})[k] = v
            return [Info(dgst, size, created, updated, labels.get(dgst, {})) for dgst, size, created, updated in rows]

        # matched off the database thread: a heavy filter must not hold it
        return await filters.select(flt, await self.db.view(tx), adapt_info)

    async def delete(self, namespace: str, dgst: str, lease: str = "") -> None:
        async with self.lock.exclusive():

            def tx(conn: sqlite3.Connection) -> bool:
                cur = conn.execute("DELETE FROM blobs WHERE namespace = ? AND digest = ?", (namespace, dgst))
                if cur.rowcount == 0:
                    raise errdefs.NotFound(f"content digest {errdefs.cut(dgst)}")
                conn.execute(
                    "DELETE FROM labels WHERE namespace = ? AND kind = ? AND object = ?", (namespace, KIND, dgst)
                )
                if lease:
                    _remove_lease_resource(conn, namespace, lease, "content", dgst)
                still = conn.execute(
                    "SELECT 1 FROM blobs WHERE digest = ? UNION ALL SELECT 1 FROM ingests WHERE expected = ? LIMIT 1",
                    (dgst, dgst),
                ).fetchone()
                return still is None

            unreferenced = await self.db.update(tx)
            if unreferenced and self.delete_unreferenced:
                try:
                    await self.backend.delete(dgst)
                except errdefs.NotFound:
                    pass

    async def reader_at(self, namespace: str, dgst: str):
        await self.info(namespace, dgst)  # access check: the namespace must have it
        return await self.backend.reader_at(dgst)

    # -- ingests ------------------------------------------------------------------

    async def status(self, namespace: str, ref: str) -> Status:
        def tx(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "SELECT 1 FROM ingests WHERE namespace = ? AND ref = ?", (namespace, ref)
            ).fetchone() is not None

        if not await self.db.view(tx):
            raise errdefs.NotFound(f"reference {errdefs.cut(ref)}")
        st = await self.backend.status(backend_ref(namespace, ref))
        st.ref = ref
        return st

    async def list_statuses(self, namespace: str, *filter_strings: str) -> list[Status]:
        flt = await filters.parse_all_off_loop(*filter_strings)

        def tx(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT ref FROM ingests WHERE namespace = ? ORDER BY ref", (namespace,))]

        found = []
        for ref in await self.db.view(tx):
            try:
                st = await self.backend.status(backend_ref(namespace, ref))
            except errdefs.NotFound:
                continue
            st.ref = ref
            found.append(st)
        return await filters.select(flt, found, adapt_status)

    async def abort(self, namespace: str, ref: str, lease: str = "") -> None:
        async with self.lock.shared():

            def tx(conn: sqlite3.Connection) -> str:
                row = conn.execute(
                    "SELECT expected FROM ingests WHERE namespace = ? AND ref = ?", (namespace, ref)
                ).fetchone()
                if row is None:
                    raise errdefs.NotFound(f"reference {errdefs.cut(ref)}")
                conn.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (namespace, ref))
                if lease:
                    _remove_lease_resource(conn, namespace, lease, "ingests", ref)
                return row[0]

            expected = await self.db.update(tx)
            if not expected:  # a shared ingest has nothing on the backend
                try:
                    await self.backend.abort(backend_ref(namespace, ref))
                except errdefs.NotFound:
                    pass

    async def writer(self, namespace: str, ref: str, total: int = 0, expected: str = "",
                     lease: str = "") -> "NamespacedWriter":
        if not ref:
            raise errdefs.InvalidArgument("ref must not be empty")
        if expected:
            validate_digest(expected)
        existing = None  # the backend's blob, which a shared store lets this namespace take

        def tx(conn: sqlite3.Connection) -> tuple[bool, bool, int, bool]:
            ensure_namespace(conn, namespace)
            size = total
            shared = False
            if expected:
                if conn.execute(
                    "SELECT 1 FROM blobs WHERE namespace = ? AND digest = ?", (namespace, expected)
                ).fetchone():
                    if lease:
                        try:
                            _add_lease_resource(conn, namespace, lease, "content", expected)
                        except errdefs.NotFound as exc:
                            raise errdefs.NotFound(f"unable to lease content: {exc.message}") from None
                    return True, False, size, False
                if existing is not None and (size == 0 or size == existing.size):
                    shared, size = True, existing.size
            created = conn.execute(
                "INSERT OR IGNORE INTO ingests (namespace, ref) VALUES (?, ?)", (namespace, ref)
            ).rowcount == 1
            if lease:
                _add_lease_resource(conn, namespace, lease, "ingests", ref)
                conn.execute(
                    "UPDATE ingests SET lease = ?, expires_at = 0 WHERE namespace = ? AND ref = ?",
                    (lease, namespace, ref),
                )
            elif created:  # no lease to hold it: it may wait a day for its writer, as in containerd
                conn.execute(
                    "UPDATE ingests SET expires_at = ? WHERE namespace = ? AND ref = ?",
                    (time.time_ns() + UNLEASED_INGEST_TTL_NS, namespace, ref),
                )
            if shared:
                conn.execute(
                    "UPDATE ingests SET expected = ? WHERE namespace = ? AND ref = ?", (expected, namespace, ref)
                )
            return False, shared, size, created

        async with self.ingest_lock(namespace, ref), self.lock.shared():  # GC, which deletes blobs, waits for it
            if expected and self.shared:
                try:
                    existing = await self.backend.info(expected)
                except errdefs.NotFound:
                    pass
            exists, shared, size, created = await self.db.update(tx)
            if exists:
                raise errdefs.AlreadyExists(f"content {expected}")
            bref = backend_ref(namespace, ref)
            w = None
            if not shared:
                try:
                    # the expected digest is checked against this namespace
                    # above; the backend must not refuse a blob another
                    # namespace has
                    w = await self.backend.writer(bref, total, "")
                except BaseException:
                    if created:
                        await self.db.update(
                            lambda c: c.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (namespace, ref))
                        )
                    raise
        return NamespacedWriter(self, namespace, ref, bref, w, size, expected if shared else "", lease)


class NamespacedWriter:
    """A writer in one namespace. With no backend writer, the ingest is a
    shared one: the blob exists already and only needs this namespace's
    row; writing data anyway turns it into a real copy first."""

    def __init__(self, store: ContentStore, namespace: str, ref: str, bref: str, w, size: int, dgst: str,
                 lease: str):
        self.store = store
        self.namespace = namespace
        self.ref = ref
        self.bref = bref
        self.w = w
        self.size = size
        self.expected = dgst
        self.lease = lease
        self.started = time.time_ns()

    def status(self) -> Status:
        if self.w is not None:
            st = self.w.status()
        else:
            st = Status(ref=self.ref, offset=self.size, total=self.size, expected=self.expected,
                        started_at=self.started, updated_at=self.started)
        st.ref = self.ref
        return st

    def digest(self) -> str:
        return self.w.digest() if self.w is not None else self.expected

    async def write(self, data) -> int:
        if self.w is None:
            if not len(data):
                return 0
            await self._create_and_copy(self.size)
        return await self.w.write(data)

    async def truncate(self, size: int) -> None:
        if self.w is not None:
            await self.w.truncate(size)
        else:
            await self._create_and_copy(size)

    async def _create_and_copy(self, size: int) -> None:
        backend = self.store.backend
        w = await backend.writer(self.bref, 0, "")
        try:
            if size > 0:
                ra = await backend.reader_at(self.expected)
                try:
                    def copy() -> None:
                        off = 0
                        while off < size:
                            chunk = ra.read_at_sync(off, min(1 << 20, size - off))
                            if not chunk:
                                raise errdefs.FailedPrecondition("short read while copying a shared blob")
                            w.write_sync(chunk)
                            off += len(chunk)

                    await asyncio.to_thread(copy)
                finally:
                    ra.close()
        except BaseException:
            await w.close()
            raise
        self.w = w

    async def commit(self, size: int = 0, expected: str = "", labels: dict[str, str] | None = None) -> str:
        """Commit in this namespace. AlreadyExists when the namespace had the
        blob already (the ingest is still cleaned up, as containerd does)."""
        ns, ref, lease = self.namespace, self.ref, self.lease
        labels = {k: v for k, v in (labels or {}).items()}
        try:
            validate_labels(labels)
        except errdefs.InvalidArgument as exc:
            await self.close()
            raise errdefs.InvalidArgument(f"info.Labels: {exc.message}") from None
        async with self.store.ingest_lock(ns, ref), self.store.lock.shared():
            if self.w is None:
                if size and size != self.size:
                    raise errdefs.FailedPrecondition(f'"{errdefs.cut(ref)}" failed size validation: {self.size} != {size}')
                if expected and expected != self.expected:
                    raise errdefs.FailedPrecondition(f'"{errdefs.cut(ref)}" unexpected digest')
                size, actual = self.size, self.expected
            else:
                offset = self.w.offset
                if size and size != offset:
                    await self.w.close()
                    raise errdefs.FailedPrecondition(f'"{errdefs.cut(ref)}" failed size validation: {offset} != {size}')
                size = offset
                try:
                    actual = await self.w.commit(size, expected)
                except errdefs.AlreadyExists:
                    actual = self.w.digest()

            def tx(conn: sqlite3.Connection) -> bool:
                ensure_namespace(conn, ns)
                now = time.time_ns()
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO blobs (namespace, digest, size, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    (ns, actual, size, now, now),
                ).rowcount == 1
                if inserted and labels:
                    put_labels(conn, ns, KIND, actual, labels, replace=True)
                conn.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
                if lease:
                    _remove_lease_resource(conn, ns, lease, "ingests", ref)
                    _add_lease_resource(conn, ns, lease, "content", actual)
                return inserted

            if not await self.store.db.update(tx):
                raise errdefs.AlreadyExists(f"content {actual}")
            return actual

    async def close(self) -> None:
        if self.w is not None:
            await self.w.close()
