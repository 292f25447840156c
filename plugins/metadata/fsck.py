"""`pycontainerd fsck [--config F] [--root R] [--repair] [--verify-content]`:
check that a stopped daemon's stores agree.

pycontainerd keeps one fact in up to three places: the metadata database
(plugins/metadata/sqlite.py: each namespace's blobs, ingests, snapshots,
leases and images), the local content store (plugins/content/local.py:
`blobs/<alg>/<hex>` and `ingest/<sha256(ref)>/`) and each local snapshotter
(plugins/snapshotters/: its own `metadata.db` and one directory, or btrfs
subvolume, per snapshot). A crash, a full disk or a hand that edits a
file can make them disagree. fsck reads all of them, reports every
disagreement on its own line (kind, namespace, what, where: tab-separated,
"-" for no namespace) and exits 0 only when there is none.

Why it lives here. It is not a plugin and not kernel code: core/ never
imports a concrete plugin, and fsck must know three plugins' on-disk
layouts. The metadata layer is where those stores are tied together
(the namespaced views, backend keys `<namespace>/<n>/<key>`, garbage
collection), and what fsck checks is exactly those ties, so it sits beside
gc.py and reuses the metadata plugin's schema and helpers and the
snapshotters' metastore (plugins/snapshotters/storage.py). The command is
wired like the `<kind> serve` commands: plugins/builtins.py names the
module, core/main.py imports it only when `fsck` runs.

Which stores. The daemon's own config is read (the same file, `--root`
overrides the root as for the daemon), so fsck checks the root the daemon
would use, with the snapshotters' `root_path`, and only the plugins that
are registered and not in `disabled_plugins`. A disabled or remote
([proxy_plugins]) snapshotter, or one whose layout fsck does not know, is
named on stderr as not checked; its records are left alone. fsck takes
the daemon's root lock (core/daemon.py DirLock) for the whole run: a live
daemon makes it refuse, naming the daemon's pid, and no daemon can start
on the root while it runs.

What --repair does, and why no more. The rule is the garbage collector's
(plugins/metadata/gc.py): a record is only a claim on data, so a record
whose data is gone is dropped, with its labels and every lease reference
to it, so the namespace can fetch or prepare it again (a content record
left in place would answer AlreadyExists to the re-fetch). Data, on the
other hand, is never deleted by fsck:

- Data that no record names (a blob no namespace has, a snapshot the
  metadata does not know, a snapshot directory its snapshotter does not
  know) is garbage only by the collector's reckoning, and the collector
  already reclaims it when the daemon starts (its first collection cleans
  the content store; snapshot recovery removes unnamed snapshots and
  directories). fsck reports it as "left for GC" and leaves it: if the
  reason it lost its record is a bug or a hand, the bytes are still there
  to look at until the daemon runs.
- Except where the data still has a reference: a snapshot whose metadata
  record is gone but whose backend key names its namespace and key is
  given its record back when it is committed (as start-up recovery does)
  or when a lease or container of that namespace still holds it.
- Bytes that do not hash to their name (--verify-content) or whose file
  name is no digest are useless as content but may be all that is left of
  something, so they are moved, never deleted, to
  `<content root>/quarantine/<alg>/<name>`; the records that named them
  then have no data and are dropped as above.
- Ingests are partial uploads: a directory whose status cannot be read,
  or whose ref no namespace has, can never be resumed by anyone (a status
  call needs the namespace's record), so it is removed; a record whose
  directory is gone is dropped.
- Images are never dropped, as the collector never drops them: an image
  whose target blob is missing is reported as not fixed (pull it again, or
  remove it).

A snapshot whose directory is gone has its snapshotter record and its
metadata record dropped, unless other snapshots are built on it: then it
is reported as not fixed (remove the children first).

Garbage is not damage. What is only waiting for the collector (a blob
or snapshot no record names, a snapshot directory its snapshotter does
not know) is what a crash between writing data and recording it leaves,
and what containerd's own collector reclaims without anyone calling it
corruption. fsck lists each such item on its own line, always with a
fifth field `left for GC: <why>`, and does not count it: a root holding
only garbage is clean (exit 0), so a second fsck right after a --repair
says clean without a daemon having run in between.

Exit status: 0 clean (garbage may be listed); 1 findings (with --repair:
each was repaired or quarantined, as its line says); 4 with --repair when
some finding could not be fixed; 2 when fsck could not run (a daemon holds
the root, the config is invalid, the root is missing).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from pycontainerd.pkg.digest import ALGORITHMS, digest_error
from pycontainerd.pkg.snapshots import KIND_ACTIVE, KIND_COMMITTED, KIND_VIEW

METADATA_URI = "io.containerd.metadata.v1.sqlite"
CONTENT_URI = "io.containerd.content.v1.content"
SNAPSHOT_TYPE = "io.containerd.snapshotter.v1"
# the built-in snapshotters, whose layouts fsck knows
LOCAL_SNAPSHOTTERS = ("native", "overlayfs", "btrfs")

# outcomes of a repair
REPAIRED, QUARANTINED, LEFT_FOR_GC, NOT_FIXED = "repaired", "quarantined", "left for GC", "not fixed"

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR, EXIT_UNFIXED = 0, 1, 2, 4


class FsckError(Exception):
    """fsck cannot run; the message says why."""


@dataclass
class Finding:
    kind: str
    namespace: str
    what: str
    where: str
    # a repair returns the words for what it did; None: nothing fsck does
    fix: Callable[[], str] | None = None
    outcome: str = NOT_FIXED  # what --repair does when there is no fix
    reason: str = ""
    order: int = 50  # repairs run in this order (quarantine, drops, restores, leases, dirs)

    @property
    def pending_gc(self) -> bool:
        """Garbage, not damage: data no record names, which the daemon's
        collector removes when it runs. Reported, never counted as a
        finding (containerd's view: unreferenced data is not corruption)."""
        return self.fix is None and self.outcome == LEFT_FOR_GC

    def gc_result(self) -> str:
        return f"{LEFT_FOR_GC}: {self.reason}"

    def line(self, result: str = "") -> str:
        fields = [self.kind, self.namespace or "-", self.what, self.where]
        if result:
            fields.append(result)
        return "\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields)


# -- the stores, read ------------------------------------------------------------------------


@dataclass
class SnapshotterRoot:
    """One local snapshotter's root: its metastore and where its snapshots live."""

    name: str
    root: str

    @property
    def metastore(self) -> str:
        return os.path.join(self.root, "metadata.db")

    def kind_dirs(self) -> dict[int, str]:
        if self.name == "btrfs":
            return {KIND_ACTIVE: "active", KIND_VIEW: "view", KIND_COMMITTED: "snapshots"}
        return {KIND_ACTIVE: "snapshots", KIND_VIEW: "snapshots", KIND_COMMITTED: "snapshots"}

    def data_path(self, sid: str, kind: int, has_parent: bool) -> str | None:
        """Where a snapshot's data must be, or None when it has no directory
        of its own (native's view of a parent binds the parent)."""
        if self.name == "native" and kind == KIND_VIEW and has_parent:
            return None
        base = os.path.join(self.root, self.kind_dirs()[kind], sid)
        return os.path.join(base, "fs") if self.name == "overlayfs" else base


@dataclass
class BackendSnapshot:
    sid: str
    key: str
    kind: int
    parent: str
    labels: dict[str, str]
    created: int
    updated: int


@dataclass
class Context:
    root: str
    repair: bool
    verify: bool
    meta_path: str
    conn: sqlite3.Connection
    content_root: str | None
    snapshotters: list[SnapshotterRoot]
    skipped: dict[str, str]  # snapshotter -> why it is not checked
    findings: list[Finding] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def tx(self, fn: Callable[[sqlite3.Connection], str]) -> str:
        """One write transaction on the metadata database."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode()


def _hash_ok(path: str, alg: str, hexpart: str) -> bool:
    h = hashlib.new(alg)
    with open(path, "rb", buffering=0) as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest() == hexpart


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# -- record removal, shared by the repairs ------------------------------------------------------


def _drop_lease_refs(conn: sqlite3.Connection, ns: str, rtype: str, rid: str) -> int:
    return conn.execute(
        "DELETE FROM lease_resources WHERE namespace = ? AND type = ? AND id = ?", (ns, rtype, rid)
    ).rowcount


def _drop_blob_record(conn: sqlite3.Connection, ns: str, dgst: str) -> int:
    """The namespace's record of a blob, its labels and the lease references to it."""
    conn.execute("DELETE FROM blobs WHERE namespace = ? AND digest = ?", (ns, dgst))
    conn.execute("DELETE FROM labels WHERE namespace = ? AND kind = 'content' AND object = ?", (ns, dgst))
    return _drop_lease_refs(conn, ns, "content", dgst)


def _drop_snapshot_record(conn: sqlite3.Connection, ns: str, sn: str, key: str) -> int:
    conn.execute("DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?", (ns, sn, key))
    conn.execute("DELETE FROM labels WHERE namespace = ? AND kind = 'snapshot' AND object = ?", (ns, f"{sn}/{key}"))
    return _drop_lease_refs(conn, ns, f"snapshots/{sn}", key)


def _with_refs(text: str, refs: int) -> str:
    return text + (f" and {_plural(refs, 'lease reference')}" if refs else "")


# -- content --------------------------------------------------------------------------------------


def _blob_files(content_root: str) -> Iterator[tuple[str, str, str]]:
    """(alg, name, path) of every file under blobs/."""
    blobs = os.path.join(content_root, "blobs")
    if not os.path.isdir(blobs):
        return
    for alg in sorted(os.listdir(blobs)):
        d = os.path.join(blobs, alg)
        if not os.path.isdir(d):
            yield "", alg, d
            continue
        for name in sorted(os.listdir(d)):
            yield alg, name, os.path.join(d, name)


def _quarantine(content_root: str, path: str, alg: str, name: str) -> str:
    """Move a file out of blobs/ (same filesystem: a rename), never over another."""
    qdir = os.path.join(content_root, "quarantine", alg or "unknown")
    os.makedirs(qdir, 0o700, exist_ok=True)
    target, n = os.path.join(qdir, name), 1
    while os.path.lexists(target):
        target, n = os.path.join(qdir, f"{name}.{n}"), n + 1
    os.rename(path, target)
    return target


def check_content(ctx: Context, content_root: str) -> set[str]:
    """Blobs against their records; returns the digests whose bytes are
    present (and, with --verify-content, hash to their name)."""
    conn = ctx.conn
    records: dict[str, list[str]] = {}
    for ns, dgst in conn.execute("SELECT namespace, digest FROM blobs ORDER BY namespace, digest"):
        records.setdefault(dgst, []).append(ns)
    expected = {r[0] for r in conn.execute("SELECT DISTINCT expected FROM ingests WHERE expected != ''")}
    present: set[str] = set()
    bad: dict[str, str] = {}  # digest -> blob path, corrupt
    for alg, name, path in _blob_files(content_root):
        dgst = f"{alg}:{name}"
        if not alg or alg not in ALGORITHMS or digest_error(dgst) or not os.path.isfile(path):
            ctx.add(Finding("blob-invalid-name", "", name if not alg else dgst, path, order=10,
                            fix=lambda p=path, a=alg, n=name: f"moved to {_quarantine(content_root, p, a, n)}",
                            outcome=QUARANTINED))
            continue
        if ctx.verify:
            try:
                ok = _hash_ok(path, alg, name)
            except OSError:
                ok = False
            if not ok:
                bad[dgst] = path
                continue
        present.add(dgst)
    for dgst, path in sorted(bad.items()):
        alg, _, name = dgst.partition(":")
        holders = records.get(dgst, [])

        def quarantine(p=path, a=alg, n=name, d=dgst, holders=holders) -> str:
            target = _quarantine(content_root, p, a, n)
            refs = sum(ctx.tx(lambda c, ns=ns: _drop_blob_record(c, ns, d)) for ns in holders)
            dropped = f"; dropped the records in {', '.join(holders)}" if holders else ""
            return _with_refs(f"moved to {target}{dropped}", refs)

        ctx.add(Finding("blob-corrupt", ",".join(holders), dgst, path, fix=quarantine, outcome=QUARANTINED,
                        order=10))
    for dgst, holders in sorted(records.items()):
        if dgst in present or dgst in bad:
            continue
        alg, _, hexpart = dgst.partition(":")
        where = os.path.join(content_root, "blobs", alg, hexpart)
        for ns in holders:
            ctx.add(Finding("blob-missing", ns, dgst, where, order=20, fix=lambda ns=ns, d=dgst: _with_refs(
                "dropped the record", ctx.tx(lambda c: _drop_blob_record(c, ns, d)))))
    for dgst in sorted(present - set(records) - expected):
        alg, _, hexpart = dgst.partition(":")
        ctx.add(Finding("blob-unreferenced", "", dgst, os.path.join(content_root, "blobs", alg, hexpart),
                        outcome=LEFT_FOR_GC, reason="the daemon's first collection removes it"))
    return present


def _ingest_status_error(path: str) -> str | None:
    """Why an ingest directory has no status (as the content store reads it), or None."""
    from pycontainerd.pkg.timestamps import parse_rfc3339nano

    try:
        _read(os.path.join(path, "ref"))
        os.stat(os.path.join(path, "data"))
        for name in ("startedat", "updatedat"):
            parse_rfc3339nano(_read(os.path.join(path, name)))
    except FileNotFoundError as exc:
        return f"{os.path.basename(exc.filename or '')} missing"
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"
    return None


def check_ingests(ctx: Context, content_root: str, present: set[str]) -> None:
    conn = ctx.conn
    rows = conn.execute("SELECT namespace, ref, expected FROM ingests ORDER BY namespace, ref").fetchall()
    ingest = os.path.join(content_root, "ingest")
    known = {f"{ns}/{ref}" for ns, ref, _ in rows}
    dirs = set(os.listdir(ingest)) if os.path.isdir(ingest) else set()
    for ns, ref, exp in rows:
        path = os.path.join(ingest, hashlib.sha256(f"{ns}/{ref}".encode()).hexdigest())
        if exp:  # a shared ingest keeps no directory: it stands for a blob that is there
            if exp in present:
                continue
            why = f"shared ingest of {exp}, whose blob is missing"
        elif os.path.basename(path) not in dirs:
            why = ""
        elif _ingest_status_error(path) is None:
            continue
        else:
            why = "its directory has no status"

        def drop(ns=ns, ref=ref) -> str:
            def tx(c: sqlite3.Connection) -> str:
                c.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
                return _with_refs("dropped the record", _drop_lease_refs(c, ns, "ingests", ref))
            return ctx.tx(tx)

        ctx.add(Finding("ingest-missing", ns, ref + (f" ({why})" if why else ""), path, fix=drop, order=20))
    for name in sorted(dirs):
        path = os.path.join(ingest, name)
        why = _ingest_status_error(path) if os.path.isdir(path) else "not a directory"
        if why is None:
            ref = _read(os.path.join(path, "ref"))
            if ref in known and hashlib.sha256(ref.encode()).hexdigest() == name:
                continue
            kind, what = "ingest-unrecorded", ref
        else:
            kind, what = "ingest-no-status", f"{name} ({why})"

        def remove(p=path) -> str:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
            return "removed the directory"

        ctx.add(Finding(kind, "", what, path, fix=remove, order=60))


# -- snapshots -------------------------------------------------------------------------------------


def _backend(sr: SnapshotterRoot) -> dict[str, BackendSnapshot]:
    from pycontainerd.plugins.snapshotters.storage import MetaStore

    ms = MetaStore(sr.metastore)
    try:
        with ms.transaction() as tx:
            ids = {key: sid for sid, key in tx.id_map().items()}
            return {info.name: BackendSnapshot(ids[info.name], info.name, info.kind, info.parent, info.labels,
                                               info.created, info.updated) for _, info in tx.walk()}
    finally:
        ms.close()


def _remove_backend(sr: SnapshotterRoot, key: str) -> None:
    from pycontainerd.plugins.snapshotters.storage import MetaStore

    ms = MetaStore(sr.metastore)
    try:
        with ms.transaction(True) as tx:
            tx.remove(key)
    finally:
        ms.close()


def check_snapshotter(ctx: Context, sr: SnapshotterRoot, holders: set[tuple[str, str, str]]) -> set[tuple[str, str]]:
    """One snapshotter against the metadata; returns the (namespace, key)
    records --repair gives back (they count as existing for the leases)."""
    from pycontainerd.plugins.metadata.snapshots import parse_backend_key

    conn = ctx.conn
    backend = _backend(sr)
    rows = conn.execute(
        "SELECT namespace, key, backend_key, parent FROM snapshots WHERE snapshotter = ? ORDER BY namespace, key",
        (sr.name,)).fetchall()
    by_bkey = {r[2]: r for r in rows}
    children: dict[str, int] = {}
    for b in backend.values():
        if b.parent:
            children[b.parent] = children.get(b.parent, 0) + 1

    # data missing: a snapshot recorded by its snapshotter whose directory is gone
    gone: set[str] = set()
    for b in sorted(backend.values(), key=lambda b: b.key):
        path = sr.data_path(b.sid, b.kind, bool(b.parent))
        if path is None or os.path.isdir(path):
            continue
        gone.add(b.key)
        row = by_bkey.get(b.key)
        ns, what = (row[0], f"{sr.name}/{row[1]}") if row else ("", f"{sr.name}/{b.key}")
        if children.get(b.key):
            ctx.add(Finding("snapshot-dir-missing", ns, what, path,
                            reason=f"{_plural(children[b.key], 'snapshot')} built on it: remove them first"))
            continue

        def drop(b=b, row=row) -> str:
            _remove_backend(sr, b.key)
            if row is None:
                return "dropped the snapshotter's record"
            refs = ctx.tx(lambda c: _drop_snapshot_record(c, row[0], sr.name, row[1]))
            return _with_refs("dropped the snapshotter's and the metadata record", refs)

        ctx.add(Finding("snapshot-dir-missing", ns, what, path, fix=drop, order=20))

    # records whose snapshot the snapshotter does not have
    for ns, key, bkey, _ in rows:
        if bkey in backend:
            continue
        kids = sum(1 for r in rows if r[0] == ns and r[3] == key)
        if kids:  # dropping it would leave their parent naming nothing
            ctx.add(Finding("snapshot-missing", ns, f"{sr.name}/{key}", f"{sr.metastore} (key {bkey})",
                            reason=f"{_plural(kids, 'snapshot')} built on it: remove them first"))
            continue
        ctx.add(Finding("snapshot-missing", ns, f"{sr.name}/{key}", f"{sr.metastore} (key {bkey})", order=20,
                        fix=lambda ns=ns, key=key: _with_refs(
                            "dropped the record", ctx.tx(lambda c: _drop_snapshot_record(c, ns, sr.name, key)))))

    # snapshots no record names: give back what is committed or still held
    unrecorded = {k: b for k, b in backend.items() if k not in by_bkey and k not in gone}
    restorable: dict[str, tuple[str, str, str]] = {}  # bkey -> (namespace, key, parent key)
    taken = {(r[0], r[1]) for r in rows}
    changed = True
    while changed:  # parents before children: a chain can come back whole
        changed = False
        for bkey, b in sorted(unrecorded.items()):
            parsed = parse_backend_key(bkey)
            if bkey in restorable or parsed is None or parsed in taken:
                continue
            ns, key = parsed
            if b.kind != KIND_COMMITTED and (ns, sr.name, key) not in holders:
                continue
            parent = ""
            if b.parent:
                prow = by_bkey.get(b.parent) if b.parent not in gone else None
                if prow is not None and prow[0] == ns:
                    parent = prow[1]
                elif b.parent in restorable and restorable[b.parent][0] == ns:
                    parent = restorable[b.parent][1]
                else:
                    continue
            restorable[bkey] = (ns, key, parent)
            taken.add((ns, key))
            changed = True
    for bkey, b in sorted(unrecorded.items()):
        where = sr.data_path(b.sid, b.kind, bool(b.parent)) or sr.metastore
        if bkey in restorable:
            ns, key, parent = restorable[bkey]

            def restore(b=b, ns=ns, key=key, parent=parent) -> str:
                from pycontainerd.plugins.metadata.sqlite import ensure_namespace, put_labels

                def tx(c: sqlite3.Connection) -> str:
                    ensure_namespace(c, ns)
                    now = time.time_ns()
                    c.execute(
                        "INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent, created_at, "
                        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (ns, sr.name, key, b.key, parent, b.created or now, b.updated or now))
                    put_labels(c, ns, "snapshot", f"{sr.name}/{key}", b.labels)
                    return "restored the metadata record"
                return ctx.tx(tx)

            ctx.add(Finding("snapshot-unrecorded", ns, f"{sr.name}/{key}", where, fix=restore, order=30))
        else:
            parsed = parse_backend_key(bkey)
            ctx.add(Finding("snapshot-unrecorded", parsed[0] if parsed else "", f"{sr.name}/{bkey}", where,
                            outcome=LEFT_FOR_GC, reason="nothing holds it, the daemon removes it at its next start"))

    # directories no snapshotter record names
    live = {(sr.kind_dirs()[b.kind], b.sid) for b in backend.values()}
    for sub in sorted(set(sr.kind_dirs().values())):
        d = os.path.join(sr.root, sub)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if (sub, name) not in live:
                ctx.add(Finding("snapshot-dir-unrecorded", "", f"{sr.name}/{name}", os.path.join(d, name),
                                outcome=LEFT_FOR_GC, reason="the snapshotter's cleanup removes it at the next start"))
    return {(ns, key) for ns, key, _ in restorable.values()}


def check_snapshots(ctx: Context) -> dict[str, set[tuple[str, str]]]:
    """Every snapshotter; returns, by snapshotter, the records --repair restores."""
    conn = ctx.conn
    holders = {(ns, rtype.partition("/")[2], rid) for ns, rtype, rid in conn.execute(
        "SELECT r.namespace, r.type, r.id FROM lease_resources r JOIN leases l "
        "ON l.namespace = r.namespace AND l.id = r.lease WHERE r.type GLOB 'snapshots/*'")}
    try:
        holders |= set(conn.execute(
            "SELECT namespace, snapshotter, snapshot_key FROM containers WHERE snapshotter != ''").fetchall())
    except sqlite3.OperationalError:  # a schema without containers' snapshots
        pass
    restored: dict[str, set[tuple[str, str]]] = {}
    checked = set()
    for sr in ctx.snapshotters:
        checked.add(sr.name)
        restored[sr.name] = check_snapshotter(ctx, sr, holders)
    for ns, sn, key, bkey in conn.execute(
            "SELECT namespace, snapshotter, key, backend_key FROM snapshots ORDER BY snapshotter, namespace, key"):
        if sn in checked or sn in ctx.skipped:
            continue
        ctx.add(Finding("snapshot-missing", ns, f"{sn}/{key}", f"snapshotter {sn} (key {bkey})",
                        reason=f"snapshotter {sn} has no root here"))
    return restored


# -- leases and images --------------------------------------------------------------------------------


def check_leases(ctx: Context) -> None:
    """Lease references whose lease is gone. A reference of a lease that
    exists to something that does not is no finding: containerd's
    AddResource takes any id (a client may reserve a resource before it
    makes it), a delete drops only its own lease's reference, and the
    collector ignores references to nothing; a crashed client's lease
    naming what was deleted since is ordinary."""
    conn = ctx.conn
    leases = set(conn.execute("SELECT namespace, id FROM leases").fetchall())
    for ns, lease, rtype, rid in conn.execute(
            "SELECT namespace, lease, type, id FROM lease_resources ORDER BY namespace, lease, type, id").fetchall():
        if (ns, lease) in leases:
            continue

        def drop(ns=ns, lease=lease, rtype=rtype, rid=rid) -> str:
            def tx(c: sqlite3.Connection) -> str:
                c.execute("DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?",
                          (ns, lease, rtype, rid))
                return "removed the reference"
            return ctx.tx(tx)

        ctx.add(Finding("lease-dangling", ns, f"lease {lease} -> {rtype} {rid} (the lease does not exist)",
                        ctx.meta_path, fix=drop, order=40))


def check_images(ctx: Context, content_root: str, present: set[str]) -> None:
    conn = ctx.conn
    for ns, name, target in conn.execute(
            "SELECT namespace, name, target_digest FROM images ORDER BY namespace, name").fetchall():
        if not target:
            continue
        has_record = conn.execute("SELECT 1 FROM blobs WHERE namespace = ? AND digest = ?", (ns, target)).fetchone()
        if has_record and target in present:
            continue
        alg, _, hexpart = target.partition(":")
        ctx.add(Finding("image-target-missing", ns, f"image {name} -> {target}",
                        os.path.join(content_root, "blobs", alg, hexpart),
                        reason="pull the image again, or remove it"))


# -- the run -------------------------------------------------------------------------------------------


def _load_config(path: str | None, root: str | None):
    from pycontainerd.core import config as configmod

    if path:
        cfg = configmod.load(path)
    elif os.path.exists(configmod.DEFAULT_CONFIG_PATH):
        cfg = configmod.load(configmod.DEFAULT_CONFIG_PATH)
    else:
        cfg = configmod.Config()
    if root:
        cfg.root = root
    return cfg


def _stores(cfg) -> tuple[str | None, list[SnapshotterRoot], dict[str, str]]:
    """The content root and the snapshotters to check, from the
    registrations the daemon would load and the config it would read."""
    from pycontainerd.core import config as configmod
    from pycontainerd.core import registry

    disabled = set(cfg.disabled_plugins)
    regs, _ = registry.discover()
    by_uri = {r.uri: r for r in regs}
    content_root = None
    if CONTENT_URI in by_uri and CONTENT_URI not in disabled:
        content_root = os.path.join(cfg.root, CONTENT_URI)
    snapshotters, skipped = [], {}
    for reg in regs:
        if reg.type != SNAPSHOT_TYPE:
            continue
        if reg.uri in disabled:
            skipped[reg.id] = "disabled"
            continue
        builtin = reg.id in LOCAL_SNAPSHOTTERS and getattr(reg.init, "__module__", "").startswith(
            "pycontainerd.plugins.snapshotters.")
        if not builtin:
            skipped[reg.id] = "fsck does not know its layout"
            continue
        conf = configmod.decode_plugin_config(reg.config, cfg, reg.uri) if reg.config else None
        root = getattr(conf, "root_path", "") or os.path.join(cfg.root, reg.uri)
        sr = SnapshotterRoot(reg.id, root)
        if os.path.exists(sr.metastore):
            snapshotters.append(sr)
        # else: it never ran here (a skipped btrfs, say); records naming it are findings
    for name, pp in cfg.proxy_plugins.items():
        if pp.type == "snapshot":
            skipped[name] = "a proxy plugin (its store is another process's)"
    return content_root, snapshotters, skipped


def _open_metadata(path: str) -> sqlite3.Connection:
    from pycontainerd.plugins.metadata.sqlite import MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != len(MIGRATIONS):
        conn.close()
        raise FsckError(f"metadata schema version {version} at {path}, this fsck reads version {len(MIGRATIONS)}: "
                        "start the daemon once on this root to migrate it")
    return conn


def run(cfg, repair: bool, verify: bool, out=sys.stdout, err=sys.stderr) -> int:
    from pycontainerd.core.daemon import CONTAINERD_METADATA, DirLock, StartError

    root = cfg.root
    if not os.path.isdir(root):
        raise FsckError(f"root {root} does not exist")
    if os.path.isdir(os.path.join(root, CONTAINERD_METADATA)):
        raise FsckError(f"root {root} is a containerd root (it holds {CONTAINERD_METADATA}); "
                        "fsck reads pycontainerd roots")
    lock = DirLock(root, "root")
    lock.action = "check it"
    try:
        lock.acquire()
    except StartError as exc:
        raise FsckError(str(exc)) from None
    try:
        meta_path = os.path.join(root, METADATA_URI, "meta.db")
        if not os.path.exists(meta_path):
            raise FsckError(f"no metadata database at {meta_path}: nothing to check against")
        content_root, snapshotters, skipped = _stores(cfg)
        conn = _open_metadata(meta_path)
        try:
            ctx = Context(root, repair, verify, meta_path, conn, content_root, snapshotters, skipped)
            return _check(ctx, out, err)
        finally:
            conn.close()
    finally:
        lock.release()


def _check(ctx: Context, out, err) -> int:
    for name, why in sorted(ctx.skipped.items()):
        print(f"fsck: snapshotter {name} not checked: {why}", file=err)
    if ctx.content_root is None:
        print("fsck: content store not checked: the content plugin is disabled", file=err)
    else:
        present = check_content(ctx, ctx.content_root)
        check_ingests(ctx, ctx.content_root, present)
        check_images(ctx, ctx.content_root, present)
    check_snapshots(ctx)
    check_leases(ctx)
    ctx.findings.sort(key=lambda f: (f.kind, f.namespace, f.what))
    findings = [f for f in ctx.findings if not f.pending_gc]
    garbage = [f for f in ctx.findings if f.pending_gc]
    later = f"{_plural(len(garbage), 'item')} left for the daemon's garbage collector"
    if not findings:
        for f in garbage:
            print(f.line(f.gc_result()), file=out)
        print("fsck: clean" + (f" ({later})" if garbage else ""), file=err)
        return EXIT_CLEAN
    if not ctx.repair:
        for f in ctx.findings:
            print(f.line(f.gc_result() if f.pending_gc else ""), file=out)
        fixable = sum(1 for f in findings if f.fix is not None)
        print(f"fsck: {_plural(len(findings), 'finding')} ({fixable} fixed by --repair); {later}", file=err)
        return EXIT_FINDINGS
    results: dict[int, str] = {}
    for f in sorted(findings, key=lambda f: f.order):  # repairs in their order, lines in the report's
        if f.fix is not None:
            try:
                results[id(f)] = f"{f.outcome if f.outcome == QUARANTINED else REPAIRED}: {f.fix()}"
            except Exception as exc:  # one failed repair must not stop the others
                results[id(f)] = f"{NOT_FIXED}: {exc}"
        else:
            results[id(f)] = f"{f.outcome}: {f.reason}" if f.reason else f.outcome
    counts: dict[str, int] = {}
    for f in ctx.findings:
        if f.pending_gc:
            print(f.line(f.gc_result()), file=out)
            continue
        outcome = results[id(f)].partition(":")[0]
        counts[outcome] = counts.get(outcome, 0) + 1
        print(f.line(results[id(f)]), file=out)
    summary = ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
    print(f"fsck: {_plural(len(findings), 'finding')}: {summary}; {later}", file=err)
    return EXIT_UNFIXED if counts.get(NOT_FIXED) else EXIT_FINDINGS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pycontainerd fsck",
        description="Check that a stopped daemon's metadata, content store and snapshotters agree. "
                    "Each finding is one line: kind, namespace, what, where (tab-separated); garbage the "
                    "daemon's collector removes is listed with a fifth field 'left for GC: ...' and is no finding. "
                    "Exit status: 0 clean, 1 findings, 2 cannot check, 4 (--repair) findings left unfixed.")
    p.add_argument("--config", "-c",
                   help="the daemon's config file (default /etc/pycontainerd/config.toml if it exists)")
    p.add_argument("--root", help="the root to check, instead of the config's")
    p.add_argument("--repair", action="store_true",
                   help="fix what is safe: drop records whose data is gone, restore records of snapshots still "
                        "held, remove stale ingests and references of leases that are gone, quarantine corrupt blobs; "
                        "unreferenced data is left for the daemon's garbage collector")
    p.add_argument("--verify-content", action="store_true",
                   help="also hash every blob and check it matches its name (slow: reads all content)")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from pycontainerd.core.config import ConfigError

    try:
        cfg = _load_config(args.config, args.root)
        return run(cfg, args.repair, args.verify_content)
    except (FsckError, ConfigError) as exc:
        print(f"pycontainerd fsck: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pycontainerd fsck: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
