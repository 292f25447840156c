"""Containers in the metadata store, as containerd's metadata/containers.go
keeps them.

A container is a namespaced row in `containers` (id, image, runtime name
and options, spec, snapshotter and snapshot key, created/updated times),
its labels in `labels` (kind 'container') and its extensions in
`container_extensions`. The Any fields are stored as serialized
`google.protobuf.Any` messages, untouched.

For the garbage collector a container is a root: its snapshot
(`snapshotter`/`snapshot_key`) and what its `containerd.io/gc.ref.*` labels
name stay while it exists (plugins/metadata/gc.py reads the columns and the
labels directly). The image's content is held by the image record, as in
containerd, not by the container.

Validation, update field paths and error wording follow containerd 1.6, so
the real `ctr` prints what it would print against containerd. Two
deliberate differences: containerd's bolt layer keeps an extension once
written (a later update can only overwrite it); here `extensions` replaces
them all and `extensions.<key>` absent from the request removes that key,
as labels behave. And containerd says `cannot update/delete container "x"
in namespace "y"` when the namespace never had a containers bucket; here
that wording is used when the namespace holds no container at all.

Each call is one sqlite transaction; List filters are matched off the
database thread.
"""

from __future__ import annotations

import sqlite3
import time

from google.protobuf import any_pb2

from pycontainerd.core import filters
from pycontainerd.pkg import errdefs, identifiers
from pycontainerd.pkg.containerstore import Container, RuntimeInfo, adapt_container
from pycontainerd.pkg.labels import check_label_limits, validate_labels

from .sqlite import DB, ensure_namespace, get_labels

KIND = "container"  # the kind of a container's rows in the labels table

# what an update with no field paths replaces (containerd's full replace);
# snapshotter and runtime are immutable and must be sent unchanged
FULL_REPLACE = ("labels", "spec", "extensions", "image", "snapshotkey")
# extensions per container: containerd has no limit; one request with
# 100k of them would hold the metadata thread for every namespace
MAX_EXTENSIONS = 4096


def validate_container(c: Container) -> None:
    """containerd's validateContainer, with its wording (each message is
    prefixed by the caller: create or update)."""
    try:
        identifiers.validate(c.id)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"container.ID: {exc.message}") from None
    if any(name == "" for name in c.extensions):
        raise errdefs.InvalidArgument("container.Extension keys must not be zero-length")
    try:
        validate_labels(c.labels)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"containers.Labels: {exc.message}") from None
    if not c.runtime.name:
        raise errdefs.InvalidArgument("container.Runtime.Name must be set")
    if c.spec is None:
        raise errdefs.InvalidArgument("container.Spec must be set")
    if c.snapshot_key and not c.snapshotter:
        raise errdefs.InvalidArgument("container.Snapshotter must be set if container.SnapshotKey is set")


def _prefixed(prefix: str, fn, c: Container) -> None:
    try:
        fn(c)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"{prefix}: {exc.message}") from None


def check_request_limits(c: Container, paths: list[str] | tuple[str, ...] = ()) -> None:
    """Cheap size checks before any metadata work (ours; see pkg/labels)."""
    check_label_limits(c.labels, paths)
    if len(c.extensions) > MAX_EXTENSIONS:
        raise errdefs.InvalidArgument(f"too many extensions: {len(c.extensions)} (at most {MAX_EXTENSIONS})")


