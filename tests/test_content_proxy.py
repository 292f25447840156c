"""The proxy content store client (plugins/content/proxy.py) against the
raw content server (plugins/content/serve.py), in-process on a real socket:
the metadata layer used over it exactly as over the local store, including
the calls it makes from worker threads (the shared-blob check inside the
database transaction, copying a shared blob, positioned reads)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil

import grpc
import pytest

from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.core.service import ErrdefsInterceptor
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.content import Info
from pycontainerd.plugins.content.local import LocalStore
from pycontainerd.plugins.content.proxy import ProxyContentStore
from pycontainerd.plugins.content.serve import raw_service
from pycontainerd.plugins.metadata.content import ContentStore
from pycontainerd.plugins.metadata.sqlite import DB
from pycontainerd.testing.daemon import short_tempdir


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def tmp():
    d = short_tempdir("pcd-cproxy-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def _with_proxy(tmp: str, fn) -> None:
    """Serve a raw store in `tmp`, and run fn(remote_root, proxy, cs)."""
    root = os.path.join(tmp, "remote")
    server = grpc.aio.server(interceptors=[ErrdefsInterceptor()])
    pb_grpc.add_ContentServicer_to_server(raw_service(LocalStore(root)), server)
    sock = os.path.join(tmp, "cs.sock")
    server.add_insecure_port("unix:" + sock)
    await server.start()
    channel = grpc.aio.insecure_channel("unix:" + sock)
    db = DB(os.path.join(tmp, "meta.db"))
    await db.open()
    try:
        proxy = ProxyContentStore("remote", sock, channel)
        await fn(root, proxy, ContentStore(db, proxy))
    finally:
        db.close()
        await channel.close()
        await server.stop(None)


async def _ingest(cs: ContentStore, ns: str, ref: str, data: bytes, expected: str = "") -> str:
    w = await cs.writer(ns, ref, len(data) if expected else 0, expected)
    try:
        if w.status().offset == 0:
            for i in range(0, len(data), 1 << 16):
                await w.write(data[i:i + (1 << 16)])
        return await w.commit(len(data), expected)
    finally:
        await w.close()


def test_metadata_layer_over_a_proxy_store(tmp):
    data = os.urandom(300_000)

    async def body(root, proxy, cs):
        assert await _ingest(cs, "a", "r1", data) == dg(data)
        blob = os.path.join(root, "blobs", "sha256", dg(data)[7:])
        assert open(blob, "rb").read() == data
        info = await proxy.info(dg(data))
        assert (info.digest, info.size) == (dg(data), len(data))
        assert [i.digest for i in await proxy.walk()] == [dg(data)]
        assert [i.digest for i in await proxy.walk(f"digest=={dg(data)}")] == [dg(data)]
        with pytest.raises(errdefs.NotFound):
            await proxy.info(dg(b"nope"))
        # the raw store keeps its own labels, apart from the namespaces' ones
        updated = await proxy.update(Info(dg(data), len(data), labels={"a": "b"}), ["labels.a"])
        assert updated.labels == {"a": "b"} and (await proxy.info(dg(data))).labels == {"a": "b"}
        assert (await cs.info("a", dg(data))).labels == {}

        # sequential reads share one stream; a jump opens another
        ra = await cs.reader_at("a", dg(data))
        try:
            assert ra.size == len(data)
            got = b"".join([await ra.read_at(off, 70_000) for off in range(0, len(data), 70_000)])
            assert got == data
            assert await ra.read_at(123, 10) == data[123:133]
            # from a worker thread, as the differ reads
            assert await asyncio.to_thread(ra.read_at_sync, 1000, 5000) == data[1000:6000]
        finally:
            ra.close()

        # a second namespace: the blob is on the remote, the shared-blob check
        # (made inside the database transaction) finds it, nothing is copied
        w = await cs.writer("b", "r2", len(data), dg(data))
        assert w.w is None and w.status().offset == len(data)
        # ... until someone writes anyway: the blob is copied into a real
        # ingest from a worker thread (read_at_sync and write_sync)
        await w.truncate(len(data))
        assert w.w is not None and w.w.offset == len(data)
        await w.close()
        statuses = await proxy.list_statuses()
        assert [(s.ref, s.offset) for s in statuses] == [("b/r2", len(data))]
        assert await proxy.walk_status_refs() == ["b/r2"]
        # resumed: the remote reports where the ingest stands
        w = await cs.writer("b", "r2")
        assert w.status().offset == len(data) and w.digest() == dg(data)
        assert await w.commit(len(data)) == dg(data)
        assert [i.digest for i in await cs.list("b")] == [dg(data)]

        # a broken ingest, then abort
        w = await cs.writer("a", "r3")
        await w.write(b"partial")
        await w.close()
        st = await cs.status("a", "r3")
        assert (st.ref, st.offset) == ("r3", 7)
        assert [s.ref for s in await cs.list_statuses("a")] == ["r3"]
        # a second writer on a held ref is refused by the remote's lock
        w1 = await cs.writer("a", "r3")
        with pytest.raises(errdefs.Unavailable, match="locked"):
            await proxy.writer("a/r3")
        # truncate to 0 and rewrite, then a wrong size keeps the ingest
        await w1.truncate(0)
        await w1.write(b"other")
        with pytest.raises(errdefs.FailedPrecondition):
            await w1.w.commit(6, "")
        await w1.close()
        assert (await proxy.status("a/r3")).offset == 5
        await cs.abort("a", "r3")
        with pytest.raises(errdefs.NotFound):
            await proxy.status("a/r3")
        assert os.listdir(os.path.join(root, "ingest")) == []

        # deletes: the file goes when no namespace has it
        await cs.delete("a", dg(data))
        assert os.path.exists(blob)
        await cs.delete("b", dg(data))
        assert not os.path.exists(blob)
        with pytest.raises(errdefs.NotFound):
            await proxy.delete(dg(data))

        # a blocking call on the loop itself would deadlock: refused
        w = await proxy.writer("on-the-loop")
        with pytest.raises(RuntimeError):
            w.write_sync(b"x")
        await w.close()
        await proxy.abort("on-the-loop")

    asyncio.run(_with_proxy(tmp, body))


def test_existing_blob_on_commit_is_already_exists(tmp):
    async def body(root, proxy, cs):
        await _ingest(cs, "a", "r1", b"same")
        # no expected digest: the data is written, and the remote's commit
        # finds the blob there already; the namespace still gets its record
        assert await _ingest(cs, "b", "r1", b"same") == dg(b"same")
        assert [i.digest for i in await cs.list("b")] == [dg(b"same")]
        assert os.listdir(os.path.join(root, "ingest")) == []
        with pytest.raises(errdefs.AlreadyExists):
            await _ingest(cs, "b", "r2", b"same")

    asyncio.run(_with_proxy(tmp, body))
