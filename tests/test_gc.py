"""Garbage collection: mark and sweep over hand-built metadata rows (every
root and reference kind containerd's metadata/gc.go knows), the mutation
tracking that feeds the scheduler, the scheduler's triggers and config, and
collections in a running daemon that really remove blobs and snapshots from
disk through the content store and the snapshotters."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time

import grpc
import pytest

from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from pycontainerd.client.leases import Leases
from pycontainerd.core.registry import PluginType
from pycontainerd.pkg import errdefs, goduration
from pycontainerd.plugins.gc.scheduler import Config, Scheduler
from pycontainerd.plugins.metadata import gc
from pycontainerd.plugins.metadata.gc import CONTENT, INGEST, LEASE, SNAPSHOT, Collector
from pycontainerd.plugins.metadata.sqlite import DB
from pycontainerd.core.config import ConfigError
from pycontainerd.testing import InProcessDaemon

D = {name: "sha256:" + hashlib.sha256(name.encode()).hexdigest() for name in "abcdefghijklmnop"}
NOW = time.time_ns()


def rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))


# -- hand-built rows ------------------------------------------------------------------


@pytest.fixture
def conn():
    c = sqlite3.connect(":memory:", isolation_level=None)
    from pycontainerd.plugins.metadata.sqlite import MIGRATIONS, _statements

    for script in MIGRATIONS:
        for statement in _statements(script):
            c.execute(statement)
    yield c
    c.close()


def blob(conn, ns, dgst, **labels):
    conn.execute("INSERT INTO blobs (namespace, digest) VALUES (?, ?)", (ns, dgst))
    label(conn, ns, "content", dgst, labels)


def snap(conn, ns, ss, key, parent="", **labels):
    conn.execute(
        "INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent) VALUES (?, ?, ?, ?, ?)",
        (ns, ss, key, f"{ns}/1/{key}", parent),
    )
    label(conn, ns, "snapshot", f"{ss}/{key}", labels)


def lease(conn, ns, lid, labels=None, resources=()):
    conn.execute("INSERT INTO leases (namespace, id) VALUES (?, ?)", (ns, lid))
    label(conn, ns, "lease", lid, labels or {})
    for rtype, rid in resources:
        conn.execute("INSERT INTO lease_resources VALUES (?, ?, ?, ?)", (ns, lid, rtype, rid))


def label(conn, ns, kind, obj, labels):
    for k, v in labels.items():
        conn.execute("INSERT INTO labels VALUES (?, ?, ?, ?, ?)", (ns, kind, obj, k.replace("__", "/"), v))


def collect(conn):
    return gc.sweep(conn, gc.mark(conn, NOW))


def blobs(conn, ns="ns"):
    return {r[0] for r in conn.execute("SELECT digest FROM blobs WHERE namespace = ?", (ns,))}


def snaps(conn, ns="ns"):
    return {f"{s}/{k}" for s, k in conn.execute("SELECT snapshotter, key FROM snapshots WHERE namespace = ?", (ns,))}


def leases(conn, ns="ns"):
    return {r[0] for r in conn.execute("SELECT id FROM leases WHERE namespace = ?", (ns,))}


def test_nothing_holds_a_blob_or_snapshot_so_both_go_with_their_labels(conn):
    blob(conn, "ns", D["a"], note="x")
    snap(conn, "ns", "native", "k1", note="y")
    result = collect(conn)
    assert blobs(conn) == set() and snaps(conn) == set()
    assert conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 0
    assert set(result.removed) == {(CONTENT, "ns", D["a"]), (SNAPSHOT, "ns", "native/k1")}
    assert result.content and result.snapshotters == {"native"}


def test_a_lease_holds_its_content_snapshots_and_ingests(conn):
    blob(conn, "ns", D["a"])
    snap(conn, "ns", "overlayfs", "parent")
    snap(conn, "ns", "overlayfs", "child", parent="parent")
    conn.execute("INSERT INTO ingests (namespace, ref, expected, lease) VALUES ('ns', 'r1', ?, 'l1')", (D["b"],))
    blob(conn, "ns", D["b"])  # what the ingest expects
    lease(conn, "ns", "l1", resources=[("content", D["a"]), ("snapshots/overlayfs", "child"), ("ingests", "r1")])
    blob(conn, "ns", D["c"])
    collect(conn)
    assert blobs(conn) == {D["a"], D["b"]}
    assert snaps(conn) == {"overlayfs/parent", "overlayfs/child"}
    assert conn.execute("SELECT ref FROM ingests").fetchall() == [("r1",)]
    assert leases(conn) == {"l1"}


def test_expired_lease_is_removed_with_what_only_it_held(conn):
    blob(conn, "ns", D["a"])
    blob(conn, "ns", D["b"])
    blob(conn, "ns", D["c"])
    lease(conn, "ns", "old", {gc.LABEL_EXPIRE: rfc3339(NOW - 10**9)}, [("content", D["a"])])
    lease(conn, "ns", "young", {gc.LABEL_EXPIRE: rfc3339(NOW + 3600 * 10**9)}, [("content", D["b"])])
    lease(conn, "ns", "garbled", {gc.LABEL_EXPIRE: "tomorrow"}, [("content", D["c"])])
    collect(conn)
    assert leases(conn) == {"young", "garbled"}  # an unreadable expiry is ignored, as containerd does
    assert blobs(conn) == {D["b"], D["c"]}
    assert conn.execute("SELECT COUNT(*) FROM lease_resources WHERE lease = 'old'").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM labels WHERE object = 'old'").fetchone()[0] == 0


def test_gc_root_blob_keeps_what_its_content_labels_name(conn):
    blob(conn, "ns", D["a"], **{gc.LABEL_ROOT: "2024-01-01T00:00:00Z",
                               "containerd.io/gc.ref.content": D["b"],
                               "containerd.io/gc.ref.content.config": D["c"],
                               "containerd.io/gc.ref.content__layer0": D["d"],
                               "containerd.io/gc.ref.contentfoo": D["e"]})
    blob(conn, "ns", D["b"], **{"containerd.io/gc.ref.content.m.1": D["f"]})  # references are followed on
    for name in "cdef":
        blob(conn, "ns", D[name])
    collect(conn)
    # gc.ref.contentfoo is not a reference: only '.' or '/' may follow
    assert blobs(conn) == {D["a"], D["b"], D["c"], D["d"], D["f"]}


def test_snapshot_labels_name_snapshots_and_parents_are_followed(conn):
    blob(conn, "ns", D["a"], **{gc.LABEL_ROOT: "x",
                               "containerd.io/gc.ref.snapshot.overlayfs": "top",
                               "containerd.io/gc.ref.snapshot.native__a": "n1"})
    snap(conn, "ns", "overlayfs", "base")
    snap(conn, "ns", "overlayfs", "top", parent="base", **{"containerd.io/gc.ref.content.cfg": D["b"]})
    snap(conn, "ns", "native", "n1")
    snap(conn, "ns", "native", "n2")
    blob(conn, "ns", D["b"])
    collect(conn)
    assert snaps(conn) == {"overlayfs/base", "overlayfs/top", "native/n1"}
    assert blobs(conn) == {D["a"], D["b"]}


def test_gc_root_snapshot_is_kept_with_its_parents(conn):
    snap(conn, "ns", "native", "p")
    snap(conn, "ns", "native", "c", parent="p", **{gc.LABEL_ROOT: "x"})
    snap(conn, "ns", "native", "other")
    collect(conn)
    assert snaps(conn) == {"native/p", "native/c"}


def test_images_keep_their_target_and_labelled_references(conn):
    conn.execute("INSERT INTO images (namespace, name, target_digest) VALUES ('ns', 'img', ?)", (D["a"],))
    label(conn, "ns", "image", "img", {"containerd.io/gc.ref.content.extra": D["b"],
                                       "containerd.io/gc.ref.snapshot.native": "s"})
    blob(conn, "ns", D["a"], **{"containerd.io/gc.ref.content.l0": D["c"]})  # manifest -> layer
    for name in "bcd":
        blob(conn, "ns", D[name])
    snap(conn, "ns", "native", "s")
    collect(conn)
    assert blobs(conn) == {D["a"], D["b"], D["c"]}
    assert snaps(conn) == {"native/s"}
    assert conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1  # never swept


def test_containers_keep_their_snapshot_and_labelled_references(conn):
    conn.execute("INSERT INTO containers (namespace, id, snapshotter, snapshot_key) VALUES ('ns', 'c1', 'overlayfs', 'rw')")
    label(conn, "ns", "container", "c1", {"containerd.io/gc.ref.content.spec": D["a"]})
    snap(conn, "ns", "overlayfs", "layer")
    snap(conn, "ns", "overlayfs", "rw", parent="layer")
    snap(conn, "ns", "overlayfs", "stray")
    blob(conn, "ns", D["a"])
    blob(conn, "ns", D["b"])
    collect(conn)
    assert snaps(conn) == {"overlayfs/layer", "overlayfs/rw"}
    assert blobs(conn) == {D["a"]}


def test_flat_lease_keeps_snapshot_parents_but_not_what_labels_name(conn):
    blob(conn, "ns", D["a"], **{"containerd.io/gc.ref.content.x": D["b"]})
    blob(conn, "ns", D["b"])
    snap(conn, "ns", "native", "p")
    snap(conn, "ns", "native", "c", parent="p", **{"containerd.io/gc.ref.content.y": D["c"]})
    blob(conn, "ns", D["c"])
    lease(conn, "ns", "flat", {gc.LABEL_FLAT: "1"}, [("content", D["a"]), ("snapshots/native", "c")])
    collect(conn)
    assert blobs(conn) == {D["a"]}
    assert snaps(conn) == {"native/p", "native/c"}


def test_ingests_unleased_stay_leased_follow_their_lease(conn):
    conn.execute("INSERT INTO ingests (namespace, ref, expected) VALUES ('ns', 'free', ?)", (D["a"],))
    conn.execute("INSERT INTO ingests (namespace, ref, lease) VALUES ('ns', 'orphan', 'gone')")
    conn.execute("INSERT INTO ingests (namespace, ref, lease) VALUES ('ns', 'held', 'l1')")
    lease(conn, "ns", "l1")
    blob(conn, "ns", D["a"])  # another namespace's copy is about to be committed here
    result = collect(conn)
    assert {r[0] for r in conn.execute("SELECT ref FROM ingests")} == {"free", "held"}
    assert blobs(conn) == {D["a"]}
    assert (INGEST, "ns", "orphan") in result.removed and result.content


def test_an_unleased_ingest_expires_after_its_day(conn):
    import time

    now = time.time_ns()
    conn.execute("INSERT INTO ingests (namespace, ref, expires_at) VALUES ('ns', 'stale', ?)", (now - 1,))
    conn.execute("INSERT INTO ingests (namespace, ref, expires_at) VALUES ('ns', 'fresh', ?)", (now + 10**12,))
    result = collect(conn)
    assert {r[0] for r in conn.execute("SELECT ref FROM ingests")} == {"fresh"}
    assert (INGEST, "ns", "stale") in result.removed


def test_references_stay_inside_their_namespace(conn):
    blob(conn, "a", D["a"], **{gc.LABEL_ROOT: "x", "containerd.io/gc.ref.content": D["b"]})
    blob(conn, "a", D["b"])
    blob(conn, "b", D["b"])
    lease(conn, "b", "l1", resources=[("content", D["c"])])
    blob(conn, "a", D["c"])
    collect(conn)
    assert blobs(conn, "a") == {D["a"], D["b"]}
    assert blobs(conn, "b") == set()


def test_dangling_references_are_harmless(conn):
    blob(conn, "ns", D["a"], **{gc.LABEL_ROOT: "x", "containerd.io/gc.ref.content": "sha256:gone",
                               "containerd.io/gc.ref.snapshot.native": "missing"})
    lease(conn, "ns", "l1", resources=[("snapshots/native", "missing"), ("ingests", "none")])
    conn.execute("INSERT INTO images (namespace, name, target_digest) VALUES ('ns', 'i', ?)", (D["p"],))
    collect(conn)
    assert blobs(conn) == {D["a"]} and leases(conn) == {"l1"}


def test_mark_reports_plain_types_and_roots_cover_everything(conn):
    blob(conn, "ns", D["a"])
    lease(conn, "ns", "flat", {gc.LABEL_FLAT: "1"}, [("content", D["a"])])
    marked = gc.mark(conn, NOW)
    assert marked == {(LEASE, "ns", "flat"), (CONTENT, "ns", D["a"])}  # the flat bit is stripped


def test_prune_order_removes_children_before_parents():
    from types import SimpleNamespace as I

    infos = [I(name="a", parent=""), I(name="b", parent="a"), I(name="c", parent="b"),
             I(name="d", parent="a"), I(name="keep", parent=""), I(name="orphan", parent="vanished")]
    order = gc._prune_order(infos, keep={"keep", "a"})
    assert set(order) == {"b", "c", "d", "orphan"}
    assert order.index("c") < order.index("b")


# -- the collector on a real database -----------------------------------------------


def run(coro):
    return asyncio.run(coro)


def test_collector_reports_changes_and_whether_anything_was_deleted(tmp_path):
    async def main():
        d = str(tmp_path)
        db = DB(os.path.join(d, "meta.db"))
        await db.open()
        try:
            c = Collector(db)
            await c.start()
            events = []
            c.register_mutation_callback(events.append)

            def add(conn):
                conn.execute("INSERT INTO blobs (namespace, digest) VALUES ('ns', ?)", (D["a"],))
                conn.execute("INSERT INTO labels VALUES ('ns', 'content', ?, 'k', 'v')", (D["a"],))

            async def changes(fn) -> list[bool]:
                events.clear()
                await db.update(fn)
                await asyncio.sleep(0.01)
                return events[:]

            # changes are reported in batches (about one per transaction)
            assert set(await changes(add)) == {False}
            assert set(await changes(lambda conn: conn.execute("DELETE FROM labels"))) == {False}  # no deletion
            assert (await changes(lambda conn: conn.execute("DELETE FROM blobs")))[-1] is True
            # dirty stays set until a collection: every later change says so
            assert set(await changes(lambda conn: conn.execute("INSERT INTO namespaces VALUES ('x', 0, 0)"))) == {True}
            stats = await c.garbage_collect()
            assert stats.elapsed >= 0 and stats.removed == []
            await asyncio.sleep(0.01)
            assert events == [True]  # the collection itself reports nothing
            assert set(await changes(add)) == {False}  # clean again after the collection
            stats = await c.garbage_collect()
            assert stats.removed == [(CONTENT, "ns", D["a"])]
        finally:
            db.close()

    run(main())


# -- the scheduler ------------------------------------------------------------------------


def test_go_durations():
    assert goduration.parse("0ms") == 0 and goduration.parse("0") == 0
    assert goduration.parse("100ms") == 100 * goduration.MILLISECOND
    assert goduration.parse("1h30m") == 90 * goduration.MINUTE
    assert goduration.parse("1.5s") == 1500 * goduration.MILLISECOND
    assert goduration.parse("-2us") == -2000
    for bad, msg in (("", 'time: invalid duration ""'), ("10", 'time: missing unit in duration "10"'),
                     ("3x", 'time: unknown unit "x" in duration "3x"'), (".s", 'time: invalid duration ".s"')):
        with pytest.raises(goduration.DurationError) as e:
            goduration.parse(bad)
        assert str(e.value) == msg
    assert [goduration.format(n) for n in (0, 1, 1500, 100 * goduration.MILLISECOND, 1500 * goduration.MILLISECOND,
                                           2 * goduration.HOUR, 61 * goduration.SECOND)] == \
        ["0s", "1ns", "1.5µs", "100ms", "1.5s", "2h0m0s", "1m1s"]


async def _scheduler(tmp: str, **cfg):
    db = DB(os.path.join(tmp, "meta.db"))
    await db.open()
    c = Collector(db)
    await c.start()
    s = Scheduler(c, Config(**cfg))
    s.start()
    return db, s


def test_scheduler_defaults_and_exports_are_containerds():
    s = Scheduler(Collector(None), Config())  # nothing runs until start()
    assert s.exports() == {"PauseThreshold": "0.02", "DeletionThreshold": "0", "MutationThreshold": "100",
                           "ScheduleDelay": "0s"}
    assert s.startup_delay == 0.1
    clamped = Scheduler(Collector(None), Config(pause_threshold=3.0, mutation_threshold=-5, schedule_delay="-1s"))
    assert (clamped.pause_threshold, clamped.mutation_threshold, clamped.schedule_delay) == (0.5, 0, 0.0)


def test_scheduler_collects_after_startup_on_trigger_and_after_deletions(tmp_path):
    async def main():
        d = str(tmp_path)
        db, s = await _scheduler(d, startup_delay="10ms", deletion_threshold=1, pause_threshold=0.5)
        try:
            for _ in range(100):
                if s.collections:
                    break
                await asyncio.sleep(0.01)
            assert s.collections == 1  # the start-up collection

            stats = await asyncio.wait_for(s.schedule_and_wait(), 5)
            assert stats.removed == [] and s.collections == 2

            await db.update(lambda conn: conn.execute("INSERT INTO blobs (namespace, digest) VALUES ('ns', 'x')"))
            waiter = asyncio.ensure_future(s.wait())
            await asyncio.sleep(0)
            await db.update(lambda conn: conn.execute("INSERT INTO leases (namespace, id) VALUES ('ns', 'l')"))
            await db.update(lambda conn: conn.execute("DELETE FROM leases"))  # one deletion reaches the threshold
            stats = await asyncio.wait_for(waiter, 5)
            assert (CONTENT, "ns", "x") in stats.removed
        finally:
            await s.close()
            db.close()

    run(main())


def test_scheduled_run_is_skipped_when_nothing_was_deleted(tmp_path):
    async def main():
        d = str(tmp_path)
        # pause threshold 0.5: the interval after a collection is about as
        # long as the collection took, so the schedule comes round quickly
        db, s = await _scheduler(d, startup_delay="1ms", pause_threshold=0.5, mutation_threshold=0)
        try:
            await asyncio.wait_for(s.wait(), 5)
            done = s.collections
            await db.update(lambda conn: conn.execute("INSERT INTO blobs (namespace, digest) VALUES ('ns', 'x')"))
            await asyncio.sleep(0.2)
            assert s.collections == done  # a change without a deletion does not make a collection
            assert await db.view(lambda conn: conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]) == 1
            await db.update(lambda conn: conn.execute("INSERT INTO leases (namespace, id) VALUES ('ns', 'l')"))
            await db.update(lambda conn: conn.execute("DELETE FROM leases"))
            for _ in range(200):
                if s.collections > done:
                    break
                await asyncio.sleep(0.01)
            assert s.collections > done  # deletions (threshold 0) make the next scheduled run happen
        finally:
            await s.close()
            db.close()

    run(main())


def test_bad_duration_in_config_stops_the_start_naming_file_table_and_key():
    # not a failed plugin row: the leases service, which needs the GC, would vanish with it
    d = InProcessDaemon(config={"plugins": {"io.containerd.gc.v1.scheduler": {"schedule_delay": "soon"}}})
    with pytest.raises(ConfigError) as err:
        d.start()
    d.stop()
    assert str(err.value) == (
        f'{d.config_path}: plugins."io.containerd.gc.v1.scheduler".schedule_delay = \'soon\': '
        'invalid duration: time: invalid duration "soon"'
    )


# -- collections in a running daemon: blobs and snapshots really go ------------------


def content_root(d: InProcessDaemon) -> str:
    return os.path.join(d.dir, "root", "io.containerd.content.v1.content")


def blob_file(d: InProcessDaemon, dgst: str) -> str:
    alg, hexpart = dgst.split(":")
    return os.path.join(content_root(d), "blobs", alg, hexpart)


def write_blob(client, data: bytes, lease: str = "", labels: dict[str, str] | None = None) -> str:
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    md = list(client._metadata) + ([("containerd-lease", lease)] if lease else [])
    req = content_pb2.WriteContentRequest(action=content_pb2.COMMIT, ref="ref-" + dgst[7:19], total=len(data),
                                          expected=dgst, offset=0, data=data, labels=labels or {})
    stub = content_pb2_grpc.ContentStub(client.channel)
    list(stub.Write(iter([req]), metadata=md))
    return dgst


def query(d: InProcessDaemon, sql: str) -> list[tuple]:
    """Read the daemon's metadata database directly (WAL: a reader is fine)."""
    conn = sqlite3.connect(os.path.join(d.dir, "root", "io.containerd.metadata.v1.sqlite", "meta.db"))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def collect_now(client) -> None:
    """Run a collection and wait for it: a synchronous lease delete."""
    leases = Leases(client)
    leases.create("trigger-gc")
    leases.delete("trigger-gc", sync=True)