def apply_paths(current: Container, new: Container, paths: list[str] | tuple[str, ...]) -> Container:
    """containerd's container update by field paths: labels, labels.<k>,
    spec, extensions, extensions.<k>, image, snapshotkey. No paths: the
    full replace of FULL_REPLACE, refused if the request changes the
    snapshotter or the runtime name (both immutable)."""
    if not paths:
        if current.snapshotter != new.snapshotter:
            raise errdefs.InvalidArgument("container.Snapshotter field is immutable")
        if current.runtime.name != new.runtime.name:
            raise errdefs.InvalidArgument("container.Runtime.Name field is immutable")
        paths = FULL_REPLACE
    out = Container(id=current.id, labels=dict(current.labels), image=current.image,
                    runtime=RuntimeInfo(current.runtime.name, current.runtime.options), spec=current.spec,
                    snapshotter=current.snapshotter, snapshot_key=current.snapshot_key,
                    created_at=current.created_at, extensions=dict(current.extensions))
    for path in paths:
        if path.startswith("labels."):
            key = path[len("labels."):]
            out.labels[key] = new.labels.get(key, "")
        elif path.startswith("extensions."):
            key = path[len("extensions."):]
            if key in new.extensions:
                out.extensions[key] = new.extensions[key]
            else:
                out.extensions.pop(key, None)
        elif path == "labels":
            out.labels = dict(new.labels)
        elif path == "spec":
            out.spec = new.spec
        elif path == "extensions":
            out.extensions = dict(new.extensions)
        elif path == "image":
            out.image = new.image
        elif path == "snapshotkey":
            out.snapshot_key = new.snapshot_key
        else:
            raise errdefs.InvalidArgument(f"cannot update {errdefs.quote(path)} field on {errdefs.quote(current.id)}")
    return out


# -- rows ------------------------------------------------------------------------------


def _serialize(msg: any_pb2.Any | None) -> bytes | None:
    return None if msg is None else msg.SerializeToString()


def _parse(data: bytes | None) -> any_pb2.Any | None:
    if data is None:
        return None
    out = any_pb2.Any()
    out.ParseFromString(data)
    return out


_COLUMNS = "id, image, runtime_name, runtime_options, spec, snapshotter, snapshot_key, created_at, updated_at"


def _from_row(conn: sqlite3.Connection, namespace: str, row: tuple) -> Container:
    cid, image, runtime_name, runtime_options, spec, snapshotter, skey, created, updated = row
    extensions = {name: _parse(value) for name, value in conn.execute(
        "SELECT name, value FROM container_extensions WHERE namespace = ? AND container = ? ORDER BY name",
        (namespace, cid),
    )}
    return Container(id=cid, labels=get_labels(conn, namespace, KIND, cid), image=image,
                     runtime=RuntimeInfo(runtime_name, _parse(runtime_options)), spec=_parse(spec),
                     snapshotter=snapshotter, snapshot_key=skey, created_at=created, updated_at=updated,
                     extensions=extensions)


def _read(conn: sqlite3.Connection, namespace: str, cid: str) -> Container | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? AND id = ?", (namespace, cid)).fetchone()
    return None if row is None else _from_row(conn, namespace, row)


def _write(conn: sqlite3.Connection, namespace: str, c: Container) -> Container:
    """Store `c` (its row exists), replacing its labels and extensions;
    empty label values are not stored. Returns what was stored."""
    labels = {k: v for k, v in c.labels.items() if v}
    conn.execute(
        "UPDATE containers SET image = ?, runtime_name = ?, runtime_options = ?, spec = ?, snapshotter = ?, "
        "snapshot_key = ?, created_at = ?, updated_at = ? WHERE namespace = ? AND id = ?",
        (c.image, c.runtime.name, _serialize(c.runtime.options), _serialize(c.spec), c.snapshotter,
         c.snapshot_key, c.created_at, c.updated_at, namespace, c.id),
    )
    _delete_rows(conn, namespace, c.id)
    conn.executemany("INSERT INTO labels VALUES (?, ?, ?, ?, ?)",
                     [(namespace, KIND, c.id, k, v) for k, v in labels.items()])
    conn.executemany("INSERT INTO container_extensions VALUES (?, ?, ?, ?)",
                     [(namespace, c.id, name, ext.SerializeToString()) for name, ext in c.extensions.items()])
    return Container(id=c.id, labels=dict(sorted(labels.items())), image=c.image, runtime=c.runtime, spec=c.spec,
                     snapshotter=c.snapshotter, snapshot_key=c.snapshot_key, created_at=c.created_at,
                     updated_at=c.updated_at, extensions=dict(sorted(c.extensions.items())))


