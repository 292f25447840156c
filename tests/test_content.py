"""The content store, its namespaced metadata view and the Content service,
in-process: store semantics (streaming writes, resume, locks, verified
commits), namespaces, labels, filters, leases, and the Write protocol over
the real gRPC socket."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3

import grpc
import pytest

from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.client.commands.content import human_duration, human_size
from pycontainerd.client.content import ContentClient
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.content import STORE_METHODS, Info
from pycontainerd.pkg.digest import digest_error
from pycontainerd.pkg.timestamps import format_rfc3339nano, parse_rfc3339nano
from pycontainerd.plugins.content.local import LocalStore
from pycontainerd.plugins.metadata.content import ContentStore
from pycontainerd.plugins.metadata.sqlite import DB
from pycontainerd.testing import InProcessDaemon
from pycontainerd.testing.daemon import short_tempdir


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def tmp():
    d = short_tempdir("pcd-content-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run(coro):
    return asyncio.run(coro)


async def open_stores(tmp: str, delete_unreferenced: bool = True) -> tuple[DB, LocalStore, ContentStore]:
    db = DB(os.path.join(tmp, "meta.db"))
    await db.open()
    backend = LocalStore(os.path.join(tmp, "content"))
    return db, backend, ContentStore(db, backend, delete_unreferenced=delete_unreferenced)


def blob_files(tmp: str) -> list[str]:
    root = os.path.join(tmp, "content", "blobs", "sha256")
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


# -- the local store -----------------------------------------------------------------


def test_streaming_write_commit_info_and_positioned_reads(tmp):
    data = os.urandom(3 * (1 << 20) + 17)

    async def main():
        s = LocalStore(tmp)
        w = await s.writer("r1", total=len(data))
        for i in range(0, len(data), 1 << 20):
            await w.write(data[i:i + (1 << 20)])
        assert w.status().offset == len(data) and w.status().total == len(data)
        assert w.digest() == dg(data)
        assert await w.commit(len(data), dg(data)) == dg(data)
        info = await s.info(dg(data))
        assert info.size == len(data) and info.digest == dg(data)
        path = s.blob_path(dg(data))
        assert os.stat(path).st_mode & 0o222 == 0  # read-only once committed
        assert not os.listdir(os.path.join(tmp, "ingest"))  # the ingest is gone
        with await s.reader_at(dg(data)) as ra:
            assert ra.size == len(data)
            assert await ra.read_at(5, 10) == data[5:15]
            assert await ra.read_at(len(data) - 3, 100) == data[-3:]
            assert await ra.read_at(len(data), 10) == b""
        assert [i.digest for i in await s.walk()] == [dg(data)]
        assert await s.walk(f"digest=={dg(b'other')}") == []
        assert await s.walk(f"size=={len(data)}") != []
        await s.delete(dg(data))
        with pytest.raises(errdefs.NotFound):
            await s.info(dg(data))
        with pytest.raises(errdefs.NotFound):
            await s.delete(dg(data))

    run(main())


def test_ingest_layout_is_containerds(tmp):
    async def main():
        s = LocalStore(tmp)
        w = await s.writer("my-ref", total=10)
        await w.write(b"12345")
        await w.close()
        d = os.path.join(tmp, "ingest", hashlib.sha256(b"my-ref").hexdigest())
        assert sorted(os.listdir(d)) == ["data", "ref", "startedat", "total", "updatedat"]
        assert open(os.path.join(d, "ref")).read() == "my-ref"
        assert open(os.path.join(d, "total")).read() == "10"
        started = open(os.path.join(d, "startedat")).read()
        assert started.endswith("Z") and "T" in started
        st = await s.status("my-ref")
        assert (st.ref, st.offset, st.total) == ("my-ref", 5, 10)
        assert st.started_at == parse_rfc3339nano(started)

    run(main())


def test_timestamps_round_trip_and_parse_go_offsets():
    ns = 1_700_000_000_123_456_700
    assert parse_rfc3339nano(format_rfc3339nano(ns)) == ns
    assert format_rfc3339nano(1_700_000_000 * 10**9) == "2023-11-14T22:13:20Z"
    assert parse_rfc3339nano("2023-11-14T23:13:20.5+01:00") == 1_700_000_000_500_000_000


def test_wrong_digest_or_size_commits_nothing_and_the_ingest_stays(tmp):
    async def main():
        s = LocalStore(tmp)
        w = await s.writer("bad")
        await w.write(b"hello")
        with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
            await w.commit(0, dg(b"other"))
        assert await s.walk() == []
        assert (await s.status("bad")).offset == 5  # still resumable
        w = await s.writer("bad")  # the lock was released
        with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit size 5, expected 6"):
            await w.commit(6, dg(b"hello"))
        assert await s.walk() == []
        await s.abort("bad")
        with pytest.raises(errdefs.NotFound):
            await s.status("bad")
        with pytest.raises(errdefs.NotFound):
            await s.abort("bad")

    run(main())


def test_resume_continues_at_the_current_size_after_a_restart(tmp):
    data = os.urandom(200_000)

    async def main():
        w = await LocalStore(tmp).writer("resume", total=len(data))
        await w.write(data[:123_456])
        await w.close()
        # a new store on the same root, as after a daemon restart
        s = LocalStore(tmp)
        w = await s.writer("resume", total=len(data))
        assert w.offset == 123_456
        await w.write(data[123_456:])
        assert await w.commit(len(data), dg(data)) == dg(data)
        with await s.reader_at(dg(data)) as ra:
            assert await ra.read_at(0, len(data)) == data

    run(main())


def test_a_second_writer_on_the_same_ref_is_refused_until_the_first_closes(tmp):
    async def main():
        s = LocalStore(tmp)
        w = await s.writer("busy")
        with pytest.raises(errdefs.Unavailable) as info:
            await s.writer("busy")
        assert str(info.value).startswith("ref busy locked for ")
        assert str(info.value).endswith(": unavailable")
        await w.close()
        w2 = await s.writer("busy")
        await w2.close()

    run(main())


def test_existing_blob_is_already_exists(tmp):
    async def main():
        s = LocalStore(tmp)
        for ref in ("a", "b"):
            w = await s.writer(ref)
            await w.write(b"same")
            if ref == "a":
                await w.commit()
            else:
                with pytest.raises(errdefs.AlreadyExists):
                    await w.commit()
        assert not os.listdir(os.path.join(tmp, "ingest"))
        with pytest.raises(errdefs.AlreadyExists):
            await s.writer("c", expected=dg(b"same"))
        with pytest.raises(errdefs.InvalidArgument):
            await s.info("sha256:nothex")

    run(main())


def test_digest_validation_wording():
    assert digest_error(dg(b"x")) is None
    assert digest_error("sha256:abc") == "invalid checksum digest length"
    assert digest_error("nocolon") == "invalid checksum digest format"
    assert digest_error("md5:" + "0" * 32) == "unsupported digest algorithm"
    assert digest_error("sha256:" + "G" * 64) == "invalid checksum digest format"


# -- the namespaced view ---------------------------------------------------------------


async def ingest(cs: ContentStore, ns: str, ref: str, data: bytes, expected: str = "", lease: str = "",
                 labels=None) -> str:
    w = await cs.writer(ns, ref, len(data), expected, lease)
    try:
        off = w.status().offset
        if off < len(data):
            await w.write(data[off:])
        return await w.commit(len(data), expected, labels)
    finally:
        await w.close()


def test_namespaces_see_only_what_they_ingested_and_share_one_file(tmp):
    data = b"shared bytes"

    async def main():
        db, backend, cs = await open_stores(tmp)
        await ingest(cs, "a", "r", data, dg(data))
        assert [i.digest for i in await cs.list("a")] == [dg(data)]
        assert await cs.list("b") == []
        with pytest.raises(errdefs.NotFound, match="content digest"):
            await cs.info("b", dg(data))
        with pytest.raises(errdefs.NotFound):
            await cs.reader_at("b", dg(data))
        # b declares the digest: shared, nothing is sent, the offset is the size
        w = await cs.writer("b", "r", 0, dg(data))
        assert w.w is None and w.status().offset == len(data)
        assert await w.commit(len(data), dg(data)) == dg(data)
        assert (await cs.info("b", dg(data))).size == len(data)
        assert blob_files(tmp) == [dg(data).split(":")[1]]
        # already in the namespace: AlreadyExists at open
        with pytest.raises(errdefs.AlreadyExists):
            await cs.writer("b", "again", 0, dg(data))
        # deleting in a leaves b's copy (and the file); the last one removes it
        await cs.delete("a", dg(data))
        assert blob_files(tmp) != []
        with pytest.raises(errdefs.NotFound):
            await cs.delete("a", dg(data))
        await cs.delete("b", dg(data))
        assert blob_files(tmp) == []
        db.close()

    run(main())


class ContractOnly:
    """A content store that offers the Store contract and nothing more (a
    third-party plugin, say): the local store behind pkg.content's methods."""

    def __init__(self, store: LocalStore):
        self._store = store

    def __getattr__(self, name: str):
        if name not in STORE_METHODS:
            raise AttributeError(name)
        return getattr(self._store, name)


