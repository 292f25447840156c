"""Garbage collection when something fails, in a running (in-process) daemon.

- The collector raises: a synchronous lease delete gets containerd's
  "gc failed", and once the collector works again the scheduler runs the
  collection by itself.
- A store's cleanup fails (a blob file that cannot be unlinked): the next
  collection cleans that store again, even with nothing new deleted there.
- One snapshot directory cannot be removed (something is mounted in it):
  the others in the same collection go, and the stuck one goes with the
  next cleanup once it is free.

The failures are real where the machine allows it (a bind mount over a
blob, a read-only tmpfs inside a snapshot); only "the collector raises" is
injected, by wrapping the daemon's own collector for one call.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import time

import grpc
import pytest

from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.api.services.leases.v1 import leases_pb2
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from pycontainerd.client.leases import Leases
from pycontainerd.core.registry import PluginType
from pycontainerd.testing import InProcessDaemon


@pytest.fixture
def daemon():
    # no start-up collection: the tests decide when collections happen
    with InProcessDaemon(config={"plugins": {"io.containerd.gc.v1.scheduler": {"startup_delay": "0ms"}}}) as d:
        yield d


def blob_file(d: InProcessDaemon, dgst: str) -> str:
    alg, hexpart = dgst.split(":")
    return os.path.join(d.dir, "root", "io.containerd.content.v1.content", "blobs", alg, hexpart)


def write_blob(client, data: bytes, lease: str = "") -> str:
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    md = list(client._metadata) + ([("containerd-lease", lease)] if lease else [])
    req = content_pb2.WriteContentRequest(action=content_pb2.COMMIT, ref="ref-" + dgst[7:19], total=len(data),
                                          expected=dgst, offset=0, data=data)
    list(content_pb2_grpc.ContentStub(client.channel).Write(iter([req]), metadata=md))
    return dgst


def collect_now(client) -> None:
    """Run a collection and wait for it: a synchronous lease delete."""
    Leases(client).create("trigger-gc")
    Leases(client).delete("trigger-gc", sync=True)


def until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True, capture_output=True)


def umount(path: str) -> None:
    subprocess.run(["umount", path], check=False, capture_output=True)


def test_sync_lease_delete_gets_the_failure_and_the_scheduler_retries(daemon, monkeypatch):
    scheduler = daemon.daemon.plugins.get(PluginType.GC, "scheduler")
    collector = scheduler.collector
    real = collector.garbage_collect
    broken = True
    calls = []

    async def fails_while_broken():
        calls.append(broken)
        if broken:
            raise OSError("metadata disk went away")
        return await real()

    monkeypatch.setattr(collector, "garbage_collect", fails_while_broken)
    with daemon.client("ns1") as c:
        leases = Leases(c)
        leases.create("hold")
        dgst = write_blob(c, b"held until the lease goes", lease="hold")
        with pytest.raises(grpc.RpcError) as err:
            leases.stub.Delete(leases_pb2.DeleteRequest(id="hold", sync=True), metadata=c._metadata)
        assert err.value.code() == grpc.StatusCode.UNKNOWN
        assert err.value.details() == "gc failed"
        # the lease itself is gone: only the collection failed
        assert [lease.id for lease in leases.list()] == []
        assert os.path.exists(blob_file(daemon, dgst))
        broken = False
        # nobody triggers anything: the scheduler runs the collection again
        assert until(lambda: not os.path.exists(blob_file(daemon, dgst)))
    assert calls[0] is True and calls[-1] is False


def test_a_failed_content_cleanup_is_retried_by_the_next_collection(daemon):
    with daemon.client("ns1") as c:
        stuck = write_blob(c, b"cannot be unlinked while something is mounted on it")
        path = blob_file(daemon, stuck)
        mount("--bind", "/dev/null", path)  # unlink now fails with EBUSY
        try:
            collect_now(c)
            assert os.path.exists(path)  # the cleanup failed
        finally:
            umount(path)
        # nothing else to delete in the content store: still, the next
        # collection cleans it again
        collect_now(c)
        assert not os.path.exists(path)


def test_one_stuck_snapshot_does_not_block_the_others(daemon):
    native = os.path.join(daemon.dir, "root", "io.containerd.snapshotter.v1.native")

    def dirs() -> dict[str, str]:
        """{backend key: snapshot directory} of the snapshots native knows."""
        with sqlite3.connect(os.path.join(native, "metadata.db")) as db:
            return {k: os.path.join(native, "snapshots", str(i)) for k, i in db.execute("SELECT key, id FROM snapshots")}

    with daemon.client("ns1") as c:
        stub = snapshots_pb2_grpc.SnapshotsStub(c.channel)
        for key in ("a", "b", "c"):
            stub.Prepare(snapshots_pb2.PrepareSnapshotRequest(snapshotter="native", key=key), metadata=c._metadata)
        before = dirs()
        (b_dir,) = [p for k, p in before.items() if k.endswith("/b")]
        busy = os.path.join(b_dir, "busy")
        os.mkdir(busy)
        mount("-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", busy)  # rmdir of busy fails with EBUSY
        try:
            collect_now(c)  # nothing holds a, b or c
            assert dirs() == {}
            assert [os.path.exists(p) for p in sorted(before.values())] == [p == b_dir for p in sorted(before.values())]
        finally:
            umount(busy)
        # the next cleanup of native (here: after one more snapshot goes) takes what was left
        stub.Prepare(snapshots_pb2.PrepareSnapshotRequest(snapshotter="native", key="d"), metadata=c._metadata)
        collect_now(c)
        assert os.listdir(os.path.join(native, "snapshots")) == []