def _delete_rows(conn: sqlite3.Connection, namespace: str, cid: str) -> None:
    """A container's labels and extensions (not its row)."""
    conn.execute("DELETE FROM labels WHERE namespace = ? AND kind = ? AND object = ?", (namespace, KIND, cid))
    conn.execute("DELETE FROM container_extensions WHERE namespace = ? AND container = ?", (namespace, cid))


def _namespace_has_containers(conn: sqlite3.Connection, namespace: str) -> bool:
    return conn.execute("SELECT 1 FROM containers WHERE namespace = ? LIMIT 1", (namespace,)).fetchone() is not None


def not_found(namespace: str, cid: str) -> errdefs.NotFound:
    """What Get says of a missing container (the tasks service says it too)."""
    return errdefs.NotFound(f"container {errdefs.quote(cid)} in namespace {errdefs.quote(namespace)}")


class ContainerStore:
    """containerd's containers.Store over the metadata database; every call
    names its namespace."""

    def __init__(self, db: DB):
        self.db = db

    async def get(self, namespace: str, cid: str) -> Container:
        def tx(conn: sqlite3.Connection) -> Container:
            c = _read(conn, namespace, cid)
            if c is None:
                raise not_found(namespace, cid)
            return c

        return await self.db.view(tx)

    async def list(self, namespace: str, *filter_strings: str) -> list[Container]:
        flt = await filters.parse_all_off_loop(*filter_strings)

        def tx(conn: sqlite3.Connection) -> list[Container]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? ORDER BY id", (namespace,))
            return [_from_row(conn, namespace, row) for row in rows.fetchall()]

        # matched off the database thread: a heavy filter must not hold it
        return await filters.select(flt, await self.db.view(tx), adapt_container)

    async def create(self, namespace: str, c: Container) -> Container:
        check_request_limits(c)
        _prefixed("create container failed validation", validate_container, c)

        def tx(conn: sqlite3.Connection) -> Container:
            ensure_namespace(conn, namespace)
            inserted = conn.execute(
                "INSERT OR IGNORE INTO containers (namespace, id) VALUES (?, ?)", (namespace, c.id)
            ).rowcount == 1
            if not inserted:
                raise errdefs.AlreadyExists(f"container {errdefs.quote(c.id)}")
            now = time.time_ns()
            stored = Container(id=c.id, labels=c.labels, image=c.image, runtime=c.runtime, spec=c.spec,
                               snapshotter=c.snapshotter, snapshot_key=c.snapshot_key, created_at=now,
                               updated_at=now, extensions=c.extensions)
            return _write(conn, namespace, stored)

        return await self.db.update(tx)

    async def update(self, namespace: str, c: Container, paths: list[str] | tuple[str, ...] = ()) -> Container:
        if not c.id:
            raise errdefs.InvalidArgument("must specify a container id")
        check_request_limits(c, paths)

        def tx(conn: sqlite3.Connection) -> Container:
            current = _read(conn, namespace, c.id)
            if current is None:
                if not _namespace_has_containers(conn, namespace):
                    raise errdefs.NotFound(f"cannot update container {errdefs.quote(c.id)} in namespace "
                                           f"{errdefs.quote(namespace)}")
                raise errdefs.NotFound(f"container {errdefs.quote(c.id)}")
            updated = apply_paths(current, c, paths)
            _prefixed("update failed validation", validate_container, updated)
            updated.updated_at = time.time_ns()
            return _write(conn, namespace, updated)

        return await self.db.update(tx)

    async def delete(self, namespace: str, cid: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM containers WHERE namespace = ? AND id = ?", (namespace, cid)).rowcount == 0:
                if not _namespace_has_containers(conn, namespace):
                    raise errdefs.NotFound(f"cannot delete container {errdefs.quote(cid)} in namespace "
                                           f"{errdefs.quote(namespace)}")
                raise errdefs.NotFound(f"container {errdefs.cut(cid)}")  # containerd's %v: unquoted
            _delete_rows(conn, namespace, cid)

        await self.db.update(tx)