def test_a_contract_only_backend_shares_a_blob_across_namespaces(tmp):
    data = b"shared through the contract"

    async def main():
        db = DB(os.path.join(tmp, "meta.db"))
        await db.open()
        cs = ContentStore(db, ContractOnly(LocalStore(os.path.join(tmp, "content"))))
        await ingest(cs, "a", "r", data, dg(data))
        w = await cs.writer("b", "r", 0, dg(data))  # asks the backend's info(), nothing private
        assert w.w is None and w.status().offset == len(data)
        assert await w.commit(len(data), dg(data)) == dg(data)
        assert (await cs.info("b", dg(data))).size == len(data)
        db.close()

    run(main())


def test_namespaced_ingests_and_statuses(tmp):
    async def main():
        db, backend, cs = await open_stores(tmp)
        w = await cs.writer("a", "job-1")
        await w.write(b"abc")
        await w.close()
        w = await cs.writer("b", "job-1")  # same ref elsewhere: another ingest
        await w.write(b"x")
        await w.close()
        assert [(s.ref, s.offset) for s in await cs.list_statuses("a")] == [("job-1", 3)]
        assert [(s.ref, s.offset) for s in await cs.list_statuses("b")] == [("job-1", 1)]
        assert await cs.list_statuses("a", "ref==other") == []
        assert (await cs.status("a", "job-1")).offset == 3
        with pytest.raises(errdefs.NotFound, match="reference nope"):
            await cs.status("a", "nope")
        await cs.abort("a", "job-1")
        assert await cs.list_statuses("a") == []
        assert len(await cs.list_statuses("b")) == 1
        with pytest.raises(errdefs.NotFound):
            await cs.abort("a", "job-1")
        # bad input to commit changes nothing
        w = await cs.writer("b", "job-1")
        await w.write(b"yz")
        with pytest.raises(errdefs.FailedPrecondition):
            await w.commit(0, dg(b"wrong"))
        with pytest.raises(errdefs.FailedPrecondition, match="failed size validation"):
            w = await cs.writer("b", "job-1")
            await w.commit(99)
        assert await cs.list("b") == [] and blob_files(tmp) == []
        assert (await cs.status("b", "job-1")).offset == 3
        db.close()

    run(main())