@pytest.fixture
def daemon():
    # no start-up collection: it would race the blobs the tests write
    with InProcessDaemon(config={"plugins": {"io.containerd.gc.v1.scheduler": {"startup_delay": "0ms"}}}) as d:
        yield d


def test_unreferenced_blob_is_removed_from_disk_by_a_collection(daemon):
    with daemon.client("ns1") as c:
        dgst = write_blob(c, b"nobody holds me")
        assert os.path.exists(blob_file(daemon, dgst))
        collect_now(c)
        assert not os.path.exists(blob_file(daemon, dgst))


def test_leased_blob_stays_until_its_lease_is_deleted(daemon):
    with daemon.client("ns1") as c:
        leases = Leases(c)
        leases.create("hold")
        dgst = write_blob(c, b"held by a lease", lease="hold")
        assert ("content", dgst) in leases.list_resources("hold")
        collect_now(c)
        assert os.path.exists(blob_file(daemon, dgst))
        leases.delete("hold", sync=True)
        assert not os.path.exists(blob_file(daemon, dgst))


def test_blob_named_by_a_gc_root_blob_stays(daemon):
    with daemon.client("ns1") as c:
        child = write_blob(c, b"a layer")
        parent = write_blob(c, b"a manifest", labels={"containerd.io/gc.root": "yes",
                                                      "containerd.io/gc.ref.content.l.0": child})
        other = write_blob(c, b"unrelated")
        collect_now(c)
        assert os.path.exists(blob_file(daemon, parent)) and os.path.exists(blob_file(daemon, child))
        assert not os.path.exists(blob_file(daemon, other))


