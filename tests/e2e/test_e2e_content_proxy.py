"""Proxy content stores both ways, for real: pycontainerd storing into a
content store served over a socket by a second process (`pycontainerd
content serve`), and a real containerd storing into that same standalone
Python store through its [proxy_plugins]."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time

import grpc
import pytest

from e2e_support import CONTAINERD, CTR, ContentServer, DaemonProcess, clean_env, short_dir
from pyctr_scenarios import mask_age
from pycontainerd.api.services.content.v1 import content_pb2 as pb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

NO_LOCAL_CONTENT = "io.containerd.content.v1.content"


@pytest.fixture
def content_server():
    """`pycontainerd content serve`, stopped by PID (exit 0, socket removed)."""
    d = short_dir("pcd-cs-")
    server = ContentServer(d).start()
    try:
        yield server.sock, server.root
    finally:
        server.stop()
        assert not os.path.exists(server.sock)
        shutil.rmtree(d, ignore_errors=True)


def _blob(root: str, data: bytes) -> str:
    return os.path.join(root, "blobs", "sha256", hashlib.sha256(data).hexdigest())


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _wait_for(cond, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _ctr_argv(address: str) -> list[str]:
    return [CTR, "--address", address]


def _remote_ingest(sock: str, ref: str, data: bytes) -> None:
    """Leave an ingest on the server that no daemon knows of (a writer that
    went away without committing)."""
    with grpc.insecure_channel("unix:" + sock) as ch:
        reqs = iter([pb.WriteContentRequest(action=pb.STAT, ref=ref),
                     pb.WriteContentRequest(action=pb.WRITE, offset=0, data=data)])
        answers = list(pb_grpc.ContentStub(ch).Write(reqs, timeout=10))
        assert answers[-1].offset == len(data)


def test_pycontainerd_stores_content_in_a_proxy_store(daemon, ctr, pyctr, content_server):
    sock, root = content_server
    d = daemon(config={"disabled_plugins": [NO_LOCAL_CONTENT, "io.containerd.gc.v1.scheduler"],
                       "proxy_plugins": {"remote": {"type": "content", "address": sock}}})
    rows = [line.split() for line in ctr(d.address, "plugins", "ls").stdout.decode().splitlines()]
    assert ["io.containerd.content.v1", "remote", "-", "ok"] in rows
    assert not any(r[:2] == ["io.containerd.content.v1", "content"] for r in rows)
    detail = ctr(d.address, "plugins", "ls", "-d", "id==remote").stdout.decode()
    assert "Type:        io.containerd.content.v1" in detail
    assert f"address      {sock}" in detail

    small = b"through the proxy store\n"
    big = os.urandom(3 << 20)  # several Write and Read messages
    ctr(d.address, "content", "ingest", "r-small", input=small)
    ctr(d.address, "content", "ingest", "r-big", input=big)
    # the bytes live in the server's root, nowhere under the daemon's
    for data in (small, big):
        with open(_blob(root, data), "rb") as f:
            assert f.read() == data
    assert not os.path.exists(os.path.join(d.root, NO_LOCAL_CONTENT))
    out = ctr(d.address, "content", "ls").stdout
    assert mask_age(out) == mask_age(pyctr(d.address, "content", "ls").stdout)
    listed = {line.split()[0]: line.split()[1] for line in out.decode().splitlines()[1:]}
    assert listed == {_digest(small): "24B", _digest(big): "3.146MB"}
    assert ctr(d.address, "content", "get", _digest(small)).stdout == small
    assert ctr(d.address, "content", "get", _digest(big)).stdout == big
    # labels and namespaces are the daemon's, not the raw store's
    ctr(d.address, "content", "label", _digest(small), "k=v")
    assert "k=v" in ctr(d.address, "content", "ls").stdout.decode()
    assert ctr(d.address, "-n", "other", "content", "ls", "-q").stdout == b""
    r = ctr(d.address, "-n", "other", "content", "get", _digest(small), check=False)
    assert r.returncode != 0 and b"not found" in r.stderr
    # the same bytes in a second namespace: nothing new on the server
    path = os.path.join(d.dir, "small")
    with open(path, "wb") as f:
        f.write(small)
    with open(path, "rb") as f:  # told the blob is all there, ctr seeks its input to the end
        ctr(d.address, "-n", "other", "content", "ingest", "--expected-digest", _digest(small),
            "--expected-size", str(len(small)), "r-small", stdin=f)
    assert ctr(d.address, "-n", "other", "content", "ls", "-q").stdout.decode().split() == [_digest(small)]

    # an interrupted ingest is an active one on the server, then resumes
    proc = subprocess.Popen([*_ctr_argv(d.address), "content", "ingest", "r-part"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())
    proc.stdin.write(big[: 2 << 20])
    proc.stdin.flush()
    _wait_for(lambda: b"r-part" in ctr(d.address, "content", "active").stdout, "ingest not active")
    proc.kill()
    proc.wait()
    assert len(os.listdir(os.path.join(root, "ingest"))) == 1
    with open(os.path.join(d.dir, "big"), "wb") as f:
        f.write(big)
    with open(os.path.join(d.dir, "big"), "rb") as f:  # ctr seeks its input to the ingest's offset
        ctr(d.address, "content", "ingest", "r-part", stdin=f)
    assert ctr(d.address, "content", "active").stdout.decode().splitlines()[1:] == []
    assert os.listdir(os.path.join(root, "ingest")) == []

    ctr(d.address, "content", "rm", _digest(big))
    assert not os.path.exists(_blob(root, big))
    ctr(d.address, "content", "rm", _digest(small))
    assert os.path.exists(_blob(root, small))  # namespace "other" still has it
    ctr(d.address, "-n", "other", "content", "rm", _digest(small))
    assert not os.path.exists(_blob(root, small))
    assert ctr(d.address, "content", "ls", "-q").stdout == b""


def test_gc_cleans_the_proxy_store(daemon, ctr, content_server):
    """GC through the proxy: what no namespace holds goes from the remote
    (walked with List), and an ingest no namespace knows is aborted (found
    with ListStatuses, containerd's fallback for a store without a ref walk)."""
    sock, root = content_server
    _remote_ingest(sock, "stray", b"half a blob")
    d = daemon(config={
        "disabled_plugins": [NO_LOCAL_CONTENT],
        "proxy_plugins": {"remote": {"type": "content", "address": sock}},
        "plugins": {"io.containerd.gc.v1.scheduler": {"startup_delay": "1h", "deletion_threshold": 1}},
    })
    kept, dropped = b"no lease, no image: garbage\n", b"removed by hand\n"
    # `ctr content ingest` takes no lease: nothing refers to what it wrote,
    # and the first collection takes it. None runs at startup (it would race
    # with the ingests); the deletion below triggers one.
    ctr(d.address, "content", "ingest", "r1", input=kept)
    ctr(d.address, "content", "ingest", "r2", input=dropped)
    assert os.path.exists(_blob(root, kept))
    ctr(d.address, "content", "rm", _digest(dropped))
    _wait_for(lambda: not os.path.exists(_blob(root, kept)), "GC did not remove the unreferenced blob")
    _wait_for(lambda: os.listdir(os.path.join(root, "ingest")) == [], "GC did not abort the stray ingest")
    assert ctr(d.address, "content", "ls", "-q").stdout == b""


def test_containerd_stores_content_in_a_pycontainerd_store(ctr, content_server):
    if not os.access(CONTAINERD, os.X_OK):
        pytest.skip(f"{CONTAINERD} is not installed")
    sock, root = content_server
    d = short_dir("ctd-cs-")
    cfg = {
        "version": 2, "root": os.path.join(d, "root"), "state": os.path.join(d, "state"),
        "disabled_plugins": [NO_LOCAL_CONTENT, "io.containerd.grpc.v1.cri"],
        "grpc": {"address": os.path.join(d, "c.sock")},
        "ttrpc": {"address": os.path.join(d, "c.sock.ttrpc")},
        "plugins": {"io.containerd.internal.v1.opt": {"path": os.path.join(d, "opt")},
                    # `ctr content ingest` takes no lease, so what it writes is
                    # garbage at once: no collection at startup to race with,
                    # and one as soon as something is deleted
                    "io.containerd.gc.v1.scheduler": {"startup_delay": "1h", "deletion_threshold": 1}},
        "proxy_plugins": {"pycontent": {"type": "content", "address": sock}},
    }
    proc = DaemonProcess("containerd", [CONTAINERD], d, cfg, {})
    try:
        proc.wait_ready()
        rows = [line.split() for line in ctr(proc.address, "plugins", "ls").stdout.decode().splitlines()]
        assert ["io.containerd.content.v1", "pycontent", "-", "ok"] in rows
        small = b"containerd writes into python\n"
        big = os.urandom(3 << 20)
        ctr(proc.address, "content", "ingest", "r-small", input=small)
        ctr(proc.address, "content", "ingest", "r-big", input=big)
        assert ctr(proc.address, "content", "get", _digest(small)).stdout == small
        assert ctr(proc.address, "content", "get", _digest(big)).stdout == big
        for data in (small, big):
            with open(_blob(root, data), "rb") as f:
                assert f.read() == data
        assert not os.path.exists(os.path.join(d, "root", NO_LOCAL_CONTENT, "blobs"))
        # containerd's delete, then its GC, reach the blobs on our server
        ctr(proc.address, "content", "rm", _digest(small))
        _wait_for(lambda: not os.path.exists(_blob(root, small)), "containerd did not delete through the proxy")
        _wait_for(lambda: not os.path.exists(_blob(root, big)), "containerd's GC did not clean the proxy store")
    finally:
        if proc.running:
            proc.stop()
        shutil.rmtree(d, ignore_errors=True)