def test_labels_update_and_filters(tmp):
    async def main():
        db, backend, cs = await open_stores(tmp)
        d1 = await ingest(cs, "n", "1", b"one", labels={"kind": "first", "a.b": "c"})
        d2 = await ingest(cs, "n", "2", b"two!")
        assert (await cs.info("n", d1)).labels == {"a.b": "c", "kind": "first"}
        info = await cs.update("n", Info(d2, 0, labels={"x": "1", "ignored": "2"}), ["labels.x"])
        assert info.labels == {"x": "1"}
        info = await cs.update("n", Info(d2, 0, labels={}), ["labels.x"])  # empty: removed
        assert info.labels == {}
        info = await cs.update("n", Info(d1, 0, labels={"only": "this"}), ["labels"])
        assert info.labels == {"only": "this"}
        with pytest.raises(errdefs.InvalidArgument, match='cannot update "size" field'):
            await cs.update("n", Info(d1, 0), ["size"])
        with pytest.raises(errdefs.NotFound):
            await cs.update("other", Info(d1, 0, labels={"a": "b"}), ["labels.a"])
        assert [i.digest for i in await cs.list("n", "labels.only==this")] == [d1]
        assert [i.digest for i in await cs.list("n", f"digest=={d2}")] == [d2]
        assert [i.digest for i in await cs.list("n", "size==4")] == [d2]
        assert sorted(i.digest for i in await cs.list("n", "labels.only==this", "size==4")) == sorted([d1, d2])
        with pytest.raises(errdefs.InvalidArgument):
            await cs.list("n", "labels.==")
        # labels live in the labels table, kind 'content'
        rows = await db.view(lambda c: c.execute(
            "SELECT object, key, value FROM labels WHERE namespace = 'n' AND kind = 'content'").fetchall())
        assert rows == [(d1, "only", "this")]
        db.close()

    run(main())


