"""Snapshot recovery after a crash, on the real daemon with the real ctr.

A failpoint (core/failpoint.py, switched on by PYCONTAINERD_FAILPOINTS)
stops the daemon exactly between a snapshotter's change and the metadata
transaction that records it. The test waits for the daemon to report the
point, checks on disk that the two stores now disagree in the intended way,
SIGKILLs the daemon by PID, starts it again on the same root, and checks
through ctr what start-up recovery made of it:

- commit: the backend holds the committed snapshot, the metadata still the
  active one. The commit is rolled forward (the name exists, with its
  parent and its content) and the active record, whose backend snapshot is
  gone, is dropped with its labels and its lease resources.
- prepare: the backend holds a snapshot no record names. It is removed,
  directory and all.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import grpc
import pytest

from e2e_support import CTR, START_TIMEOUT

from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

# the lease service needs the collector; keep it from running in these
# tests (ctr's gc.root label is metadata, so a rolled-forward commit has
# none, and nothing here should move under the assertions)
NO_GC = {"plugins": {"io.containerd.gc.v1.scheduler": {"startup_delay": "1h"}}}
MD = (("containerd-namespace", "default"),)
SNAPSHOTTERS = ("overlayfs", "native")


def _failpoint_env(point: str) -> dict[str, str]:
    return {"PYCONTAINERD_FAILPOINTS": f"{point}=pause"}


def _same_root(d) -> dict:
    return {**NO_GC, "root": d.root, "state": d.state, "grpc": {"address": d.address}}


def _wait_for_failpoint(d, point: str) -> None:
    """Until the daemon logs that it stopped at `point` (bounded, so a
    daemon that never gets there fails the test instead of hanging it)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        log = d.log()
        if "failpoint reached" in log and point in log:
            return
        assert d.running, f"daemon exited before failpoint {point}:\n{log}"
        time.sleep(0.05)
    raise AssertionError(f"failpoint {point} not reached:\n{d.log()}")


def _metadata_keys(d, sn: str) -> dict[str, str]:
    """{key: backend key} of the default namespace, read from meta.db."""
    with sqlite3.connect(os.path.join(d.root, "io.containerd.metadata.v1.sqlite", "meta.db")) as db:
        return dict(db.execute("SELECT key, backend_key FROM snapshots WHERE snapshotter = ? AND namespace = 'default'",
                               (sn,)))


def _backend(d, sn: str) -> dict[str, tuple[str, int]]:
    """{backend key: (kind, id)} from the snapshotter's own metadata.db."""
    with sqlite3.connect(os.path.join(d.root, f"io.containerd.snapshotter.v1.{sn}", "metadata.db")) as db:
        return {k: (kind, sid) for (k, kind, sid) in db.execute("SELECT key, kind, id FROM snapshots")}


def _snapshot_dirs(d, sn: str) -> set[str]:
    return set(os.listdir(os.path.join(d.root, f"io.containerd.snapshotter.v1.{sn}", "snapshots")))


def _label_rows(d, sn: str, key: str) -> list[tuple[str, str]]:
    with sqlite3.connect(os.path.join(d.root, "io.containerd.metadata.v1.sqlite", "meta.db")) as db:
        return db.execute("SELECT key, value FROM labels WHERE kind = 'snapshot' AND object = ?",
                          (f"{sn}/{key}",)).fetchall()


def _rows(ctr, a: str, sn: str) -> list[list[str]]:
    out = ctr(a, "snapshots", "--snapshotter", sn, "ls").stdout.decode().splitlines()
    assert out[0].split() == ["KEY", "PARENT", "KIND"]
    return sorted(line.split() for line in out[1:] if line)


def _mount(ctr, a: str, sn: str, key: str, target: str) -> None:
    line = ctr(a, "snapshots", "--snapshotter", sn, "mounts", target, key).stdout.decode().strip()
    assert line.startswith("mount -t "), line
    subprocess.run(line.split(), check=True)


def _umount(target: str) -> None:
    subprocess.run(["umount", target], check=False, capture_output=True)


def _write_in(ctr, a: str, sn: str, key: str, target: str, name: str, text: str) -> None:
    _mount(ctr, a, sn, key, target)
    try:
        with open(os.path.join(target, name), "w") as f:
            f.write(text)
    finally:
        _umount(target)


