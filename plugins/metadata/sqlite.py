"""io.containerd.metadata.v1.sqlite: the metadata store.

containerd keeps its metadata in one bolt database; we keep ours in one
sqlite3 database (WAL mode) under the plugin's root. Every change is one
transaction. The schema is versioned with `PRAGMA user_version` and
migrated forward step by step on open, so later issues add tables for
images, containers, leases, content and snapshot references without
touching existing data.

All sqlite work runs on one dedicated thread, never on the event loop.

Like containerd's metadata.DB, the plugin's instance also hands out the
namespaced views of the stores below it: `content_store` (the namespaced
content store over the first content plugin, a proxy one included) and
`snapshotters` (a namespaced view of every loaded snapshotter, proxy ones
included) and `containers` (the container store the containers and tasks
services share). The services, the differ and GC share these objects (one
content lock, one view per snapshotter) instead of building their own.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

import structlog

from pycontainerd.core.config import choice
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import errdefs, identifiers
from pycontainerd.pkg.labels import update_by_paths, validate_labels

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Each entry migrates the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE namespaces (
        name       TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    -- labels of every kind of object: kind is 'namespace', 'image', ...
    CREATE TABLE labels (
        namespace TEXT NOT NULL,
        kind      TEXT NOT NULL,
        object    TEXT NOT NULL,
        key       TEXT NOT NULL,
        value     TEXT NOT NULL,
        PRIMARY KEY (namespace, kind, object, key)
    );
    -- the namespaced objects; the storage issue widens these tables
    CREATE TABLE images     (namespace TEXT NOT NULL, name   TEXT NOT NULL, PRIMARY KEY (namespace, name));
    CREATE TABLE blobs      (namespace TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (namespace, digest));
    CREATE TABLE containers (namespace TEXT NOT NULL, id     TEXT NOT NULL, PRIMARY KEY (namespace, id));
    CREATE TABLE snapshots  (namespace TEXT NOT NULL, snapshotter TEXT NOT NULL, key TEXT NOT NULL,
                             PRIMARY KEY (namespace, snapshotter, key));
    CREATE TABLE leases     (namespace TEXT NOT NULL, id     TEXT NOT NULL, PRIMARY KEY (namespace, id));
    """,
    # 2: storage. A blob or snapshot on disk is shared; these rows are each
    # namespace's view of it, as containerd's metadata layer keeps them.
    """
    ALTER TABLE blobs ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE blobs ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE blobs ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
    -- an ingest in progress: the namespace's ref, what it expects, and the
    -- lease it was started under
    CREATE TABLE ingests (
        namespace TEXT NOT NULL,
        ref       TEXT NOT NULL,
        expected  TEXT NOT NULL DEFAULT '',
        lease     TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (namespace, ref)
    );
    -- key is the namespace's name for the snapshot; backend_key the
    -- snapshotter's own (unique across namespaces); parent is a key
    ALTER TABLE snapshots ADD COLUMN backend_key TEXT NOT NULL DEFAULT '';
    ALTER TABLE snapshots ADD COLUMN parent TEXT NOT NULL DEFAULT '';
    ALTER TABLE snapshots ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE snapshots ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX snapshots_backend ON snapshots (snapshotter, backend_key);
    ALTER TABLE leases ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    -- what a lease holds: type is containerd's resource type ("content",
    -- "ingests", "snapshots/<snapshotter>", ...), id the resource
    CREATE TABLE lease_resources (
        namespace TEXT NOT NULL,
        lease     TEXT NOT NULL,
        type      TEXT NOT NULL,
        id        TEXT NOT NULL,
        PRIMARY KEY (namespace, lease, type, id)
    );
    """,
    # 3: what garbage collection follows from images and containers: an
    # image's target digest, a container's snapshotter and snapshot key
    """
    ALTER TABLE images ADD COLUMN target_digest TEXT NOT NULL DEFAULT '';
    ALTER TABLE containers ADD COLUMN snapshotter TEXT NOT NULL DEFAULT '';
    ALTER TABLE containers ADD COLUMN snapshot_key TEXT NOT NULL DEFAULT '';
    """,
    # 4: an ingest started without a lease expires (nanoseconds since the
    # epoch; 0: never), as containerd gives such ingests 24 hours
    """
    ALTER TABLE ingests ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: images: the rest of the target descriptor, the timestamps, and the
    # target's annotations (labels stay in `labels`, kind 'image')
    """
    ALTER TABLE images ADD COLUMN target_media_type TEXT NOT NULL DEFAULT '';
    ALTER TABLE images ADD COLUMN target_size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE images ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE images ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE image_annotations (
        namespace TEXT NOT NULL,
        image     TEXT NOT NULL,
        key       TEXT NOT NULL,
        value     TEXT NOT NULL,
        PRIMARY KEY (namespace, image, key)
    );
    """,
    # 6: containers: the image, the runtime (name, and its options as a
    # serialized google.protobuf.Any, NULL for none), the spec (an Any),
    # the timestamps, and the extensions (labels stay in `labels`, kind
    # 'container'; snapshotter and snapshot_key came with 3)
    """
    ALTER TABLE containers ADD COLUMN image TEXT NOT NULL DEFAULT '';
    ALTER TABLE containers ADD COLUMN runtime_name TEXT NOT NULL DEFAULT '';
    ALTER TABLE containers ADD COLUMN runtime_options BLOB;
    ALTER TABLE containers ADD COLUMN spec BLOB;
    ALTER TABLE containers ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE containers ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE container_extensions (
        namespace TEXT NOT NULL,
        container TEXT NOT NULL,
        name      TEXT NOT NULL,
        value     BLOB NOT NULL,
        PRIMARY KEY (namespace, container, name)
    );
    """,
)


def get_labels(conn: sqlite3.Connection, namespace: str, kind: str, obj: str) -> dict[str, str]:
    """The labels of one object of any kind ('content', 'snapshot', ...)."""
    rows = conn.execute(
        "SELECT key, value FROM labels WHERE namespace = ? AND kind = ? AND object = ? ORDER BY key",
        (namespace, kind, obj),
    )
    return dict(rows.fetchall())


def put_labels(
    conn: sqlite3.Connection, namespace: str, kind: str, obj: str, labels: dict[str, str], replace: bool = False
) -> None:
    """Set labels (an empty value removes one); `replace` drops the others first."""
    validate_labels(labels)
    if replace:
        conn.execute("DELETE FROM labels WHERE namespace = ? AND kind = ? AND object = ?", (namespace, kind, obj))
    for k, v in labels.items():
        if v:
            conn.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?)", (namespace, kind, obj, k, v))
        else:
            conn.execute(
                "DELETE FROM labels WHERE namespace = ? AND kind = ? AND object = ? AND key = ?",
                (namespace, kind, obj, k),
            )


def labels_after_update(current: dict[str, str], new: dict[str, str], paths: list[str], what: str) -> dict[str, str]:
    """pkg.labels.update_by_paths, then the label rules (a metadata row
    holds only valid labels)."""
    labels = update_by_paths(current, new, paths, what)
    try:
        validate_labels(labels)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"info.Labels: {exc.message}") from None
    return labels


def ensure_namespace(conn: sqlite3.Connection, namespace: str) -> None:
    """Objects create their namespace implicitly, as in containerd."""
    now = time.time_ns()
    conn.execute("INSERT OR IGNORE INTO namespaces VALUES (?, ?, ?)", (namespace, now, now))


class DB:
    """The database: one connection, one thread, one transaction per call."""

    def __init__(self, path: str):
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata")
        self._conn: sqlite3.Connection | None = None
        # the namespaced views, set by the plugin's init (see the module doc)
        self.content_store: Any = None
        self.snapshotters: dict[str, Any] = {}
        self.containers: Any = None  # plugins/metadata/containers.py ContainerStore

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(f"metadata schema version {version} is newer than this daemon's {len(MIGRATIONS)}")
        for target in range(version, len(MIGRATIONS)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(MIGRATIONS[target]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._conn = conn

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)
        os.chmod(self.path, 0o600)

    @property
    def schema_version(self) -> int:
        return len(MIGRATIONS)

    def _tx(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        conn = self._conn
        assert conn is not None, "database is not open"
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def view(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn in a read transaction on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._tx, fn, False)

    async def update(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn in one write transaction on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._tx, fn, True)

    def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)

    # -- namespaces -----------------------------------------------------------

    @property
    def namespaces(self) -> "NamespaceStore":
        return NamespaceStore(self)


def _statements(script: str) -> Iterable[str]:
    buf = ""
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""


# The object tables a namespace must be empty of before it is deleted, with
# the words containerd uses for them.
_NAMESPACE_CONTENTS = (("images", "images"), ("blobs", "blobs"), ("containers", "containers"), ("leases", "leases"))


class NamespaceStore:
    def __init__(self, db: DB):
        self.db = db

    @staticmethod
    def _labels(conn: sqlite3.Connection, name: str) -> dict[str, str]:
        rows = conn.execute(
            "SELECT key, value FROM labels WHERE namespace = ? AND kind = 'namespace' AND object = '' ORDER BY key",
            (name,),
        )
        return dict(rows.fetchall())

    @staticmethod
    def _exists(conn: sqlite3.Connection, name: str) -> bool:
        return conn.execute("SELECT 1 FROM namespaces WHERE name = ?", (name,)).fetchone() is not None

    async def create(self, name: str, labels: dict[str, str]) -> None:
        identifiers.validate(name)
        validate_labels(labels)

        def tx(conn: sqlite3.Connection) -> None:
            if self._exists(conn, name):
                raise errdefs.AlreadyExists(f'namespace "{errdefs.cut(name)}"')
            now = time.time_ns()
            conn.execute("INSERT INTO namespaces VALUES (?, ?, ?)", (name, now, now))
            conn.executemany(
                "INSERT INTO labels VALUES (?, 'namespace', '', ?, ?)", [(name, k, v) for k, v in labels.items()]
            )

        await self.db.update(tx)

    async def labels(self, name: str) -> dict[str, str]:
        def tx(conn: sqlite3.Connection) -> dict[str, str]:
            if not self._exists(conn, name):
                raise errdefs.NotFound(f'namespace "{errdefs.cut(name)}"')
            return self._labels(conn, name)

        return await self.db.view(tx)

    async def list(self) -> list[tuple[str, dict[str, str]]]:
        def tx(conn: sqlite3.Connection) -> list[tuple[str, dict[str, str]]]:
            names = [r[0] for r in conn.execute("SELECT name FROM namespaces ORDER BY name")]
            return [(n, self._labels(conn, n)) for n in names]

        return await self.db.view(tx)

    async def set_labels(self, name: str, changes: dict[str, str], replace: bool = False) -> dict[str, str]:
        """Set labels (an empty value removes one); with `replace`, labels not
        in `changes` are removed first. Returns the resulting labels."""
        validate_labels(changes)

        def tx(conn: sqlite3.Connection) -> dict[str, str]:
            if not self._exists(conn, name):
                raise errdefs.NotFound(f'namespace "{errdefs.cut(name)}"')
            if replace:
                conn.execute("DELETE FROM labels WHERE namespace = ? AND kind = 'namespace'", (name,))
            for k, v in changes.items():
                if v:
                    conn.execute("INSERT OR REPLACE INTO labels VALUES (?, 'namespace', '', ?, ?)", (name, k, v))
                else:
                    conn.execute(
                        "DELETE FROM labels WHERE namespace = ? AND kind = 'namespace' AND key = ?", (name, k)
                    )
            conn.execute("UPDATE namespaces SET updated_at = ? WHERE name = ?", (time.time_ns(), name))
            return self._labels(conn, name)

        return await self.db.update(tx)

    async def delete(self, name: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            held = [
                word
                for word, table in _NAMESPACE_CONTENTS
                if conn.execute(f"SELECT 1 FROM {table} WHERE namespace = ? LIMIT 1", (name,)).fetchone()
            ]
            for (snapshotter,) in conn.execute(
                "SELECT DISTINCT snapshotter FROM snapshots WHERE namespace = ? ORDER BY snapshotter", (name,)
            ):
                held.append(f'snapshots on "{snapshotter}" snapshotter')
            if held:
                raise errdefs.FailedPrecondition(f'namespace "{errdefs.cut(name)}" must be empty, but it still has {", ".join(held)}')
            if conn.execute("DELETE FROM namespaces WHERE name = ?", (name,)).rowcount == 0:
                raise errdefs.NotFound(f'namespace "{errdefs.cut(name)}"')
            conn.execute("DELETE FROM labels WHERE namespace = ?", (name,))

        await self.db.update(tx)


@dataclass
class Config:
    # containerd's bolt plugin key (its section, plugins."io.containerd.metadata.v1.bolt",
    # is read as this one's): "shared" lets a namespace commit a blob another
    # namespace already has without sending its data; "isolated" makes it send it
    content_sharing_policy: str = choice("shared", "shared", "isolated")


async def init(ic: InitContext) -> DB:
    db = DB(os.path.join(ic.root, "meta.db"))
    await db.open()
    ic.meta.exports["schema_version"] = str(db.schema_version)
    ic.meta.exports["policy"] = ic.config.content_sharing_policy
    await _attach_views(ic, db)
    return db


async def _attach_views(ic: InitContext, db: DB) -> None:
    """The namespaced content store and snapshotters, over the plugins
    loaded before this one (every one passed its contract check)."""
    from pycontainerd.plugins.metadata.containers import ContainerStore
    from pycontainerd.plugins.metadata.content import ContentStore
    from pycontainerd.plugins.metadata.snapshots import NamespacedSnapshotter

    db.containers = ContainerStore(db)
    try:
        # as in containerd, the first content plugin loaded; with the local
        # one disabled and a [proxy_plugins] one configured, the remote store
        shared = ic.config.content_sharing_policy == "shared"
        db.content_store = ContentStore(db, ic.get(PluginType.CONTENT), shared=shared)
    except errdefs.ContainerdError as exc:
        log.warning("no content store: content is unavailable", error=str(exc))
    db.snapshotters = {name: NamespacedSnapshotter(db, name, sn) for name, sn in ic.get_all(PluginType.SNAPSHOT).items()}
    # settle what a crash may have left between the metadata and the local
    # snapshotters (a remote one keeps its own house)
    local = [s for s in db.snapshotters.values() if not getattr(s.backend, "remote", False)]
    for sn, result in zip(local, await asyncio.gather(*(s.recover() for s in local), return_exceptions=True)):
        if isinstance(result, Exception):
            log.error("snapshot recovery failed", snapshotter=sn.name, error=str(result))


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [
        Registration(
            type=PluginType.METADATA,
            id="sqlite",
            requires=(PluginType.CONTENT, PluginType.EVENT, PluginType.SNAPSHOT),
            config=Config,
            init=init,
        )
    ]