def test_leases_hold_the_ingest_then_the_blob(tmp):
    async def main():
        db, backend, cs = await open_stores(tmp)
        with pytest.raises(errdefs.NotFound, match="lease does not exist"):
            await cs.writer("n", "r", lease="missing")
        await db.update(lambda c: c.execute("INSERT INTO leases (namespace, id, created_at) VALUES ('n', 'l1', 0)"))
        w = await cs.writer("n", "r", lease="l1")
        await w.write(b"leased")

        def resources(c: sqlite3.Connection):
            return c.execute("SELECT type, id FROM lease_resources WHERE namespace = 'n' AND lease = 'l1'").fetchall()

        assert await db.view(resources) == [("ingests", "r")]
        d = await w.commit()
        assert await db.view(resources) == [("content", d)]
        await cs.delete("n", d, lease="l1")
        assert await db.view(resources) == []
        db.close()

    run(main())


# -- over gRPC, through the daemon -------------------------------------------------------


@pytest.fixture(scope="module")
def served():
    with InProcessDaemon(config={"disabled_plugins": ["io.containerd.gc.v1.scheduler"]}) as d:
        yield d


def write_stream(address: str, requests, namespace: str = "default"):
    with grpc.insecure_channel("unix:" + address) as ch:
        stub = pb_grpc.ContentStub(ch)
        return list(stub.Write(iter(requests), metadata=(("containerd-namespace", namespace),), timeout=10))


def test_write_protocol_stat_write_commit(served):
    data = b"over the wire"
    resp = write_stream(served.address, [
        pb.WriteContentRequest(action=pb.STAT, ref="w1", total=len(data), expected=dg(data)),
        pb.WriteContentRequest(action=pb.WRITE, offset=0, data=data[:4]),
        pb.WriteContentRequest(action=pb.WRITE, offset=4, data=data[4:]),
        pb.WriteContentRequest(action=pb.COMMIT, offset=len(data), total=len(data), expected=dg(data),
                               labels={"k": "v"}),
    ], namespace="proto")
    assert [r.offset for r in resp] == [0, 4, len(data), len(data)]
    assert resp[0].total == len(data) and resp[0].started_at.seconds > 0
    assert resp[-1].digest == dg(data)
    with served.client("proto") as c:
        cc = ContentClient(c)
        assert cc.info(dg(data)).labels == {"k": "v"}
        assert b"".join(cc.read(dg(data))) == data
        assert b"".join(cc.read(dg(data), offset=5, size=3)) == data[5:8]
        assert b"".join(cc.read(dg(data), offset=5)) == data[5:]
        with pytest.raises(errdefs.ContainerdError, match="read past object length"):
            b"".join(cc.read(dg(data), offset=100))


def test_truncated_stream_leaves_a_resumable_ingest_and_bad_offsets_are_refused(served):
    data = os.urandom(100_000)
    write_stream(served.address, [
        pb.WriteContentRequest(action=pb.STAT, ref="trunc", total=len(data)),
        pb.WriteContentRequest(action=pb.WRITE, offset=0, data=data[:40_000]),
    ], namespace="proto2")  # the stream ends without COMMIT
    with served.client("proto2") as c:
        cc = ContentClient(c)
        assert cc.list() == []
        assert [(s.ref, s.offset, s.total) for s in cc.list_statuses()] == [("trunc", 40_000, len(data))]
        assert cc.status("trunc").offset == 40_000
        with pytest.raises(errdefs.NotFound, match='could not get status for ref "nope"'):
            cc.status("nope")
    with pytest.raises(grpc.RpcError) as err:
        write_stream(served.address, [
            pb.WriteContentRequest(action=pb.STAT, ref="trunc"),
            pb.WriteContentRequest(action=pb.WRITE, offset=7, data=b"x"),
        ], namespace="proto2")
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert err.value.details() == "write @7 must occur at current offset 40000"
    with pytest.raises(grpc.RpcError) as err:
        write_stream(served.address, [
            pb.WriteContentRequest(action=pb.STAT, ref="trunc"),
            pb.WriteContentRequest(action=pb.COMMIT, offset=40_000, expected=dg(data)),
        ], namespace="proto2")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with served.client("proto2") as c:
        cc = ContentClient(c)
        assert cc.list() == []
        # the client library resumes where the ingest stopped
        import io
        assert cc.write_blob("trunc", io.BytesIO(data), len(data), dg(data)) == dg(data)
        assert [i.digest for i in cc.list()] == [dg(data)] and cc.list_statuses() == []
        with pytest.raises(grpc.RpcError) as err:
            write_stream(served.address, [pb.WriteContentRequest(action=pb.STAT, ref="")], namespace="proto2")
        assert err.value.details() == "first message must have a reference"


