"""The Diff service end to end, driven by the real ctr: `ctr snapshots diff`
on overlayfs snapshots filled through the mounts ctr prints, against
pycontainerd and against a real containerd doing the same steps; the two
layers must carry the same entries."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile

import pytest

from pycontainerd.client.client import Client
from pycontainerd.client.diff import snapshots_diff

from e2e_support import run_pyctr

pytestmark = pytest.mark.e2e

SN = ("snapshots", "--snapshotter", "overlayfs")
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
T = 1_600_000_000


def _mount_printed(out: bytes) -> None:
    line = out.decode().strip()
    assert line.startswith("mount -t "), line
    subprocess.run(line.split(), check=True)


def _umount(path: str) -> None:
    subprocess.run(["umount", path], check=False, capture_output=True)


def _write(root: str, rel: str, data: bytes, mode: int = 0o644) -> None:
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    os.chmod(p, mode)
    os.utime(p, (T, T))


def _fill(run, mnt: str) -> tuple[bytes, bytes]:
    """Two layers' worth of changes through ctr's printed mounts; returns
    `ctr snapshots diff` of the second (gzip, kept) and the same as plain tar."""
    run(*SN, "prepare", "k1")
    _mount_printed(run(*SN, "mounts", mnt, "k1").stdout)
    try:
        _write(mnt, "etc/hostname", b"box\n")
        _write(mnt, "etc/gone", b"x")
        _write(mnt, "opt/a", b"a")
        _write(mnt, "opt/b", b"b")
        _write(mnt, "usr/bin/sh", b"#!/bin/true\n", 0o4755)
        os.symlink("usr/bin", os.path.join(mnt, "bin"))
        os.link(os.path.join(mnt, "usr/bin/sh"), os.path.join(mnt, "usr/bin/sh2"))
    finally:
        _umount(mnt)
    run(*SN, "commit", "c1", "k1")
    run(*SN, "prepare", "k2", "c1")
    _mount_printed(run(*SN, "mounts", mnt, "k2").stdout)
    try:
        os.unlink(os.path.join(mnt, "etc/gone"))
        subprocess.run(["rm", "-rf", os.path.join(mnt, "opt")], check=True)
        _write(mnt, "opt/c", b"c")
        _write(mnt, "etc/new", b"new", 0o600)
        os.chown(os.path.join(mnt, "etc/new"), 1000, 1000)
        os.mkfifo(os.path.join(mnt, "fifo"), 0o640)
        os.utime(os.path.join(mnt, "fifo"), (T, T), follow_symlinks=False)
        _write(mnt, "usr/bin/sh", b"#!/bin/false\n", 0o4755)  # copied up: breaks the hardlink
    finally:
        _umount(mnt)
    gz = run(*SN, "diff", "--keep", "k2").stdout
    plain = run(*SN, "diff", "--media-type", OCI_TAR, "k2").stdout
    return gz, plain


def _entries(tar_bytes: bytes) -> list[tuple]:
    """What a layer says, minus what legitimately differs between two runs
    (directory and whiteout times)."""
    out = []
    for m in tarfile.open(fileobj=io.BytesIO(tar_bytes)):
        whiteout = os.path.basename(m.name).startswith(".wh.")
        rec = (m.name, m.type, m.mode, m.uid, m.gid, m.linkname, m.size, m.uname, m.gname,
               None if (m.isdir() or whiteout) else int(m.mtime))
        out.append(rec)
    return out


def _run_both(daemon, containerd, ctr):
    results = {}
    for name, address in (("pycontainerd", daemon().address), ("containerd", containerd.address)):
        mnt = os.path.join(os.path.dirname(address), f"mnt-{name}")
        os.makedirs(mnt, exist_ok=True)
        results[name] = (_fill(lambda *a: ctr(address, *a), mnt), address)
    return results


@pytest.mark.containerd
def test_ctr_snapshots_diff_matches_containerd(daemon, containerd, ctr):
    results = _run_both(daemon, containerd, ctr)
    (ours_gz, ours_plain), our_address = results["pycontainerd"]
    (theirs_gz, theirs_plain), _ = results["containerd"]

    ours = gzip.decompress(ours_gz)
    assert _entries(ours) == _entries(gzip.decompress(theirs_gz))
    assert _entries(ours_plain) == _entries(theirs_plain) == _entries(ours)

    names = [e[0] for e in _entries(ours)]
    assert "etc/.wh.gone" in names and "opt/.wh.a" in names and "opt/c" in names and "fifo" in names

    # two snapshots named: the same layer; and the client library's flow
    # (what pyctr's `snapshots diff` runs) gives the same layer as ctr
    both = gzip.decompress(ctr(our_address, *SN, "diff", "c1", "k2").stdout)
    assert _entries(both) == _entries(ours)
    with Client(address=our_address, namespace="default") as c:
        lib = gzip.decompress(b"".join(snapshots_diff(c, "overlayfs", "k2")))
        lib_two = b"".join(snapshots_diff(c, "overlayfs", "c1", "k2", media_type=OCI_TAR))
    assert _entries(lib) == _entries(lib_two) == _entries(ours)
    cli = run_pyctr(our_address, *SN, "diff", "c1", "k2").stdout  # pyctr's command on that flow
    assert _entries(gzip.decompress(cli)) == _entries(ours)
    # no temporary view or lease is left behind
    assert ctr(our_address, *SN, "ls").stdout.decode().count("View") == 0
    assert ctr(our_address, "leases", "ls", "-q").stdout.strip() == b""

    # --keep: the layer stays in the content store with its diff ID label
    dgst = "sha256:" + hashlib.sha256(ours_gz).hexdigest()
    listing = ctr(our_address, "content", "ls").stdout.decode()
    row = next(line for line in listing.splitlines() if line.startswith(dgst))
    assert "containerd.io/uncompressed=sha256:" + hashlib.sha256(ours).hexdigest() in row
    assert "containerd.io/gc.root=" in row


def test_ctr_snapshots_diff_errors(daemon, ctr):
    a = daemon().address
    r = ctr(a, *SN, "diff", "nope", check=False)
    assert r.returncode != 0 and b"not found" in r.stderr
    ctr(a, *SN, "prepare", "e1")
    r = ctr(a, *SN, "diff", "--media-type", "application/x-nope", "e1", check=False)
    assert r.returncode != 0 and b"unsupported diff media type" in r.stderr
