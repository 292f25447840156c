"""Leases in the metadata store, as containerd's metadata/leases.go keeps them.

A lease is a namespaced record (`leases` table: id, created_at) with labels
(the `labels` table, kind 'lease') and the resources it holds
(`lease_resources`: type "content", "ingests" or "snapshots/<snapshotter>",
and the resource's id). A lease protects what it holds from the garbage
collector until it is deleted or, when it carries a
`containerd.io/gc.expire` label (RFC 3339), until that time has passed.

Everything here is one sqlite transaction per call. Error wording follows
containerd's, so the real `ctr` prints what it would print against
containerd. containerd 1.6 publishes no events for leases, and neither do
we.
"""

from __future__ import annotations

import sqlite3
import time

from pycontainerd.core import filters
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.digest import digest_error
from pycontainerd.pkg.labels import validate_labels
from pycontainerd.pkg.leases import Lease, Resource

from .sqlite import DB, ensure_namespace, get_labels

RESOURCE_CONTENT = "content"
RESOURCE_INGESTS = "ingests"
RESOURCE_SNAPSHOTS = "snapshots"


def parse_resource(r: Resource) -> Resource:
    """Check a resource as containerd's parseLeaseResource does; returns the
    resource to store."""
    keys = r.type.split("/")
    kind = keys[0]
    if kind in (RESOURCE_CONTENT, RESOURCE_INGESTS):
        if len(keys) != 1:
            raise errdefs.InvalidArgument(f"invalid resource type {errdefs.cut(r.type)}")
        if kind == RESOURCE_CONTENT:
            why = digest_error(r.id)
            if why:
                raise errdefs.InvalidArgument(f"invalid content resource id {errdefs.cut(r.id)}: {why}")
    elif kind == RESOURCE_SNAPSHOTS:
        if len(keys) != 2:
            raise errdefs.InvalidArgument(f"invalid snapshot resource type {errdefs.cut(r.type)}")
    else:
        raise errdefs.NotImplementedErr(f"resource type {errdefs.cut(r.type)} not supported yet")
    return r


def _not_found(lease_id: str) -> errdefs.NotFound:
    return errdefs.NotFound(f"lease {errdefs.quote(lease_id)}")


def _exists(conn: sqlite3.Connection, namespace: str, lease_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (namespace, lease_id)).fetchone()
    return row is not None


def _adapt(lease: Lease):
    def field_of(path: list[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] == "id":
            return lease.id, bool(lease.id)
        if path[0] == "labels":
            # containerd's checkMap: the rest of the path joined by '.' is the key
            key = ".".join(path[1:])
            if not key or key not in lease.labels:
                return "", False
            return lease.labels[key], True
        return "", False

    return field_of


class LeaseManager:
    """containerd's leases.Manager over the metadata database."""

    def __init__(self, db: DB):
        self.db = db

    async def create(self, namespace: str, lease_id: str, labels: dict[str, str] | None = None) -> Lease:
        if not lease_id:
            raise errdefs.Unknown("lease id must be provided")
        # as with containerd's label writer, an empty value is not stored
        kept = {k: v for k, v in (labels or {}).items() if v}
        validate_labels(kept)

        def tx(conn: sqlite3.Connection) -> Lease:
            ensure_namespace(conn, namespace)
            if _exists(conn, namespace, lease_id):
                raise errdefs.AlreadyExists(f"lease {errdefs.go_quote(lease_id)}")
            now = time.time_ns()
            conn.execute("INSERT INTO leases (namespace, id, created_at) VALUES (?, ?, ?)", (namespace, lease_id, now))
            conn.executemany(
                "INSERT INTO labels VALUES (?, 'lease', ?, ?, ?)", [(namespace, lease_id, k, v) for k, v in kept.items()]
            )
            return Lease(id=lease_id, created_at=now, labels=dict(sorted(kept.items())))

        return await self.db.update(tx)

    async def delete(self, namespace: str, lease_id: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM leases WHERE namespace = ? AND id = ?", (namespace, lease_id)).rowcount == 0:
                raise _not_found(lease_id)
            delete_lease_rows(conn, namespace, lease_id)

        await self.db.update(tx)

    async def list(self, namespace: str, *filter_strings: str) -> list[Lease]:
        try:
            flt = await filters.parse_all_off_loop(*filter_strings)
        except filters.FilterSyntaxError as exc:
            raise errdefs.InvalidArgument(str(exc)) from None

        def tx(conn: sqlite3.Connection) -> list[Lease]:
            rows = conn.execute(
                "SELECT id, created_at FROM leases WHERE namespace = ? ORDER BY id", (namespace,)
            ).fetchall()
            return [Lease(lease_id, created_at, get_labels(conn, namespace, "lease", lease_id))
                    for lease_id, created_at in rows]

        # matched off the database thread: a heavy filter must not hold it
        return await filters.select(flt, await self.db.view(tx), _adapt)

    async def add_resource(self, namespace: str, lease_id: str, resource: Resource) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            if not _exists(conn, namespace, lease_id):
                raise _not_found(lease_id)
            r = parse_resource(resource)
            conn.execute(
                "INSERT OR IGNORE INTO lease_resources (namespace, lease, type, id) VALUES (?, ?, ?, ?)",
                (namespace, lease_id, r.type, r.id),
            )

        await self.db.update(tx)

    async def delete_resource(self, namespace: str, lease_id: str, resource: Resource) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            if not _exists(conn, namespace, lease_id):
                raise _not_found(lease_id)
            r = parse_resource(resource)
            conn.execute(
                "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?",
                (namespace, lease_id, r.type, r.id),
            )

        await self.db.update(tx)

    async def list_resources(self, namespace: str, lease_id: str) -> list[Resource]:
        def tx(conn: sqlite3.Connection) -> list[Resource]:
            if not _exists(conn, namespace, lease_id):
                raise _not_found(lease_id)
            # containerd lists content, then ingests, then snapshots by
            # snapshotter and key: the byte order of the type strings
            rows = conn.execute(
                "SELECT id, type FROM lease_resources WHERE namespace = ? AND lease = ? ORDER BY type, id",
                (namespace, lease_id),
            )
            return [Resource(id=i, type=t) for i, t in rows]

        return await self.db.view(tx)


def delete_lease_rows(conn: sqlite3.Connection, namespace: str, lease_id: str) -> None:
    """What goes with a lease record: its labels and its resource list.
    (The record itself is deleted by the caller.) Shared with the garbage
    collector, which removes expired leases."""
    conn.execute("DELETE FROM lease_resources WHERE namespace = ? AND lease = ?", (namespace, lease_id))
    conn.execute("DELETE FROM labels WHERE namespace = ? AND kind = 'lease' AND object = ?", (namespace, lease_id))