def test_delete_publishes_content_delete(served):
    from pycontainerd.api.events import content_pb2 as ev

    daemon = served.daemon
    got = []

    async def watch():
        with daemon.events.subscribe('topic=="/content/delete"') as sub:
            async for env in sub:
                got.append(env)
                return

    import io
    with served.client("evns") as c:
        cc = ContentClient(c)
        d = cc.write_blob("e", io.BytesIO(b"to delete"), 0, "")
        before = daemon.events.subscriber_count
        fut = asyncio.run_coroutine_threadsafe(watch(), served._loop)
        # subscribed once the exchange counts one more subscriber
        import time
        deadline = time.monotonic() + 10
        while daemon.events.subscriber_count == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert daemon.events.subscriber_count == before + 1
        cc.delete(d)
        fut.result(10)
    assert got[0].namespace == "evns"
    assert ev.ContentDelete.FromString(got[0].event.value).digest == d


def test_go_units_formatting():
    assert human_size(0) == "0B"
    assert human_size(6) == "6B"
    assert human_size(3_145_728) == "3.146MB"
    assert human_size(536_870_912) == "536.9MB"
    assert human_size(1000) == "1kB"
    assert human_duration(0.5) == "Less than a second"
    assert human_duration(1.2) == "1 second"
    assert human_duration(59) == "59 seconds"
    assert human_duration(60) == "About a minute"
    assert human_duration(3 * 3600) == "3 hours"


def test_a_lease_header_naming_no_lease_is_not_found(served):
    with grpc.insecure_channel("unix:" + served.address) as ch:
        stub = pb_grpc.ContentStub(ch)
        md = (("containerd-namespace", "leased"), ("containerd-lease", "no-such-lease"))
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Write(iter([pb.WriteContentRequest(action=pb.STAT, ref="x")]), metadata=md, timeout=10))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "lease does not exist: not found"


# -- garbage collection against commits in flight ---------------------------------------


def test_collections_racing_commits_never_take_a_blob_in_flight_or_held(tmp):
    """Content cleanups (which delete every blob no record names) run over
    and over while writers in two namespaces commit: the window between a
    blob landing in blobs/ and its record being written is covered by the
    store's lock, so every committed blob is still there, in both places."""
    from pycontainerd.plugins.metadata.content import backend_ref
    from pycontainerd.plugins.metadata.gc import Collector

    async def main():
        db, backend, cs = await open_stores(tmp)
        for ns in ("a", "b"):
            await db.update(lambda c, ns=ns: c.execute("INSERT INTO leases (namespace, id, created_at) VALUES (?, 'l', 0)",
                                                       (ns,)))
        collector = Collector(db, backend, ingest_ref=backend_ref, content_lock=lambda: cs.lock)
        datas = [os.urandom(50_000 + i) for i in range(40)]
        done = asyncio.Event()

        async def commit(i: int, data: bytes) -> str:
            ns = "ab"[i % 2]
            w = await cs.writer(ns, f"r{i}", len(data), lease="l")
            for off in range(0, len(data), 16_384):
                await w.write(data[off:off + 16_384])
            return await w.commit(len(data), dg(data))

        async def collect_forever() -> int:
            n = 0
            while not done.is_set():
                collector._dirty_content = True
                await collector.garbage_collect()
                n += 1
                await asyncio.sleep(0)
            return n

        gc_task = asyncio.create_task(collect_forever())
        got = await asyncio.gather(*(commit(i, d) for i, d in enumerate(datas)))
        done.set()
        collections = await gc_task
        await collector.garbage_collect()
        assert collections > 1
        assert got == [dg(d) for d in datas]
        assert blob_files(tmp) == sorted(dg(d)[7:] for d in datas)
        for i, data in enumerate(datas):
            assert (await cs.info("ab"[i % 2], dg(data))).size == len(data)
        db.close()

    run(main())
