"""Garbage collection over the metadata store, as containerd's metadata/gc.go
and metadata/db.go do it.

A collection has three steps:

1. Mark (one transaction): starting from the roots, follow references and
   collect every reachable node. Roots are, per namespace:
   - leases that have not expired (`containerd.io/gc.expire`, RFC 3339), and
     every resource they hold (content, ingests, snapshots/<snapshotter>);
     a lease labelled `containerd.io/gc.flat` holds its content and
     snapshots "flat": snapshot parents are kept, labelled references are
     not followed;
   - images (their target digest and their labelled references);
   - ingests not started under a lease, for 24 hours from their start (as
     containerd), and ingests whose lease is alive;
   - blobs and snapshots labelled `containerd.io/gc.root`;
   - containers (their snapshot and their labelled references).
   References are the labels `containerd.io/gc.ref.content`,
   `containerd.io/gc.ref.content.<name>` (or `/<name>`) naming a digest,
   `containerd.io/gc.ref.snapshot.<snapshotter>[/<name>]` naming a snapshot
   key, a snapshot's parent, and an ingest's expected digest.
2. Sweep (the same transaction): every lease, ingest, blob and snapshot
   record not marked is deleted, with its labels. Images and containers are
   never swept.
3. Clean up the shared stores: blobs on disk that no namespace has a record
   of (and that no ingest expects) are deleted from the content store, and
   ingests no namespace knows are aborted; each snapshotter whose records
   changed walks its snapshots and removes those no namespace holds,
   children before parents. This runs on the database thread inside a
   transaction, so it cannot interleave with a metadata store's change that
   writes the backend and the records together.

The collector also plays the part of containerd's DB.RegisterMutationCallback:
temporary triggers on the metadata tables tell it about every change (and
whether something was deleted, which makes the next collection worthwhile),
without the stores having to report to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import structlog

from pycontainerd.pkg.leases import LABEL_EXPIRE, LABEL_FLAT

from .leases import RESOURCE_CONTENT, RESOURCE_INGESTS, RESOURCE_SNAPSHOTS, delete_lease_rows
from .sqlite import DB

log = structlog.get_logger(__name__)

LABEL_ROOT = "containerd.io/gc.root"
LABEL_REF_CONTENT = "containerd.io/gc.ref.content"
LABEL_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."

# the `kind` of each object's rows in the labels table
KIND_CONTENT = "content"
KIND_SNAPSHOT = "snapshot"
KIND_IMAGE = "image"
KIND_CONTAINER = "container"
KIND_LEASE = "lease"

# node types (containerd's gc.ResourceType values); the flat variants carry
# a bit above the type that is stripped once a node is marked
CONTENT, SNAPSHOT, CONTAINER, TASK, LEASE, INGEST = 1, 2, 3, 4, 5, 6
FLAT = 0x20
TYPE_MASK = 0x1F

# tables whose deletions make a collection worthwhile, as containerd marks
# its DB dirty on those deletions
_DIRTYING = ("blobs", "snapshots", "images", "containers", "leases", "lease_resources")

Node = tuple[int, str, str]  # (type, namespace, key); a snapshot key is "<snapshotter>/<key>"


def snapshot_label_object(snapshotter: str, key: str) -> str:
    """The `object` of a snapshot's rows in the labels table."""
    return f"{snapshotter}/{key}"


# -- mark ----------------------------------------------------------------------------


def _parse_expire(text: str) -> int | None:
    from pycontainerd.pkg.timestamps import parse_rfc3339nano

    try:
        return parse_rfc3339nano(text)
    except ValueError:
        return None


def _gc_labels(conn: sqlite3.Connection, namespace: str, kind: str, obj: str) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT key, value FROM labels WHERE namespace = ? AND kind = ? AND object = ? "
        "AND key GLOB 'containerd.io/gc.*' ORDER BY key",
        (namespace, kind, obj),
    ).fetchall()


def label_refs(namespace: str, labels: Iterable[tuple[str, str]]) -> Iterator[Node]:
    """containerd's sendLabelRefs: the content and snapshots labels name."""
    for key, value in labels:
        if key.startswith(LABEL_REF_CONTENT):
            rest = key[len(LABEL_REF_CONTENT):]
            if rest and rest[0] not in "./":
                continue  # gc.ref.contentfoo is not a reference
            yield (CONTENT, namespace, value)
        elif key.startswith(LABEL_REF_SNAPSHOT):
            snapshotter = key[len(LABEL_REF_SNAPSHOT):].split("/", 1)[0]
            yield (SNAPSHOT, namespace, f"{snapshotter}/{value}")


