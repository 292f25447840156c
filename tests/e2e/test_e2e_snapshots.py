"""The snapshots service end to end, driven by the real ctr: overlayfs and
native snapshots mounted with the commands ctr prints, pyctr's output equal
to ctr's byte for byte, the default snapshotter swapped in config.toml.
Crashes mid-commit and their recovery: test_e2e_snapshot_recovery.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from e2e_support import PROBE_FILTER, PROBE_TOPIC, until_subscribed

pytestmark = pytest.mark.e2e

SN = ("snapshots", "--snapshotter")
# ctr's `snapshots view` sets no gc.root label (as with containerd, a
# collection may take such a view at any time): keep the collector out of
# these tests so what they list stays put
NO_GC = {"disabled_plugins": ["io.containerd.gc.v1.scheduler"]}


def _mount_printed(out: bytes) -> None:
    """Run the mount command ctr printed, for real."""
    line = out.decode().strip()
    assert line.startswith("mount -t "), line
    subprocess.run(line.split(), check=True)


def _umount(path: str) -> None:
    subprocess.run(["umount", path], check=False, capture_output=True)


def test_ctr_overlayfs_and_native(daemon, ctr, pyctr):
    d = daemon(config=NO_GC)
    a = d.address
    target = os.path.join(d.dir, "mnt")
    os.makedirs(target)
    try:
        ctr(a, *SN, "overlayfs", "prepare", "k1")
        _mount_printed(ctr(a, *SN, "overlayfs", "mounts", target, "k1").stdout)
        with open(os.path.join(target, "hello"), "w") as f:
            f.write("world")
        _umount(target)
        ctr(a, *SN, "overlayfs", "commit", "c1", "k1")
        ctr(a, *SN, "overlayfs", "prepare", "k2", "c1")
        out = ctr(a, *SN, "overlayfs", "mounts", target, "k2").stdout
        assert b"-t overlay" in out and b"lowerdir=" in out and b"upperdir=" in out
        _mount_printed(out)
        assert open(os.path.join(target, "hello")).read() == "world"
        _umount(target)
        ctr(a, *SN, "overlayfs", "view", "v1", "c1")

        # native: its own namespace of keys
        ctr(a, *SN, "native", "prepare", "n1")
        _mount_printed(ctr(a, *SN, "native", "mounts", target, "n1").stdout)
        open(os.path.join(target, "f"), "w").close()
        _umount(target)
        ctr(a, *SN, "native", "commit", "nc1", "n1")
        ctr(a, *SN, "native", "prepare", "k2", "nc1")
        _mount_printed(ctr(a, *SN, "native", "mounts", target, "k2").stdout)
        assert os.listdir(target) == ["f"]
        _umount(target)
        ctr(a, *SN, "native", "view", "v1", "nc1")
    finally:
        _umount(target)

    for sn in ("overlayfs", "native"):
        for cmd in (("ls",), ("tree",), ("usage",), ("usage", "-b"), ("info", "v1"), ("info", "k2")):
            want = ctr(a, *SN, sn, *cmd).stdout
            got = pyctr(a, *SN, sn, *cmd).stdout
            assert got == want, (sn, cmd, want, got)
    rows = ctr(a, *SN, "overlayfs", "ls").stdout.decode().split("\n")
    assert rows[0].split() == ["KEY", "PARENT", "KIND"]
    assert [r.split() for r in rows[1:] if r] == [["c1", "Committed"], ["k2", "c1", "Active"], ["v1", "c1", "View"]]
    assert ctr(a, *SN, "native", "tree").stdout == b" nc1\n  \\_ k2\n  \\_ v1\n"

    labels = ctr(a, *SN, "overlayfs", "label", "c1", "a=b").stdout.decode().strip().split(",")
    assert "a=b" in labels
    assert b'"a": "b"' in ctr(a, *SN, "overlayfs", "info", "c1").stdout
    assert pyctr(a, *SN, "overlayfs", "label", "c1", "a=").returncode == 0
    assert b'"a"' not in ctr(a, *SN, "overlayfs", "info", "c1").stdout

    # errors, as containerd words them
    r = ctr(a, *SN, "overlayfs", "rm", "c1", check=False)
    assert r.returncode == 1 and b"cannot remove snapshot with child: failed precondition" in r.stderr
    r = ctr(a, *SN, "overlayfs", "commit", "x", "v1", check=False)
    assert r.returncode == 1 and b"is not active: failed precondition" in r.stderr
    r = ctr(a, *SN, "overlayfs", "info", "nope", check=False)
    assert b"snapshot nope does not exist: not found" in r.stderr
    r = ctr(a, *SN, "nope", "ls", check=False)
    assert b"snapshotter not loaded: nope: invalid argument" in r.stderr

    ctr(a, *SN, "native", "rm", "k2", "v1")
    ctr(a, *SN, "native", "rm", "nc1")
    assert ctr(a, *SN, "native", "ls").stdout.decode().split() == ["KEY", "PARENT", "KIND"]
    # namespaces are separate
    assert ctr(a, "-n", "other", *SN, "overlayfs", "ls").stdout.decode().split() == ["KEY", "PARENT", "KIND"]


def test_config_default_snapshotter(daemon, ctr, pyctr):
    d = daemon(config={
        "disabled_plugins": ["io.containerd.snapshotter.v1.overlayfs", "io.containerd.gc.v1.scheduler"],
        "plugins": {"io.containerd.service.v1.snapshots-service": {"default": "native"}},
    })
    a = d.address
    # a client that names no snapshotter (ctr and pyctr name overlayfs) gets the daemon's default
    from pycontainerd.client.client import Client
    from pycontainerd.client.snapshots import Snapshots

    with Client(address=a) as c:
        Snapshots(c, "").prepare("k")
        assert Snapshots(c, "").mounts("k")[0].source.startswith(
            os.path.join(d.root, "io.containerd.snapshotter.v1.native"))
    assert ctr(a, *SN, "native", "ls").stdout.split()[3:] == [b"k", b"Active"]
    r = ctr(a, *SN, "overlayfs", "ls", check=False)
    assert b"snapshotter not loaded: overlayfs" in r.stderr
    # a namespace label overrides the default for that namespace
    ctr(a, "namespaces", "create", "ns2", "containerd.io/defaults/snapshotter=overlayfs")
    with Client(address=a, namespace="ns2") as c, pytest.raises(Exception, match="snapshotter not loaded: overlayfs"):
        Snapshots(c, "").prepare("k")


def test_lease_header_records_snapshots(daemon):
    """A request under `containerd-lease` puts the snapshot in the lease's
    resources (type snapshots/<snapshotter>); commit moves it to the name."""
    import grpc

    from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc
    from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
    from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc

    d = daemon()  # the collector stays: the lease is what keeps these snapshots
    with grpc.insecure_channel("unix:" + d.address) as ch:
        md = (("containerd-namespace", "default"),)
        leases = leases_pb2_grpc.LeasesStub(ch)
        leases.Create(leases_pb2.CreateRequest(id="l1"), metadata=md)
        sn = pb_grpc.SnapshotsStub(ch)
        with_lease = md + (("containerd-lease", "l1"),)
        sn.Prepare(pb.PrepareSnapshotRequest(snapshotter="native", key="k"), metadata=with_lease)

        def resources():
            r = leases.ListResources(leases_pb2.ListResourcesRequest(id="l1"), metadata=md)
            return sorted((x.type, x.id) for x in r.resources)

        assert resources() == [("snapshots/native", "k")]
        sn.Commit(pb.CommitSnapshotRequest(snapshotter="native", name="c", key="k"), metadata=with_lease)
        assert resources() == [("snapshots/native", "c")]
        with pytest.raises(grpc.RpcError) as err:
            sn.Prepare(pb.PrepareSnapshotRequest(snapshotter="native", key="k2"),
                       metadata=md + (("containerd-lease", "nope"),))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "lease does not exist" in err.value.details()
        # the refused request changed nothing
        stat = sn.List(pb.ListSnapshotsRequest(snapshotter="native"), metadata=md)
        assert [i.name for r in stat for i in r.info] == ["c"]


def test_events_prepare_commit_remove(daemon, ctr):
    import threading

    from pycontainerd.api.events import snapshot_pb2
    from pycontainerd.client.client import Client

    d = daemon(config=NO_GC)
    got: list = []
    probed = threading.Event()
    with Client(address=d.address) as c:
        stream = c.subscribe('topic~=|^/snapshot/|', PROBE_FILTER)

        def collect():
            for env in stream:
                if env.topic == PROBE_TOPIC:
                    probed.set()
                    continue
                got.append(env)
                if len(got) == 3:
                    return

        t = threading.Thread(target=collect, daemon=True)
        t.start()
        until_subscribed(d.address, probed.is_set)
        ctr(d.address, *SN, "native", "prepare", "k", "")
        ctr(d.address, *SN, "native", "commit", "c", "k")
        ctr(d.address, *SN, "native", "rm", "c")
        t.join(10)
        stream.close()
    assert [e.topic for e in got] == ["/snapshot/prepare", "/snapshot/commit", "/snapshot/remove"]
    assert {e.namespace for e in got} == {"default"}
    commit = snapshot_pb2.SnapshotCommit()
    commit.ParseFromString(got[1].event.value)
    assert (commit.key, commit.name) == ("k", "c")


@pytest.mark.containerd
def test_pyctr_matches_ctr_against_real_containerd(containerd, ctr, pyctr):
    """pyctr's snapshot tables and JSON, fed by a real containerd."""
    a = containerd.address
    ctr(a, *SN, "native", "prepare", "k1")
    ctr(a, *SN, "native", "commit", "c1", "k1")
    ctr(a, *SN, "native", "prepare", "k2", "c1")
    ctr(a, *SN, "native", "label", "c1", "x=<y>&z")
    for cmd in (("ls",), ("tree",), ("usage",), ("usage", "-b", "c1"), ("info", "c1"), ("info", "k2")):
        assert pyctr(a, *SN, "native", *cmd).stdout == ctr(a, *SN, "native", *cmd).stdout, cmd
    out = pyctr(a, *SN, "native", "mounts", "/mnt", "k2").stdout
    assert out == ctr(a, *SN, "native", "mounts", "/mnt", "k2").stdout