@pytest.mark.parametrize("sn", SNAPSHOTTERS)
def test_crash_mid_commit_rolls_forward_and_drops_the_active_record(daemon, ctr, sn):
    # set-up, on a daemon without failpoints: a committed parent, and an
    # active child with content, labels and a lease
    d0 = daemon(config=NO_GC)
    a = d0.address
    target = os.path.join(d0.dir, "mnt")
    os.makedirs(target)
    ctr(a, "snapshots", "--snapshotter", sn, "prepare", "p")
    _write_in(ctr, a, sn, "p", target, "base", "from the parent")
    ctr(a, "snapshots", "--snapshotter", sn, "commit", "c0", "p")
    with grpc.insecure_channel("unix:" + a) as ch:
        leases_pb2_grpc.LeasesStub(ch).Create(leases_pb2.CreateRequest(id="l1"), metadata=MD)
        pb_grpc.SnapshotsStub(ch).Prepare(
            pb.PrepareSnapshotRequest(snapshotter=sn, key="k", parent="c0", labels={"team": "a"}),
            metadata=MD + (("containerd-lease", "l1"),))
    _write_in(ctr, a, sn, "k", target, "top", "from the child")
    assert d0.stop() == 0

    # the crash: the commit stops after the backend committed
    point = "snapshots.commit.after-backend"
    d1 = daemon(config=_same_root(d0), env=_failpoint_env(point))
    commit = subprocess.Popen([CTR, "--address", a, "snapshots", "--snapshotter", sn, "commit", "c", "k"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_failpoint(d1, point)
        d1.kill()
    finally:
        _, err = commit.communicate(timeout=START_TIMEOUT)
    assert commit.returncode != 0, "the commit cannot have succeeded: the daemon died under it"

    # the stores disagree exactly as intended: the backend committed `c`,
    # the metadata still names the active `k`
    meta = _metadata_keys(d1, sn)
    assert sorted(meta) == ["c0", "k"]
    backend = _backend(d1, sn)
    committed_c = [bk for bk, (kind, _) in backend.items() if bk.endswith("/c")]
    assert len(committed_c) == 1 and backend[committed_c[0]][0] == 3  # Committed
    assert meta["k"] not in backend
    assert _label_rows(d1, sn, "k") == [("team", "a")]

    # recovery, on a plain restart
    d2 = daemon(config=_same_root(d0))
    log = d2.log()
    assert "recovered committed snapshot" in log and "dropped snapshot record missing in the backend" in log, log
    assert _rows(ctr, a, sn) == [["c", "c0", "Committed"], ["c0", "Committed"]]
    r = ctr(a, "snapshots", "--snapshotter", sn, "info", "k", check=False)
    assert r.returncode == 1 and b"snapshot k does not exist: not found" in r.stderr
    assert _label_rows(d2, sn, "k") == []
    with grpc.insecure_channel("unix:" + a) as ch:
        res = leases_pb2_grpc.LeasesStub(ch).ListResources(leases_pb2.ListResourcesRequest(id="l1"), metadata=MD)
        assert list(res.resources) == []
    # the rolled-forward snapshot is whole: a child sees both layers
    ctr(a, "snapshots", "--snapshotter", sn, "prepare", "k2", "c")
    _mount(ctr, a, sn, "k2", target)
    try:
        assert sorted(os.listdir(target)) == ["base", "top"]
        assert open(os.path.join(target, "top")).read() == "from the child"
    finally:
        _umount(target)
    # and the two stores agree again
    assert set(_metadata_keys(d2, sn).values()) == set(_backend(d2, sn))


@pytest.mark.parametrize("sn, action", [("overlayfs", "pause"), ("native", "pause"), ("native", "exit")])
def test_crash_mid_prepare_removes_the_orphan(daemon, ctr, sn, action):
    point = "snapshots.prepare.after-backend"
    d1 = daemon(config=NO_GC, env={"PYCONTAINERD_FAILPOINTS": f"{point}={action}"})
    a = d1.address
    prepare = subprocess.Popen([CTR, "--address", a, "snapshots", "--snapshotter", sn, "prepare", "k"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if action == "pause":
            _wait_for_failpoint(d1, point)
            d1.kill()
        else:  # the daemon ends itself at the point, cleaning nothing up
            assert d1.wait_exit() == 86, d1.log()
            assert "failpoint reached" in d1.log() and os.path.exists(d1.address)
    finally:
        prepare.wait(timeout=START_TIMEOUT)
    assert prepare.returncode != 0

    # an orphan: the backend has the snapshot and its directory, no record names it
    assert _metadata_keys(d1, sn) == {}
    backend = _backend(d1, sn)
    assert len(backend) == 1 and next(iter(backend)).endswith("/k")
    (orphan_id,) = [str(sid) for _, sid in backend.values()]
    assert orphan_id in _snapshot_dirs(d1, sn)

    d2 = daemon(config=_same_root(d1))
    assert _backend(d2, sn) == {}
    assert orphan_id not in _snapshot_dirs(d2, sn)
    assert _rows(ctr, a, sn) == []
    # the name is free again and works
    ctr(a, "snapshots", "--snapshotter", sn, "prepare", "k")
    assert _rows(ctr, a, sn) == [["k", "Active"]]
    assert set(_metadata_keys(d2, sn).values()) == set(_backend(d2, sn))


def test_failpoints_unset_cost_nothing_visible(daemon, ctr):
    """Without the variable, the same commit goes straight through."""
    d = daemon(config=NO_GC)
    ctr(d.address, "snapshots", "--snapshotter", "native", "prepare", "k")
    ctr(d.address, "snapshots", "--snapshotter", "native", "commit", "c", "k")
    assert _rows(ctr, d.address, "native") == [["c", "Committed"]]
    assert "failpoint" not in d.log()
    assert d.stop(signal.SIGTERM) == 0


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split(" ")[4] for line in f if line.split(" ")[4].startswith(path + "/")]


def test_a_crash_mid_apply_leaves_no_temporary_mount_after_restart(daemon):
    """Diff.Apply mounts the snapshot on a temporary directory under the
    differ's state. A daemon killed there used to leave that mount for good
    (one more per crash, each pinning a snapshot's files); the next start
    unmounts and removes it, as containerd's CleanupTempMounts does."""
    import hashlib
    import io
    import tarfile

    from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
    from pycontainerd.api.services.diff.v1 import diff_pb2, diff_pb2_grpc
    from pycontainerd.api.types import descriptor_pb2

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("hello")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"world"))
    layer = buf.getvalue()
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    lease = MD + (("containerd-lease", "l1"),)

    d0 = daemon(config=NO_GC)
    with grpc.insecure_channel("unix:" + d0.address) as ch:
        leases_pb2_grpc.LeasesStub(ch).Create(leases_pb2.CreateRequest(id="l1"), metadata=MD)
        list(content_pb2_grpc.ContentStub(ch).Write(iter([content_pb2.WriteContentRequest(
            action=content_pb2.COMMIT, ref="layer", data=layer, total=len(layer), expected=digest)]),
            metadata=lease))
    assert d0.stop() == 0
    temp_mounts = os.path.join(d0.state, "io.containerd.differ.v1.walking", "mounts")

    point = "diff.temp-mount.mounted"
    d1 = daemon(config=_same_root(d0), env=_failpoint_env(point))
    ch = grpc.insecure_channel("unix:" + d0.address)
    try:
        mounts = pb_grpc.SnapshotsStub(ch).Prepare(pb.PrepareSnapshotRequest(snapshotter="overlayfs", key="k"),
                                                   metadata=lease).mounts
        apply = diff_pb2_grpc.DiffStub(ch).Apply.future(diff_pb2.ApplyRequest(
            diff=descriptor_pb2.Descriptor(media_type="application/vnd.oci.image.layer.v1.tar", digest=digest,
                                           size=len(layer)), mounts=mounts), metadata=lease, timeout=60)
        _wait_for_failpoint(d1, point)
        assert len(_mounts_under(temp_mounts)) == 1
        d1.kill()
        with pytest.raises(grpc.RpcError):
            apply.result()
    finally:
        ch.close()
    assert len(_mounts_under(temp_mounts)) == 1  # the crash left it behind

    try:
        d2 = daemon(config=_same_root(d0))
        assert _mounts_under(temp_mounts) == []
        assert os.listdir(temp_mounts) == []
    finally:  # never leave the test's own mount behind, whatever failed
        for point in _mounts_under(temp_mounts):
            subprocess.run(["umount", point], check=False, capture_output=True)
    # and the layer applies once the client retries
    with grpc.insecure_channel("unix:" + d2.address) as ch:
        mounts = pb_grpc.SnapshotsStub(ch).Mounts(pb.MountsRequest(snapshotter="overlayfs", key="k"),
                                                  metadata=MD).mounts
        applied = diff_pb2_grpc.DiffStub(ch).Apply(diff_pb2.ApplyRequest(
            diff=descriptor_pb2.Descriptor(media_type="application/vnd.oci.image.layer.v1.tar", digest=digest,
                                           size=len(layer)), mounts=mounts), metadata=lease, timeout=60)
    assert applied.applied.digest == digest