def live_leases(conn: sqlite3.Connection, now_ns: int) -> dict[tuple[str, str], bool]:
    """(namespace, id) -> flat, for every lease that has not expired."""
    out: dict[tuple[str, str], bool] = {}
    for ns, lease_id in conn.execute("SELECT namespace, id FROM leases ORDER BY namespace, id").fetchall():
        labels = dict(_gc_labels(conn, ns, KIND_LEASE, lease_id))
        expire = labels.get(LABEL_EXPIRE)
        if expire is not None:
            at = _parse_expire(expire)
            if at is None:
                # as containerd: an unreadable expiry is ignored, the lease holds
                log.info("ignoring invalid expiration value", lease=lease_id, namespace=ns, value=expire)
            elif now_ns > at:
                continue
        out[(ns, lease_id)] = LABEL_FLAT in labels
    return out


def roots(conn: sqlite3.Connection, now_ns: int) -> Iterator[Node]:
    """containerd's scanRoots."""
    leases = live_leases(conn, now_ns)
    for (ns, lease_id), flat in leases.items():
        yield (LEASE, ns, lease_id)
        rows = conn.execute(
            "SELECT type, id FROM lease_resources WHERE namespace = ? AND lease = ?", (ns, lease_id)
        ).fetchall()
        for rtype, rid in rows:
            kind, _, snapshotter = rtype.partition("/")
            if kind == RESOURCE_CONTENT:
                yield (CONTENT | (FLAT if flat else 0), ns, rid)
            elif kind == RESOURCE_SNAPSHOTS and snapshotter:
                yield (SNAPSHOT | (FLAT if flat else 0), ns, f"{snapshotter}/{rid}")
            elif kind == RESOURCE_INGESTS:
                yield (INGEST, ns, rid)

    for ns, name, target in conn.execute("SELECT namespace, name, target_digest FROM images").fetchall():
        if target:
            yield (CONTENT, ns, target)
        yield from label_refs(ns, _gc_labels(conn, ns, KIND_IMAGE, name))

    now = time.time_ns()
    for ns, ref, lease, expires_at in conn.execute("SELECT namespace, ref, lease, expires_at FROM ingests").fetchall():
        if (ns, lease) in leases if lease else (expires_at == 0 or expires_at > now):
            yield (INGEST, ns, ref)

    for ns, dgst in conn.execute(
        "SELECT b.namespace, b.digest FROM blobs b JOIN labels l ON l.namespace = b.namespace "
        "AND l.kind = ? AND l.object = b.digest AND l.key = ?",
        (KIND_CONTENT, LABEL_ROOT),
    ).fetchall():
        yield (CONTENT, ns, dgst)

    for ns, cid, snapshotter, skey in conn.execute(
        "SELECT namespace, id, snapshotter, snapshot_key FROM containers"
    ).fetchall():
        if snapshotter:
            yield (SNAPSHOT, ns, f"{snapshotter}/{skey}")
        yield from label_refs(ns, _gc_labels(conn, ns, KIND_CONTAINER, cid))

    for ns, snapshotter, key in conn.execute(
        "SELECT namespace, snapshotter, key FROM snapshots ORDER BY namespace, snapshotter, key"
    ).fetchall():
        if conn.execute(
            "SELECT 1 FROM labels WHERE namespace = ? AND kind = ? AND object = ? AND key = ?",
            (ns, KIND_SNAPSHOT, snapshot_label_object(snapshotter, key), LABEL_ROOT),
        ).fetchone():
            yield (SNAPSHOT, ns, f"{snapshotter}/{key}")


def references(conn: sqlite3.Connection, node: Node) -> Iterator[Node]:
    """containerd's references: what one node keeps alive. A node whose
    record is gone (a dangling reference) keeps nothing."""
    ntype, ns, key = node
    if ntype == CONTENT:
        if conn.execute("SELECT 1 FROM blobs WHERE namespace = ? AND digest = ?", (ns, key)).fetchone():
            yield from label_refs(ns, _gc_labels(conn, ns, KIND_CONTENT, key))
    elif ntype & TYPE_MASK == SNAPSHOT:
        snapshotter, sep, name = key.partition("/")
        if not sep:
            raise ValueError(f"invalid snapshot gc key {key}")
        row = conn.execute(
            "SELECT parent FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?", (ns, snapshotter, name)
        ).fetchone()
        if row is None:
            return
        if row[0]:
            yield (ntype, ns, f"{snapshotter}/{row[0]}")
        if ntype & FLAT:
            return  # a flat lease keeps the chain, not what the labels name
        yield from label_refs(ns, _gc_labels(conn, ns, KIND_SNAPSHOT, snapshot_label_object(snapshotter, name)))
    elif ntype == INGEST:
        row = conn.execute("SELECT expected FROM ingests WHERE namespace = ? AND ref = ?", (ns, key)).fetchone()
        if row and row[0]:
            yield (CONTENT, ns, row[0])


