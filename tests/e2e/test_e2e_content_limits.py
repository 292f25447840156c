"""A client cannot exhaust the daemon's descriptors with open writers: past
a cap derived from RLIMIT_NOFILE a new writer is refused with Unavailable
(which containerd's clients retry), the daemon keeps serving, and the
writers of a client that goes away (SIGKILL) are released, their ingests
left resumable. Against a real daemon started under `prlimit`."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import grpc
import pytest

from e2e_support import PYCONTAINERD, REPO, DaemonFactory, DaemonProcess, clean_env
from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc
from pycontainerd.plugins.content.local import WRITER_FD_RESERVE

pytestmark = pytest.mark.e2e

NOFILE = 200
CAP = (NOFILE - WRITER_FD_RESERVE) // 2
MD = [("containerd-namespace", "default")]

# Opens `count` writers (refs hold-0..), each with a few bytes written, then
# prints "ready" and holds them until killed.
HOLDER = textwrap.dedent("""
    import asyncio, sys
    import grpc
    from pycontainerd.api.services.content.v1 import content_pb2 as pb
    from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc

    async def hold(stub, i, opened):
        async def requests():
            yield pb.WriteContentRequest(action=pb.STAT, ref=f"hold-{i}", total=100)
            yield pb.WriteContentRequest(action=pb.WRITE, ref=f"hold-{i}", offset=0, data=b"x" * 10)
            await asyncio.Event().wait()
        call = stub.Write(requests(), metadata=[("containerd-namespace", "default")])
        async for answer in call:
            if answer.offset == 10:
                opened.release()

    async def main(address, count):
        async with grpc.aio.insecure_channel("unix:" + address) as ch:
            stub = pb_grpc.ContentStub(ch)
            opened = asyncio.Semaphore(0)
            tasks = [asyncio.ensure_future(hold(stub, i, opened)) for i in range(count)]
            for _ in range(count):
                await opened.acquire()
            print("ready", flush=True)
            await asyncio.gather(*tasks)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


def _limited_daemon(daemon: DaemonFactory) -> DaemonProcess:
    """pycontainerd exec'd by prlimit with RLIMIT_NOFILE = NOFILE (same pid)."""
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    d = daemon.tempdir()
    cfg = {"version": 2, "root": os.path.join(d, "root"), "state": os.path.join(d, "state"),
           "grpc": {"address": os.path.join(d, "pcd.sock")}}
    proc = DaemonProcess("pycontainerd", ["prlimit", f"--nofile={NOFILE}:{NOFILE}", PYCONTAINERD], d, cfg, {})
    daemon.daemons.append(proc)
    return proc.wait_ready()


def _write(stub, ref: str, data: bytes) -> grpc.RpcError | None:
    try:
        list(stub.Write(iter([pb.WriteContentRequest(action=pb.COMMIT, ref=ref, data=data,
                                                     expected="sha256:" + hashlib.sha256(data).hexdigest())]),
                        metadata=MD, timeout=10))
    except grpc.RpcError as exc:
        return exc
    return None


def test_open_writers_are_capped_and_released_when_the_client_goes_away(daemon):
    d = _limited_daemon(daemon)
    with open(f"/proc/{d.pid}/limits") as f:
        assert any(line.startswith("Max open files") and f" {NOFILE} " in line for line in f)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, d.address, str(CAP)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=clean_env(), cwd=REPO)
    try:
        assert holder.stdout.readline() == b"ready\n", holder.stderr.read().decode()
        with grpc.insecure_channel("unix:" + d.address) as ch:
            stub = pb_grpc.ContentStub(ch)
            err = _write(stub, "one-too-many", b"refused")
            assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
            assert err.details() == f"too many open writers ({CAP}), try again later: unavailable"
            # the daemon still serves everything else, and the refused ingest left nothing
            statuses = stub.ListStatuses(pb.ListStatusesRequest(), metadata=MD, timeout=10).statuses
            assert sorted(s.ref for s in statuses) == sorted(f"hold-{i}" for i in range(CAP))
            assert all(s.offset == 10 for s in statuses)
            os.kill(holder.pid, signal.SIGKILL)  # the client goes away, writers open
            holder.wait(10)
            deadline = time.monotonic() + 20
            while (err := _write(stub, "after", b"accepted")) is not None:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                assert time.monotonic() < deadline, "the writers of a dead client were not released"
                time.sleep(0.1)
            # their ingests stay, resumable: the descriptor went, not the data
            statuses = stub.ListStatuses(pb.ListStatusesRequest(), metadata=MD, timeout=10).statuses
            assert len(statuses) == CAP and all(s.offset == 10 for s in statuses)
            # and the cap is reusable up to the full count again
            for i in range(3):
                assert _write(stub, f"again-{i}", os.urandom(1000)) is None
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(10)
        holder.stdout.close()
        holder.stderr.close()