def test_blob_shared_by_two_namespaces_stays_while_one_holds_it(daemon):
    with daemon.client("ns1") as a, daemon.client("ns2") as b:
        Leases(a).create("hold")
        dgst = write_blob(a, b"shared bytes", lease="hold")
        write_blob(b, b"shared bytes")  # ns2's copy is unreferenced: its record goes, the file stays
        collect_now(b)
        assert os.path.exists(blob_file(daemon, dgst))
        Leases(a).delete("hold", sync=True)
        assert not os.path.exists(blob_file(daemon, dgst))


def test_ingest_of_a_deleted_lease_is_aborted_an_unleased_one_resumes(daemon):
    with daemon.client("ns1") as c:
        Leases(c).create("hold")
        stub = content_pb2_grpc.ContentStub(c.channel)
        for ref, md in (("leased", c._metadata + (("containerd-lease", "hold"),)), ("free", c._metadata)):
            req = content_pb2.WriteContentRequest(action=content_pb2.WRITE, ref=ref, offset=0, data=b"partial")
            list(stub.Write(iter([req]), metadata=md))
        ingest_dir = os.path.join(content_root(daemon), "ingest")
        assert len(os.listdir(ingest_dir)) == 2
        collect_now(c)
        assert len(os.listdir(ingest_dir)) == 2  # both alive: one leased, one started without a lease
        (leased_ttl,), (free_ttl,) = query(daemon, "SELECT expires_at FROM ingests WHERE namespace = 'ns1' ORDER BY ref DESC")
        assert leased_ttl == 0 and free_ttl > time.time_ns() + 23 * 3600 * 10**9  # a day for the unleased one
        Leases(c).delete("hold", sync=True)
        assert len(os.listdir(ingest_dir)) == 1
        statuses = stub.ListStatuses(content_pb2.ListStatusesRequest(), metadata=c._metadata).statuses
        assert [(s.ref, s.offset) for s in statuses] == [("free", 7)]