def mark(conn: sqlite3.Connection, now_ns: int | None = None) -> set[Node]:
    """Every node reachable from a root (gc.Tricolor), flat bits stripped."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    gray = list(roots(conn, now_ns))
    seen: set[Node] = set(gray)
    reachable: set[Node] = set()
    while gray:
        node = gray.pop()
        for target in references(conn, node):
            if target not in seen:
                seen.add(target)
                gray.append(target)
        reachable.add((node[0] & TYPE_MASK, node[1], node[2]))
    return reachable


# -- sweep ---------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What the sweep removed, and which stores need their cleanup."""

    removed: list[Node] = field(default_factory=list)
    snapshotters: set[str] = field(default_factory=set)
    content: bool = False


def sweep(conn: sqlite3.Connection, marked: set[Node]) -> SweepResult:
    """containerd's scanAll + remove: delete every record not marked."""
    out = SweepResult()
    for ns, lease_id in conn.execute("SELECT namespace, id FROM leases").fetchall():
        if (LEASE, ns, lease_id) not in marked:
            conn.execute("DELETE FROM leases WHERE namespace = ? AND id = ?", (ns, lease_id))
            delete_lease_rows(conn, ns, lease_id)
            out.removed.append((LEASE, ns, lease_id))
    for ns, snapshotter, key in conn.execute("SELECT namespace, snapshotter, key FROM snapshots").fetchall():
        if (SNAPSHOT, ns, f"{snapshotter}/{key}") not in marked:
            conn.execute(
                "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?", (ns, snapshotter, key)
            )
            conn.execute(
                "DELETE FROM labels WHERE namespace = ? AND kind = ? AND object = ?",
                (ns, KIND_SNAPSHOT, snapshot_label_object(snapshotter, key)),
            )
            out.removed.append((SNAPSHOT, ns, f"{snapshotter}/{key}"))
            out.snapshotters.add(snapshotter)
    for ns, ref in conn.execute("SELECT namespace, ref FROM ingests").fetchall():
        if (INGEST, ns, ref) not in marked:
            conn.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
            out.removed.append((INGEST, ns, ref))
            out.content = True
    for ns, dgst in conn.execute("SELECT namespace, digest FROM blobs").fetchall():
        if (CONTENT, ns, dgst) not in marked:
            conn.execute("DELETE FROM blobs WHERE namespace = ? AND digest = ?", (ns, dgst))
            conn.execute(
                "DELETE FROM labels WHERE namespace = ? AND kind = ? AND object = ?", (ns, KIND_CONTENT, dgst)
            )
            out.removed.append((CONTENT, ns, dgst))
            out.content = True
    return out


# -- the collector -------------------------------------------------------------------


@dataclass
class Stats:
    """containerd's GCStats; `elapsed` (the metadata phase) paces the scheduler."""

    meta: float = 0.0
    content: float = 0.0
    snapshots: dict[str, float] = field(default_factory=dict)
    removed: list[Node] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return self.meta