def test_btrfs_snapshotter_with_ctr_on_a_loop_mounted_btrfs(daemon, ctr, pyctr):
    """The daemon's root on a real (loop-mounted) btrfs: the btrfs plugin
    loads, and ctr drives subvolume snapshots end to end."""
    import shutil as sh

    with open("/proc/filesystems") as f:
        if "btrfs" not in f.read().split():
            pytest.skip("this kernel has no btrfs")
    if not sh.which("mkfs.btrfs"):
        pytest.skip("btrfs-progs is not installed (make install)")
    base = daemon.tempdir()
    image, point = os.path.join(base, "img"), os.path.join(base, "fs")
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.btrfs", "-q", image], check=True, capture_output=True)
    os.mkdir(point)
    subprocess.run(["mount", "-o", "loop", image, point], check=True)
    d = None
    try:
        d = daemon(config={**NO_GC, "root": os.path.join(point, "root"),
                           "grpc": {"address": os.path.join(base, "s.sock")}})
        rows = ctr(d.address, "plugins", "ls", "id==btrfs").stdout.decode()
        assert rows.split()[-1] == "ok", rows
        target = os.path.join(base, "mnt")
        os.mkdir(target)
        sn = ("snapshots", "--snapshotter", "btrfs")
        ctr(d.address, *sn, "prepare", "k1")
        line = ctr(d.address, *sn, "mounts", target, "k1").stdout.decode().strip()
        assert line.startswith("mount -t btrfs /dev/loop") and "subvolid=" in line, line
        subprocess.run(line.split(), check=True)
        try:
            open(os.path.join(target, "f"), "w").close()
        finally:
            subprocess.run(["umount", target], check=True)
        ctr(d.address, *sn, "commit", "c1", "k1")
        ctr(d.address, *sn, "view", "v1", "c1")
        line = ctr(d.address, *sn, "mounts", target, "v1").stdout.decode().strip()
        assert line.endswith(",ro"), line
        subprocess.run(line.split(), check=True)
        try:
            assert os.listdir(target) == ["f"]
        finally:
            subprocess.run(["umount", target], check=True)
        assert pyctr(d.address, *sn, "tree").stdout == ctr(d.address, *sn, "tree").stdout == b" c1\n  \\_ v1\n"
        ctr(d.address, *sn, "rm", "v1", "c1")
        assert d.stop() == 0
    finally:
        if d is not None and d.running:  # its root is on the image: stop it before unmounting
            d.stop()
        for p in (os.path.join(base, "mnt"), point):
            subprocess.run(["umount", p], capture_output=True)