def test_snapshot_without_root_or_lease_is_removed_from_the_snapshotter(daemon):
    with daemon.client("ns1") as c:
        stub = snapshots_pb2_grpc.SnapshotsStub(c.channel)
        md = c._metadata
        stub.Prepare(snapshots_pb2.PrepareSnapshotRequest(snapshotter="native", key="loose"), metadata=md)
        stub.Prepare(snapshots_pb2.PrepareSnapshotRequest(
            snapshotter="native", key="rooted", labels={"containerd.io/gc.root": "x"}), metadata=md)
        Leases(c).create("hold")
        stub.Prepare(snapshots_pb2.PrepareSnapshotRequest(snapshotter="native", key="leased"),
                     metadata=md + (("containerd-lease", "hold"),))
        backend = daemon.daemon.plugins.get(PluginType.SNAPSHOT, "native")
        assert len(backend.walk()) == 3
        collect_now(c)
        listed = {i.name for r in stub.List(snapshots_pb2.ListSnapshotsRequest(snapshotter="native"), metadata=md)
                  for i in r.info}
        assert listed == {"rooted", "leased"}
        assert len(backend.walk()) == 2
        Leases(c).delete("hold", sync=True)
        assert len(backend.walk()) == 1


def test_sync_delete_of_a_missing_lease_is_not_found(daemon):
    with daemon.client("ns1") as c, pytest.raises(errdefs.NotFound):
        Leases(c).delete("nope", sync=True)


def test_grpc_status_of_a_bad_resource_type(daemon):
    with daemon.client("ns1") as c:
        Leases(c).create("l")
        with pytest.raises(errdefs.NotImplementedErr):
            Leases(c).add_resource("l", "images", "x")
        stub = Leases(c).stub
        from pycontainerd.api.services.leases.v1 import leases_pb2 as pb

        with pytest.raises(grpc.RpcError) as e:
            stub.AddResource(pb.AddResourceRequest(id="l", resource=pb.Resource(id="x", type="content")),
                             metadata=c._metadata)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == "invalid content resource id x: invalid checksum digest format: invalid argument"