class Collector:
    """The metadata side of garbage collection: mutation callbacks for the
    scheduler, and `garbage_collect()`.

    `content` is the shared content store (io.containerd.content.v1.*) and
    `snapshotters` the shared snapshotters by name; both may be empty. The
    content store is used through `walk()`, `delete(digest)`,
    `walk_status_refs()` and `abort(ref)`; a snapshotter through `walk()`,
    `remove(key)` and, when it has one, `cleanup()`.
    `ingest_ref(namespace, ref)` maps a namespace's ingest ref to the
    content store's, for telling live ingests from abandoned ones.
    `content_lock()` returns the namespaced content store's lock (or None):
    the content cleanup holds it exclusively, as containerd holds its
    content store's lock, so no commit can land between what the cleanup
    read and what it deletes.
    """

    def __init__(
        self,
        db: DB,
        content: Any = None,
        snapshotters: dict[str, Any] | None = None,
        ingest_ref: Callable[[str, str], str] | None = None,
        content_lock: Callable[[], Any] | None = None,
    ):
        self.db = db
        self.content = content
        self.snapshotters = dict(snapshotters or {})
        self.ingest_ref = ingest_ref
        self.content_lock = content_lock
        self._callbacks: list[Callable[[bool], None]] = []
        self._lock = asyncio.Lock()  # one collection at a time
        # written from the database thread, read on the loop
        self._pending = threading.Lock()
        self._mutations = 0
        self._deletions = 0
        self._dirty = 0  # deletions since the last collection
        self._dirty_snapshotters: set[str] = set()
        # The first collection always cleans the content store: a daemon
        # killed between moving a blob into place and recording it (or
        # while creating an ingest) leaves files no record names, and no
        # deletion will ever mark the store dirty for them. (containerd
        # waits for the next content deletion; until then they stay.)
        self._dirty_content = True
        self._flush_scheduled = False
        self._sweeping = False  # set on the database thread during a sweep
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- mutation tracking --------------------------------------------------------

    async def start(self) -> None:
        """Install the triggers that report changes to this collector."""
        self._loop = asyncio.get_running_loop()

        def install(conn: sqlite3.Connection) -> None:
            conn.create_function("pycontainerd_gc_touch", 3, self._touch)
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            for table in tables:
                snap = "OLD.snapshotter" if table == "snapshots" else "NULL"
                deleting = 1 if table in _DIRTYING else 0
                for op, row in (("INSERT", "NULL"), ("UPDATE", "NULL"), ("DELETE", snap)):
                    conn.execute(
                        f"CREATE TEMP TRIGGER IF NOT EXISTS pycontainerd_gc_{op.lower()}_{table} "
                        f"AFTER {op} ON main.{table} BEGIN "
                        f"SELECT pycontainerd_gc_touch('{table}', {deleting if op == 'DELETE' else 0}, {row}); END"
                    )

        await self.db.update(install)

    def _touch(self, table: str, deleted: int, snapshotter: str | None) -> int:
        """Called by the triggers on the database thread; never raises."""
        try:
            if self._sweeping:
                return 0
            with self._pending:
                self._mutations += 1
                if deleted:
                    self._deletions += 1
                    if table == "snapshots" and snapshotter:
                        self._dirty_snapshotters.add(snapshotter)
                    elif table == "blobs":
                        self._dirty_content = True
                if self._flush_scheduled or self._loop is None:
                    return 0
                self._flush_scheduled = True
            self._loop.call_soon_threadsafe(self._flush)
        except Exception:  # pragma: no cover - a trigger must not fail a write
            log.exception("gc mutation tracking failed")
        return 0

    def _flush(self) -> None:
        """On the loop: one mutation event per batch of changes, about one
        per transaction (containerd reports one per transaction; the
        difference only shifts when `mutation_threshold` is reached)."""
        with self._pending:
            mutations, deletions = self._mutations, self._deletions
            self._mutations = self._deletions = 0
            self._flush_scheduled = False
        if not mutations:
            return
        self._dirty += deletions
        for fn in list(self._callbacks):
            fn(self._dirty > 0)

    def register_mutation_callback(self, fn: Callable[[bool], None]) -> None:
        """containerd's RegisterMutationCallback: fn(dirty) after changes,
        dirty telling whether anything was deleted since the last collection."""
        self._callbacks.append(fn)

    # -- collection -----------------------------------------------------------------

    async def garbage_collect(self) -> Stats:
        async with self._lock:
            started = time.monotonic()

            def mark_and_sweep(conn: sqlite3.Connection) -> SweepResult:
                self._sweeping = True
                try:
                    return sweep(conn, mark(conn))
                finally:
                    self._sweeping = False

            result = await self.db.update(mark_and_sweep)
            stats = Stats(removed=result.removed)
            with self._pending:
                snapshotters = self._dirty_snapshotters | result.snapshotters
                content = self._dirty_content or result.content
                self._dirty_snapshotters = set()
                self._dirty_content = False
            self._dirty = 0
            stats.meta = time.monotonic() - started
            if result.removed:  # a routine collection that found nothing stays quiet
                log.debug("garbage collected", removed=len(result.removed), d=stats.meta)

            tasks = []
            if content and self.content is not None:
                tasks.append(self._timed(self.cleanup_content(), stats, None))
            for name in sorted(snapshotters):
                if name in self.snapshotters:
                    tasks.append(self._timed(self.cleanup_snapshotter(name), stats, name))
            await asyncio.gather(*tasks)
            return stats

    async def _timed(self, work, stats: Stats, snapshotter: str | None) -> None:
        started = time.monotonic()
        try:
            await work
        except Exception as exc:
            # logged, and the store stays dirty so the next collection
            # cleans it again (even if nothing new is deleted there)
            log.warning("garbage collection cleanup failed", snapshotter=snapshotter, error=str(exc))
            with self._pending:
                if snapshotter is None:
                    self._dirty_content = True
                else:
                    self._dirty_snapshotters.add(snapshotter)
        if snapshotter is None:
            stats.content = time.monotonic() - started
        else:
            stats.snapshots[snapshotter] = time.monotonic() - started

    # -- shared stores --------------------------------------------------------------

    async def cleanup_content(self) -> None:
        """Delete blobs no namespace holds and abort ingests no namespace knows."""
        lock = self.content_lock() if self.content_lock else None
        async with (lock.exclusive() if lock is not None else contextlib.nullcontext()):
            await self._cleanup_content()

    async def _cleanup_content(self) -> None:
        store = self.content

        def seen(conn: sqlite3.Connection) -> tuple[set[str], set[str]]:
            digests = {r[0] for r in conn.execute("SELECT DISTINCT digest FROM blobs")}
            # an ingest's expected digest may be another namespace's blob,
            # about to be committed here: keep it
            digests |= {r[0] for r in conn.execute("SELECT DISTINCT expected FROM ingests WHERE expected != ''")}
            refs = {self._ingest_ref(ns, ref) for ns, ref in conn.execute("SELECT namespace, ref FROM ingests")}
            return digests, refs

        digests, refs = await self.db.view(seen)
        for info in await store.walk():
            if info.digest not in digests:
                await self._delete_blob_if_unheld(info.digest)
        if hasattr(store, "walk_status_refs"):
            for ref in await store.walk_status_refs():
                if ref not in refs:
                    await self._abort_if_unknown(ref)

    def _ingest_ref(self, namespace: str, ref: str) -> str:
        return self.ingest_ref(namespace, ref) if self.ingest_ref else ref

    async def _delete_blob_if_unheld(self, dgst: str) -> None:
        """Delete a blob unless a record for it appeared since the walk began;
        the check and the delete happen with the database held."""
        from pycontainerd.pkg import errdefs

        def held(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "SELECT 1 FROM blobs WHERE digest = ? UNION ALL SELECT 1 FROM ingests WHERE expected = ? LIMIT 1",
                (dgst, dgst),
            ).fetchone() is not None

        if await self.db.view(held):
            return
        try:
            await self.content.delete(dgst)
            log.debug("removed content", digest=dgst)
        except errdefs.NotFound:
            pass

    async def _abort_if_unknown(self, ref: str) -> None:
        from pycontainerd.pkg import errdefs

        try:
            await self.content.abort(ref)
            log.debug("cleanup aborting ingest", ref=ref)
        except errdefs.NotFound:
            pass

    async def cleanup_snapshotter(self, name: str) -> None:
        """Remove the snapshots of `name` that no namespace holds, children
        first, then let the snapshotter clean up its leftovers. Snapshotters
        block (pkg/snapshots.py), remote ones included: this runs on the
        database thread, as the metadata layer's own calls do."""
        sn = self.snapshotters[name]

        def prune(conn: sqlite3.Connection) -> None:
            keys = _backend_keys(conn, name)
            for key in _prune_order(sn.walk(), keys):
                try:
                    sn.remove(key)
                    log.debug("removed snapshot", snapshotter=name, key=key)
                except Exception as exc:  # one stuck snapshot must not block the rest
                    log.warning("failed to remove snapshot", snapshotter=name, key=key, error=str(exc))
            if hasattr(sn, "cleanup"):
                sn.cleanup()

        await self.db.update(prune)


def _backend_keys(conn: sqlite3.Connection, snapshotter: str) -> set[str]:
    return {r[0] for r in conn.execute("SELECT backend_key FROM snapshots WHERE snapshotter = ?", (snapshotter,))}


def _prune_order(infos: Iterable[Any], keep: set[str]) -> list[str]:
    """The snapshots to remove, every child before its parent (containerd's
    walkTree + pruneBranch). A snapshot whose parent the walk did not return
    is the root of its own branch."""
    infos = list(infos)
    known = {info.name for info in infos}
    children: dict[str, list[str]] = {}
    for info in infos:
        parent = info.parent if info.parent in known else ""
        children.setdefault(parent, []).append(info.name)
    out: list[str] = []
    # iterative post-order from the roots: layer chains can be deep
    stack: list[tuple[str, bool]] = [(name, False) for name in reversed(children.get("", []))]
    while stack:
        name, expanded = stack.pop()
        if expanded:
            if name not in keep:
                out.append(name)
            continue
        stack.append((name, True))
        stack.extend((child, False) for child in reversed(children.get(name, [])))
    return out
