"""Snapshotters through their plugin API, with real mounts: the metastore's
semantics and crash-safety, native and overlayfs layering, whiteouts and
opaque directories, views, usage, and the errors containerd gives."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile

import pytest

from pycontainerd.pkg import errdefs
from pycontainerd.pkg import mount as mnt
from pycontainerd.pkg.snapshots import KIND_ACTIVE, KIND_COMMITTED, KIND_VIEW, Info, Mount, Usage
from pycontainerd.plugins.snapshotters.native import NativeSnapshotter
from pycontainerd.plugins.snapshotters.overlayfs import OverlaySnapshotter, check_supported
from pycontainerd.plugins.snapshotters.storage import MetaStore

ROOT = os.geteuid() == 0


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="pcd-sn-", dir="/tmp")
    yield d
    # never leave a mount behind, even when a test failed half-way
    with open("/proc/self/mountinfo") as f:
        mounted = [line.split()[4] for line in f if d in line]
    for m in reversed(mounted):
        subprocess.run(["umount", "-l", m], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def overlay_ok(root: str) -> bool:
    try:
        check_supported(root)
        return True
    except OSError:
        return False


@pytest.fixture(params=["native", "overlayfs"])
def sn(request, tmp):
    if not ROOT:
        pytest.skip("mounts need root")
    root = os.path.join(tmp, "root")
    if request.param == "overlayfs":
        if not overlay_ok(os.path.join(tmp, "check")):
            pytest.skip("overlay is not supported here")
        s = OverlaySnapshotter(root)
    else:
        s = NativeSnapshotter(root)
    yield s
    s.close()


class Mounted:
    def __init__(self, mounts, target):
        self.mounts, self.target = mounts, target

    def __enter__(self):
        os.makedirs(self.target, exist_ok=True)
        mnt.mount_all(self.mounts, self.target)
        return self.target

    def __exit__(self, *exc):
        mnt.unmount(self.target)


# -- the metastore ------------------------------------------------------------

def test_storage_semantics(tmp):
    ms = MetaStore(os.path.join(tmp, "m.db"))
    with ms.transaction(True) as tx:
        a = tx.create_snapshot(KIND_ACTIVE, "a", "", {"x": "1"})
        assert a.parent_ids == []
        with pytest.raises(errdefs.AlreadyExists, match="snapshot a"):
            tx.create_snapshot(KIND_ACTIVE, "a")
        with pytest.raises(errdefs.InvalidArgument, match="only snapshots of type Active or View"):
            tx.create_snapshot(KIND_COMMITTED, "z")
        with pytest.raises(errdefs.InvalidArgument, match='parent "a" is not committed snapshot'):
            tx.create_snapshot(KIND_ACTIVE, "b", "a")
        with pytest.raises(errdefs.NotFound, match='missing parent "nope" bucket'):
            tx.create_snapshot(KIND_ACTIVE, "b", "nope")
        cid = tx.commit_active("a", "c", Usage(10, 2), {"y": "2"})
        assert cid == a.id
        sid, info, usage = tx.get_info("c")
        assert (info.kind, info.labels, usage) == (KIND_COMMITTED, {"y": "2"}, Usage(10, 2))
        with pytest.raises(errdefs.NotFound, match="snapshot does not exist"):
            tx.get_info("a")
        v = tx.create_snapshot(KIND_VIEW, "v", "c")
        assert v.parent_ids == [a.id]
        with pytest.raises(errdefs.FailedPrecondition, match='snapshot "v" is not active'):
            tx.commit_active("v", "w", Usage())
        with pytest.raises(errdefs.AlreadyExists, match="committed snapshot c"):
            tx.commit_active("v", "c", Usage())
        with pytest.raises(errdefs.FailedPrecondition, match="cannot remove snapshot with child"):
            tx.remove("c")
        with pytest.raises(errdefs.FailedPrecondition, match="not active or view"):
            tx.get_snapshot("c")
        with pytest.raises(errdefs.NotFound, match="snapshot nope"):
            tx.remove("nope")
        info = tx.update_info(Info("c", labels={"z": "3"}), ["labels.z", "labels.y"])
        assert info.labels == {"z": "3"}
        with pytest.raises(errdefs.InvalidArgument, match='cannot update "parent" field on snapshot "c"'):
            tx.update_info(Info("c"), ["parent"])
        tx.remove("v")
        tx.remove("c")
        assert tx.id_map() == {}
    # ids are never reused
    with ms.transaction(True) as tx:
        assert int(tx.create_snapshot(KIND_ACTIVE, "n").id) > int(v.id)
    ms.close()


def test_storage_rolls_back_a_failed_transaction(tmp):
    ms = MetaStore(os.path.join(tmp, "m.db"))
    with pytest.raises(RuntimeError):
        with ms.transaction(True) as tx:
            tx.create_snapshot(KIND_ACTIVE, "a")
            raise RuntimeError("disk full")
    with ms.transaction() as tx:
        assert list(tx.walk()) == []
    ms.close()


CRASHER = r"""
import os, sys
from pycontainerd.pkg.snapshots import KIND_ACTIVE, Usage
from pycontainerd.plugins.snapshotters.storage import MetaStore
ms = MetaStore(sys.argv[1])
with ms.transaction(True) as tx:
    tx.create_snapshot(KIND_ACTIVE, "committed-before")
    tx.commit_active("committed-before", "c", Usage(1, 1))
