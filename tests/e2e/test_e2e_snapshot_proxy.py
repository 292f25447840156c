"""Proxy snapshotters both ways, for real: pycontainerd using a snapshotter
served over a socket by a second process (`pycontainerd snapshotter
serve`), and a real containerd using that same standalone Python
snapshotter through its [proxy_plugins]."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from e2e_support import CONTAINERD, PYCONTAINERD, DaemonProcess, clean_env, short_dir

pytestmark = pytest.mark.e2e


@pytest.fixture
def standalone():
    """`pycontainerd snapshotter serve --snapshotter overlayfs`, stopped by PID."""
    d = short_dir("pcd-sn-")
    sock = os.path.join(d, "sn.sock")
    proc = subprocess.Popen(
        [PYCONTAINERD, "snapshotter", "serve", "--snapshotter", "overlayfs", "--address", sock,
         "--root", os.path.join(d, "root")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "standalone snapshotter did not start"
            time.sleep(0.05)
        yield sock, os.path.join(d, "root")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(15)
        assert proc.returncode == 0
        assert not os.path.exists(sock)
        shutil.rmtree(d, ignore_errors=True)


def _mount_and_check(ctr_fn, address, target, *sn):
    """prepare → mount what ctr prints → write → commit → child sees it."""
    os.makedirs(target, exist_ok=True)
    ctr_fn(address, *sn, "prepare", "k1")
    line = ctr_fn(address, *sn, "mounts", target, "k1").stdout.decode().strip()
    subprocess.run(line.split(), check=True)
    try:
        with open(os.path.join(target, "f"), "w") as f:
            f.write("via proxy")
    finally:
        subprocess.run(["umount", target], check=True)
    ctr_fn(address, *sn, "commit", "c1", "k1")
    ctr_fn(address, *sn, "prepare", "k2", "c1")
    line = ctr_fn(address, *sn, "mounts", target, "k2").stdout.decode().strip()
    subprocess.run(line.split(), check=True)
    try:
        assert open(os.path.join(target, "f")).read() == "via proxy"
    finally:
        subprocess.run(["umount", target], check=True)


def test_pycontainerd_uses_a_proxy_snapshotter(daemon, ctr, pyctr, standalone):
    sock, root = standalone
    d = daemon(config={"proxy_plugins": {"remote": {"type": "snapshot", "address": sock}},
                       "disabled_plugins": ["io.containerd.gc.v1.scheduler"]})
    rows = ctr(d.address, "plugins", "ls", "id==remote").stdout.decode()
    assert "io.containerd.snapshotter.v1" in rows and "ok" in rows
    sn = ("snapshots", "--snapshotter", "remote")
    _mount_and_check(ctr, d.address, os.path.join(d.dir, "mnt"), *sn)
    out = ctr(d.address, *sn, "ls").stdout
    assert out == pyctr(d.address, *sn, "ls").stdout
    assert [line.split() for line in out.decode().splitlines()[1:]] == [["c1", "Committed"], ["k2", "c1", "Active"]]
    # the layers live in the standalone snapshotter's root, under namespaced backend keys
    assert len(os.listdir(os.path.join(root, "snapshots"))) == 2
    r = ctr(d.address, *sn, "rm", "c1", check=False)
    assert b"cannot remove snapshot with child" in r.stderr
    ctr(d.address, *sn, "rm", "k2")
    ctr(d.address, *sn, "rm", "c1")
    assert os.listdir(os.path.join(root, "snapshots")) == []


def test_containerd_uses_a_pycontainerd_snapshotter(ctr, standalone):
    if not os.access(CONTAINERD, os.X_OK):
        pytest.skip(f"{CONTAINERD} is not installed")
    sock, root = standalone
    d = short_dir("ctd-sn-")
    cfg = {
        "version": 2, "root": os.path.join(d, "root"), "state": os.path.join(d, "state"),
        "disabled_plugins": ["io.containerd.grpc.v1.cri"],
        "grpc": {"address": os.path.join(d, "c.sock")},
        "ttrpc": {"address": os.path.join(d, "c.sock.ttrpc")},
        "plugins": {"io.containerd.internal.v1.opt": {"path": os.path.join(d, "opt")}},
        "proxy_plugins": {"pysn": {"type": "snapshot", "address": sock}},
    }
    proc = DaemonProcess("containerd", [CONTAINERD], d, cfg, {})
    try:
        proc.wait_ready()
        sn = ("snapshots", "--snapshotter", "pysn")
        _mount_and_check(ctr, proc.address, os.path.join(d, "mnt"), *sn)
        rows = [line.split() for line in ctr(proc.address, *sn, "ls").stdout.decode().splitlines()[1:]]
        assert rows == [["c1", "Committed"], ["k2", "c1", "Active"]]
        assert len(os.listdir(os.path.join(root, "snapshots"))) == 2
        ctr(proc.address, *sn, "rm", "k2")
        info = ctr(proc.address, *sn, "info", "c1").stdout
        assert b'"Kind": "Committed"' in info
    finally:
        if proc.running:
            proc.stop()
        shutil.rmtree(d, ignore_errors=True)
