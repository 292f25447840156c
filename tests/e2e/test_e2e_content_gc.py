"""Storage leaves nothing behind, and loses nothing of the user's: a real
daemon killed with SIGKILL in the middle of a write, restarted on the same
root, collects the files no record names (a blob moved into place but never
recorded, an ingest directory no namespace knows) while keeping every blob
some namespace holds and every ingest that is still someone's (resumable, as
containerd keeps them). An ingest whose stream failed goes once nothing
holds it any more: its lease expired, or (without a lease) its day is up."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from e2e_support import REPO
from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.api.services.leases.v1 import leases_pb2 as lpb
from pycontainerd.api.services.leases.v1 import leases_pb2_grpc as lpb_grpc

pytestmark = pytest.mark.e2e

CONTENT_ROOT = "io.containerd.content.v1.content"
MiB = 1 << 20


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _md(ns: str, lease: str = "") -> list[tuple[str, str]]:
    md = [("containerd-namespace", ns)]
    if lease:
        md.append(("containerd-lease", lease))
    return md


def _blob(d, data: bytes) -> str:
    return os.path.join(d.root, CONTENT_ROOT, "blobs", "sha256", hashlib.sha256(data).hexdigest())


def _ingests(d) -> list[str]:
    return sorted(os.listdir(os.path.join(d.root, CONTENT_ROOT, "ingest")))


def _wait_for(cond, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _lease(ch, ns: str, lease_id: str, labels: dict[str, str] | None = None) -> None:
    lpb_grpc.LeasesStub(ch).Create(lpb.CreateRequest(id=lease_id, labels=labels or {}), metadata=_md(ns), timeout=10)


def _collect(ch) -> None:
    """Run a collection and wait for it: a synchronous lease delete."""
    _lease(ch, "default", "poke")
    lpb_grpc.LeasesStub(ch).Delete(lpb.DeleteRequest(id="poke", sync=True), metadata=_md("default"), timeout=20)


def _ingest(ch, ns: str, ref: str, data: bytes, lease: str = "") -> None:
    list(pb_grpc.ContentStub(ch).Write(iter([
        pb.WriteContentRequest(action=pb.COMMIT, ref=ref, data=data, total=len(data), expected=_digest(data)),
    ]), metadata=_md(ns, lease), timeout=10))


class HangingWrite:
    """A Write stream that sends `data` and then stays open, as a client
    stuck (or a daemon killed) mid-transfer; `release()` ends it."""

    def __init__(self, ch, ns: str, ref: str, data: bytes, total: int, lease: str = ""):
        self._done = threading.Event()
        self.error: grpc.RpcError | None = None

        def requests():
            yield pb.WriteContentRequest(action=pb.STAT, ref=ref, total=total)
            for off in range(0, len(data), MiB):
                yield pb.WriteContentRequest(action=pb.WRITE, ref=ref, offset=off, data=data[off:off + MiB])
            self._done.wait(60)

        def run():
            try:
                for _ in pb_grpc.ContentStub(ch).Write(requests(), metadata=_md(ns, lease), timeout=60):
                    pass
            except grpc.RpcError as exc:
                self.error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._done.set()
        self._thread.join(30)


def _offset(ch, ns: str, ref: str) -> int:
    try:
        return pb_grpc.ContentStub(ch).Status(pb.StatusRequest(ref=ref), metadata=_md(ns), timeout=10).status.offset
    except grpc.RpcError:
        return -1


def test_sigkill_mid_write_orphans_collected_users_data_kept(daemon):
    keep_a, keep_b, held_by_b = os.urandom(1000), os.urandom(2000), os.urandom(3000)
    partial = os.urandom(3 * MiB)
    d = daemon()
    with grpc.insecure_channel("unix:" + d.address) as ch:
        _lease(ch, "default", "keep")
        _lease(ch, "b", "keep")
        _ingest(ch, "default", "a", keep_a, lease="keep")
        _ingest(ch, "default", "b", keep_b, lease="keep")
        _ingest(ch, "b", "held", held_by_b, lease="keep")
        # one blob held only by namespace b: gone from default, kept on disk
        pb_grpc.ContentStub(ch).Delete(pb.DeleteContentRequest(digest=_digest(keep_b)), metadata=_md("default"),
                                       timeout=10)
        _ingest(ch, "b", "kb", keep_b, lease="keep")
        hanging = HangingWrite(ch, "default", "in-flight", partial[: 2 * MiB], len(partial), lease="keep")
        _wait_for(lambda: _offset(ch, "default", "in-flight") == 2 * MiB, "the write did not arrive")
        d.kill()  # SIGKILL, mid-stream
        hanging.release()
    assert d.returncode == -signal.SIGKILL

    # what a kill at a worse moment leaves: a blob moved into place but never
    # recorded, and an ingest directory no record names
    orphan = os.urandom(4000)
    with open(_blob(d, orphan), "wb") as f:
        f.write(orphan)
    stray = os.path.join(d.root, CONTENT_ROOT, "ingest", hashlib.sha256(b"default/stray").hexdigest())
    os.mkdir(stray)
    for name, text in (("ref", "default/stray"), ("startedat", "2026-01-01T00:00:00Z"),
                       ("updatedat", "2026-01-01T00:00:00Z"), ("data", "half")):
        with open(os.path.join(stray, name), "w") as f:
            f.write(text)
    before = _ingests(d)
    assert len(before) == 2

    d2 = daemon(config={"root": d.root, "state": d.state})
    _wait_for(lambda: not os.path.exists(_blob(d2, orphan)), "the unrecorded blob was not collected")
    _wait_for(lambda: not os.path.exists(stray), "the unknown ingest was not aborted")
    with grpc.insecure_channel("unix:" + d2.address) as ch:
        stub = pb_grpc.ContentStub(ch)
        for ns, data in (("default", keep_a), ("b", keep_b), ("b", held_by_b)):
            got = b"".join(r.data for r in stub.Read(pb.ReadContentRequest(digest=_digest(data)),
                                                     metadata=_md(ns), timeout=10))
            assert got == data
        # the interrupted ingest is still someone's: it resumes where it stopped
        assert _offset(ch, "default", "in-flight") == 2 * MiB
        answers = list(stub.Write(iter([
            pb.WriteContentRequest(action=pb.STAT, ref="in-flight"),
            pb.WriteContentRequest(action=pb.COMMIT, ref="in-flight", offset=2 * MiB, data=partial[2 * MiB:],
                                   total=len(partial), expected=_digest(partial)),
        ]), metadata=_md("default", "keep"), timeout=10))
        assert answers[0].offset == 2 * MiB and answers[-1].digest == _digest(partial)
    assert _ingests(d2) == []
    with open(_blob(d2, partial), "rb") as f:
        assert f.read() == partial


def test_failed_stream_ingest_collected_when_its_lease_expires(daemon):
    d = daemon()
    expire = (datetime.now(timezone.utc) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with grpc.insecure_channel("unix:" + d.address) as ch:
        _lease(ch, "default", "short", {"containerd.io/gc.expire": expire})
        hanging = HangingWrite(ch, "default", "broken", os.urandom(MiB), 4 * MiB, lease="short")
        _wait_for(lambda: _offset(ch, "default", "broken") == MiB, "the write did not arrive")
        hanging.release()  # the client goes away without committing
        assert len(_ingests(d)) == 1
        leases = lpb_grpc.LeasesStub(ch)
        _collect(ch)  # a collection while the lease lives keeps the ingest
        assert _offset(ch, "default", "broken") == MiB
        # the clock's second is past the expiry's: the lease has expired
        _wait_for(lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") > expire, "clock", 10)
        _collect(ch)
        _wait_for(lambda: _ingests(d) == [], "the expired lease's ingest is still on disk")
        assert _offset(ch, "default", "broken") == -1
        names = {x.id for x in leases.List(lpb.ListRequest(), metadata=_md("default"), timeout=10).leases}
        assert "short" not in names


def test_leaseless_failed_ingest_kept_for_a_day_then_collected(daemon):
    """Without a lease an abandoned ingest waits 24 h for its writer (as in
    containerd); here the day passes by moving the recorded deadline back
    while the daemon is stopped."""
    d = daemon()
    with grpc.insecure_channel("unix:" + d.address) as ch:
        hanging = HangingWrite(ch, "default", "no-lease", os.urandom(MiB), 2 * MiB)
        _wait_for(lambda: _offset(ch, "default", "no-lease") == MiB, "the write did not arrive")
        hanging.release()
    d.stop()
    d2 = daemon(config={"root": d.root, "state": d.state})
    with grpc.insecure_channel("unix:" + d2.address) as ch:
        _collect(ch)
        assert _offset(ch, "default", "no-lease") == MiB  # still resumable
    d2.stop()
    db = os.path.join(d.root, "io.containerd.metadata.v1.sqlite", "meta.db")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE ingests SET expires_at = ? WHERE ref = 'no-lease'", (time.time_ns() - 1,))
    d3 = daemon(config={"root": d.root, "state": d.state})
    _wait_for(lambda: _ingests(d3) == [], "the expired ingest is still on disk")
    with grpc.insecure_channel("unix:" + d3.address) as ch:
        assert _offset(ch, "default", "no-lease") == -1


def test_writer_that_cannot_open_its_data_file_leaves_no_directory(tmp_path):
    """EMFILE while a writer opens: the half-made ingest directory goes."""
    script = textwrap.dedent("""
        import asyncio, os, resource, sys
        from pycontainerd.plugins.content.local import LocalStore

        async def main(root):
            store = LocalStore(root)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            used = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (used + 8, hard))
            writers, failed = [], 0
            for i in range(32):
                try:
                    writers.append(await store.writer(f"r{i}"))
                except Exception as exc:  # "failed to start the ingest: too many open files"
                    assert "too many open files" in str(exc), exc
                    failed += 1
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            ingests = os.listdir(os.path.join(root, "ingest"))
            print(len(writers), failed, len(ingests))

        asyncio.run(main(sys.argv[1]))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    opened, failed, dirs = map(int, out.stdout.split())
    assert failed > 0 and opened > 0
    assert dirs == opened  # one directory per open writer, none for the failures