with ms.transaction(True) as tx:
    tx.create_snapshot(KIND_ACTIVE, "half")
    os._exit(9)  # killed in the middle of a transaction
"""


def test_storage_survives_a_crash_mid_transaction(tmp):
    db = os.path.join(tmp, "m.db")
    r = subprocess.run([sys.executable, "-c", CRASHER, db])
    assert r.returncode == 9
    ms = MetaStore(db)
    with ms.transaction() as tx:
        assert [i.name for _, i in tx.walk()] == ["c"]
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ms.close()


# -- snapshotters with real mounts ----------------------------------------------

def test_layers_whiteouts_and_views(sn, tmp):
    m = os.path.join(tmp, "m")
    with Mounted(sn.prepare("k1", "", {"containerd.io/snapshot/x": "1"}), m) as t:
        with open(f"{t}/a", "w") as f:
            f.write("hello")
        os.makedirs(f"{t}/dir/sub")
        open(f"{t}/dir/old", "w").close()
    sn.commit("c1", "k1")
    assert sn.stat("c1").kind == KIND_COMMITTED
    with pytest.raises(errdefs.NotFound):
        sn.stat("k1")

    with Mounted(sn.prepare("k2", "c1"), m) as t:
        assert open(f"{t}/a").read() == "hello"
        os.remove(f"{t}/a")
        shutil.rmtree(f"{t}/dir")
        os.makedirs(f"{t}/dir")
        open(f"{t}/dir/new", "w").close()
        assert sorted(os.listdir(f"{t}/dir")) == ["new"]
    if isinstance(sn, OverlaySnapshotter):
        sid = str(os.path.basename(os.path.dirname(sn.mounts("k2")[0].options[-2].split("=", 1)[1])))
        upper = sn.upper_path(sid)
        st = os.lstat(f"{upper}/a")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, "deleted file is a whiteout"
        assert os.getxattr(f"{upper}/dir", "trusted.overlay.opaque") == b"y"
    sn.commit("c2", "k2")

    # a view of c2 shows c2's tree and is read-only
    with Mounted(sn.view("v", "c2"), m) as t:
        assert not os.path.exists(f"{t}/a")
        assert os.listdir(f"{t}/dir") == ["new"]
        with pytest.raises(OSError):
            open(f"{t}/b", "w")
    assert sn.stat("v").kind == KIND_VIEW
    # and c1 is unchanged underneath
    with Mounted(sn.view("v1", "c1"), m) as t:
        assert open(f"{t}/a").read() == "hello"

    with pytest.raises(errdefs.FailedPrecondition, match="not active"):
        sn.commit("x", "v")
    with pytest.raises(errdefs.FailedPrecondition, match="cannot remove snapshot with child"):
        sn.remove("c1")
    with pytest.raises(errdefs.NotFound):
        sn.mounts("nope")
    with pytest.raises(errdefs.NotFound):
        sn.usage("nope")

    assert [i.name for i in sn.walk()] == ["c1", "c2", "v", "v1"]
    assert [i.name for i in sn.walk("kind==view")] == ["v", "v1"]
    assert [i.name for i in sn.walk("parent==c1")] == ["c2", "v1"]
    assert [i.name for i in sn.walk('labels."containerd.io/snapshot/x"')] == []
    info = sn.update(Info("c2", labels={"a": "b"}), ["labels.a"])
    assert info.labels == {"a": "b"}
    assert [i.name for i in sn.walk("labels.a==b")] == ["c2"]

    for k in ("v", "v1", "c2", "c1"):
        sn.remove(k)
    assert sn.walk() == []
    assert os.listdir(os.path.join(sn.root, "snapshots")) == []


def test_usage(sn, tmp):
    m = os.path.join(tmp, "m")
    with Mounted(sn.prepare("k", ""), m) as t:
        with open(f"{t}/big", "wb") as f:
            f.write(b"x" * 100_000)
        os.mkdir(f"{t}/d")
    u = sn.usage("k")
    assert u.inodes == 3 and u.size >= 100_000
    sn.commit("c", "k")
    assert sn.usage("c") == u


def test_cleanup_removes_orphans(sn):
    snaps = os.path.join(sn.root, "snapshots")
    os.makedirs(os.path.join(snaps, "999", "fs"))
    os.makedirs(os.path.join(snaps, "new-123"))
    sn.prepare("k", "")
    sn.cleanup()
    assert len(os.listdir(snaps)) == 1


@pytest.mark.skipif(not ROOT, reason="mounts need root")
def test_overlay_long_lowerdir_is_compacted(tmp):
    if not overlay_ok(os.path.join(tmp, "check")):
        pytest.skip("overlay is not supported here")
    sn = OverlaySnapshotter(os.path.join(tmp, "a-rather-long-root-directory-name-for-the-snapshotter", "root"))
    m = os.path.join(tmp, "m")
    parent = ""
    for i in range(60):
        sn.prepare(f"k{i}", parent)
        with Mounted(sn.mounts(f"k{i}"), m) as t:
            open(f"{t}/f{i}", "w").close()
        sn.commit(f"c{i}", f"k{i}")
        parent = f"c{i}"
    mounts = sn.prepare("top", parent)
    assert len(",".join(mounts[0].options)) > mnt.PAGESIZE
    with Mounted(mounts, m) as t:
        assert len(os.listdir(t)) == 60
    sn.close()


def test_compact_lowerdir():
    cwd, opts = mnt.compact_lowerdir(["upperdir=/u", "lowerdir=/r/snapshots/12/fs:/r/snapshots/1/fs"])
    assert cwd == "/r/snapshots/"
    assert opts == ["upperdir=/u", "lowerdir=12/fs:1/fs"]
    assert mnt.compact_lowerdir(["lowerdir=/a"]) == ("", ["lowerdir=/a"])


# -- btrfs, on a loop-mounted btrfs image ------------------------------------------

def _btrfs_unavailable() -> str:
    if not ROOT:
        return "loop mounts need root"
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", "btrfs"], capture_output=True)
    with open("/proc/filesystems") as f:
        if not any(line.split()[-1] == "btrfs" for line in f if line.strip()):
            return "this kernel has no btrfs"
    if not shutil.which("mkfs.btrfs") or not shutil.which("btrfs"):
        return "btrfs-progs is not installed (make install)"
    return ""


@pytest.fixture
def btrfs_root(tmp):
    reason = _btrfs_unavailable()
    if reason:
        pytest.skip(reason)
    image, point = os.path.join(tmp, "btrfs.img"), os.path.join(tmp, "btrfs")
    with open(image, "wb") as f:
        f.truncate(256 << 20)  # sparse
    subprocess.run(["mkfs.btrfs", "-q", image], check=True, capture_output=True)
    os.mkdir(point)
    subprocess.run(["mount", "-o", "loop", image, point], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", point], check=True)


def test_btrfs_subvolumes(btrfs_root, tmp):
    from pycontainerd.plugins.snapshotters.btrfs import BtrfsSnapshotter, mount_of

    sn = BtrfsSnapshotter(os.path.join(btrfs_root, "sn"), mount_of(btrfs_root)[2])
    m = os.path.join(tmp, "m")
    mounts = sn.prepare("k1", "")
    assert mounts[0].type == "btrfs" and mounts[0].options[0].startswith("subvolid=")
    with Mounted(mounts, m) as t:
        with open(f"{t}/a", "w") as f:
            f.write("one")
    sn.commit("c1", "k1")
    sid = os.listdir(os.path.join(sn.root, "snapshots"))[0]
    assert os.listdir(os.path.join(sn.root, "active")) == []
    with Mounted(sn.prepare("k2", "c1"), m) as t:
        assert open(f"{t}/a").read() == "one"
        os.remove(f"{t}/a")
    with Mounted(sn.view("v", "c1"), m) as t:
        assert open(f"{t}/a").read() == "one"
        with pytest.raises(OSError):
            open(f"{t}/b", "w")
    assert "ro" in sn.mounts("v")[0].options
    assert sn.usage("c1").inodes == 2
    with pytest.raises(errdefs.FailedPrecondition, match="cannot remove snapshot with child"):
        sn.remove("c1")
    with pytest.raises(errdefs.FailedPrecondition, match="not active"):
        sn.commit("x", "v")
    assert [i.name for i in sn.walk("kind==active")] == ["k2"]
    for k in ("v", "k2", "c1"):
        sn.remove(k)
    assert all(os.listdir(os.path.join(sn.root, d)) == [] for d in ("active", "view", "snapshots")), sid
    sn.close()


def test_btrfs_skips_off_btrfs(tmp):
    import asyncio

    from pycontainerd.core.context import Meta, SkipPlugin
    from pycontainerd.plugins.snapshotters import btrfs

    class IC:  # the three things the init reads
        root = tmp
        meta = Meta()
        config = btrfs.Config()

    if btrfs.mount_of(tmp)[1] == "btrfs":
        pytest.skip("/tmp is on btrfs here")
    with pytest.raises(SkipPlugin, match=r"must be a btrfs filesystem to be used with the btrfs snapshotter: skip plugin"):
        asyncio.run(btrfs.init(IC()))


@pytest.mark.skipif(not ROOT, reason="mounts need root")
def test_overlayfs_skips_where_overlay_cannot_be_the_upper(tmp):
    """An overlay mount cannot hold another overlay's upper layer: the
    plugin skips there, saying why, instead of failing later."""
    import asyncio

    from pycontainerd.core.context import Meta, SkipPlugin
    from pycontainerd.plugins.snapshotters import overlayfs

    if not overlay_ok(os.path.join(tmp, "check")):
        pytest.skip("overlay is not supported here")
    for d in ("l", "u", "w", "m"):
        os.mkdir(os.path.join(tmp, d))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={tmp}/l,upperdir={tmp}/u,workdir={tmp}/w", f"{tmp}/m"], check=True)
    try:
        class IC:
            root = os.path.join(tmp, "m", "root")
            config = overlayfs.Config()
            meta = Meta()

        with pytest.raises(SkipPlugin, match=r"overlayfs unable to be used on .*failed to mount overlay"):
            asyncio.run(overlayfs.init(IC()))
    finally:
        mnt.unmount(f"{tmp}/m")


# -- mount(2) as containerd calls it ------------------------------------------

def test_parse_options_follows_containerds_table():
    flags, data, loop = mnt.parse_options(["rbind", "ro", "nosuid", "nodev"])
    assert flags == mnt.MS_BIND | mnt.MS_REC | mnt.MS_RDONLY | mnt.MS_NOSUID | mnt.MS_NODEV
    assert (data, loop) == ("", False)
    # a later option clears an earlier one; the rest is filesystem data,
    # "defaults" included (it has no flag: containerd passes it on too)
    flags, data, _ = mnt.parse_options(["ro", "rw", "defaults", "index=off", "lowerdir=/a:/b"])
    assert flags == 0 and data == "defaults,index=off,lowerdir=/a:/b"
    assert mnt.parse_options(["loop", "ro"]) == (mnt.MS_RDONLY, "", True)


def test_readonly_bind_is_remounted_readonly(tmp):
    """A bind mount ignores MS_RDONLY: without containerd's remount, `ro` in
    a view's mounts would leave the snapshot writable."""
    if not ROOT:
        pytest.skip("mounts need root")
    src, target = os.path.join(tmp, "src"), os.path.join(tmp, "target")
    os.mkdir(src)
    os.mkdir(target)
    with Mounted([Mount("bind", src, ["rbind", "ro"])], target):
        with pytest.raises(OSError) as e:
            open(os.path.join(target, "f"), "w")
        assert e.value.errno == errno.EROFS
    assert not os.path.ismount(target)
    assert mnt.unmount(target) is False  # not a mount point: nothing to do, as containerd's Unmount


def test_mount_errors_name_the_mount(tmp):
    if not ROOT:
        pytest.skip("mounts need root")
    with pytest.raises(OSError, match=r"mount bind /nonexistent-src on .*: no such file or directory"):
        mnt.mount(Mount("bind", "/nonexistent-src", ["rbind"]), tmp)


def test_unmount_all_removes_stacked_mounts(tmp):
    if not ROOT:
        pytest.skip("mounts need root")
    src, target = os.path.join(tmp, "src"), os.path.join(tmp, "target")
    os.mkdir(src)
    os.mkdir(target)
    for _ in range(3):
        mnt.mount(Mount("bind", src, ["rbind"]), target)
    mnt.unmount_all(target)
    assert not os.path.ismount(target)


def test_temp_mount_cleanup_reads_escaped_mount_points():
    # /proc/self/mountinfo writes a space, tab, newline or backslash in a
    # mount point as an octal escape; cleanup must find such mounts too
    assert mnt._mountinfo_path(r"/run/a\040b\011c\134d") == "/run/a b\tc\\d"
    assert mnt._mountinfo_path("/plain/path") == "/plain/path"
