"""Applying and writing OCI layers (plugins/differ/archive.py).

Apply unpacks untrusted tar streams as root, so most of these tests craft
malicious archives with tarfile and check that nothing outside the target
directory is created or changed: a sentinel tree sits beside the target and
is compared before and after, and the host paths an escape would hit are
checked for new names.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycontainerd.plugins.differ import archive as A

UNIQUE = "pycd-" + uuid.uuid4().hex[:10]
CAP = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service, permitted


# -- helpers ------------------------------------------------------------------------


def entry(name, kind=tarfile.REGTYPE, data=b"", **attrs):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    ti.mtime = attrs.pop("mtime", 1_600_000_000)
    for k, v in attrs.items():
        setattr(ti, k, v)
    return ti, (data if kind == tarfile.REGTYPE else None)


def tar_bytes(*entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def apply_bytes(root, data: bytes, **kw) -> int:
    return A.apply(root, io.BytesIO(data), **kw)


def snapshot(top: str, skip: str | None = None) -> dict:
    """Everything observable about a tree: type, mode, owner, size, times,
    link target, content digest and xattrs of each entry (the top included)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if skip is not None and dirpath == skip:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != skip]
        for name in [None] + dirnames + filenames:
            p = dirpath if name is None else os.path.join(dirpath, name)
            if name is None and p != top:
                continue
            st_ = os.lstat(p)
            rec = (stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode), st_.st_uid, st_.st_gid,
                   st_.st_size, st_.st_mtime_ns, st_.st_ino, st_.st_nlink)
            if stat.S_ISLNK(st_.st_mode):
                rec += (os.readlink(p),)
            elif stat.S_ISREG(st_.st_mode):
                with open(p, "rb") as f:
                    rec += (hashlib.sha256(f.read()).hexdigest(),)
            if not stat.S_ISLNK(st_.st_mode):
                rec += (tuple(sorted((k, os.getxattr(p, k)) for k in os.listxattr(p))),)
            out[os.path.relpath(p, top)] = rec
    return out


HOST_PROBES = ("/" + UNIQUE, "/tmp/" + UNIQUE, "/etc/" + UNIQUE)


class Sandbox:
    """outer/
         sentinel/            files that must never change
         deep/nest/target/    where layers are applied
    so that `..` escapes of up to three levels land in `outer`, which is
    snapshotted whole (minus the target)."""

    def __init__(self):
        self.outer = tempfile.mkdtemp(prefix="pycd-ar-", dir="/tmp")
        self.sentinel = os.path.join(self.outer, "sentinel")
        os.makedirs(os.path.join(self.sentinel, "dir"))
        with open(os.path.join(self.sentinel, "file"), "w") as f:
            f.write("precious\n")
        with open(os.path.join(self.sentinel, "dir", "x"), "w") as f:
            f.write("x\n")
        os.chmod(os.path.join(self.sentinel, "file"), 0o600)
        self.target = os.path.join(self.outer, "deep", "nest", "target")
        os.makedirs(self.target)
        self.passwd = os.lstat("/etc/passwd")
        self.before = self.outside()

    def outside(self):
        return snapshot(self.outer, skip=self.target)

    def reset_target(self):
        for name in os.listdir(self.target):  # keep the target itself: its parent's mtime is watched
            A.remove_all(os.path.join(self.target, name))

    def assert_outside_untouched(self):
        assert self.outside() == self.before
        for probe in HOST_PROBES:
            assert not os.path.lexists(probe), probe
        now = os.lstat("/etc/passwd")
        assert (now.st_mode, now.st_uid, now.st_mtime_ns, now.st_nlink) == (
            self.passwd.st_mode, self.passwd.st_uid, self.passwd.st_mtime_ns, self.passwd.st_nlink)

    def t(self, *parts):
        return os.path.join(self.target, *parts)

    def close(self):
        shutil.rmtree(self.outer, ignore_errors=True)


@pytest.fixture
def box():
    b = Sandbox()
    try:
        yield b
    finally:
        b.close()


def read(p):
    with open(p, "rb") as f:
        return f.read()


# -- path helpers -------------------------------------------------------------------


def test_go_path_semantics():
    assert A.clean("") == "."
    assert A.clean("//a//b/../c/") == "/a/c"
    assert A.clean("../../x") == "../../x"
    assert A.clean("/../x") == "/x"
    assert A.join("/r", "/abs") == "/r/abs"  # not os.path.join's "/abs"
    assert A.join("", "a") == "a"
    assert A.split("a/b/") == ("a/b/", "")
    assert A.split("x") == ("", "x")
    assert A.base("/a/b/") == "b"
    assert A.dirname("a") == "."


def test_root_path_bounds_symlinks(box):
    r = box.target
    os.symlink("/", box.t("slash"))
    os.symlink("../../..", box.t("up"))
    os.symlink(box.sentinel, box.t("abs"))
    os.mkdir(box.t("d"))
    os.symlink("../d", box.t("d", "rel"))
    assert A.root_path(r, "slash/etc") == box.t("etc")
    assert A.root_path(r, "up/x") == box.t("x")
    assert A.root_path(r, "abs/file") == box.t(box.sentinel.lstrip("/"), "file")
    assert A.root_path(r, "d/rel/rel/rel") == box.t("d")
    assert A.root_path(r, "../../../../..") == r
    os.symlink("loop2", box.t("loop1"))
    os.symlink("loop1", box.t("loop2"))
    with pytest.raises(A.ArchiveError, match="too many links"):
        A.root_path(r, "loop1/x")


# -- confinement ----------------------------------------------------------------------


def test_dotdot_names_are_confined(box):
    apply_bytes(box.target, tar_bytes(
        entry(f"../../{UNIQUE}/x", data=b"1"),
        entry("../../../sentinel/file", data=b"pwned"),
        entry("a/../../../../b", data=b"2"),
        entry("../../../../../../../../tmp/" + UNIQUE, data=b"3"),
        entry("..", tarfile.DIRTYPE, mode=0o777),
        entry("./", tarfile.DIRTYPE, mode=0o777),
    ))
    box.assert_outside_untouched()
    assert read(box.t(UNIQUE, "x")) == b"1"
    assert read(box.t("sentinel", "file")) == b"pwned"
    assert read(box.t("b")) == b"2"
    assert read(box.t("tmp", UNIQUE)) == b"3"
    # `..` and `.` resolve to the root, which is left alone
    assert stat.S_IMODE(os.stat(box.target).st_mode) != 0o777


def test_absolute_names_are_confined(box):
    apply_bytes(box.target, tar_bytes(
        entry(f"/tmp/{UNIQUE}", data=b"a"),
        entry(box.sentinel + "/file", data=b"pwned"),
        entry(f"/etc/{UNIQUE}", data=b"e"),
    ))
    box.assert_outside_untouched()
    assert read(box.t("tmp", UNIQUE)) == b"a"
    assert read(box.t(box.sentinel.lstrip("/"), "file")) == b"pwned"
    assert read(box.t("etc", UNIQUE)) == b"e"


def test_write_through_symlink_to_slash_is_confined(box):
    apply_bytes(box.target, tar_bytes(
        entry("evil", tarfile.SYMTYPE, linkname="/"),
        entry(f"evil/tmp/{UNIQUE}", data=b"x"),
        entry(f"evil/etc/{UNIQUE}", data=b"x"),
        entry("evil" + box.sentinel + "/file", data=b"pwned"),
    ))
    box.assert_outside_untouched()
    assert os.readlink(box.t("evil")) == "/"  # the link itself is kept as written
    assert read(box.t("tmp", UNIQUE)) == b"x"
    assert read(box.t(box.sentinel.lstrip("/"), "file")) == b"pwned"


def test_relative_and_absolute_symlink_parents_are_confined(box):
    apply_bytes(box.target, tar_bytes(
        entry("up", tarfile.SYMTYPE, linkname="../../../sentinel"),
        entry("up/file", data=b"pwned"),
        entry("up/dir/x", data=b"pwned"),
        entry("abs", tarfile.SYMTYPE, linkname=box.sentinel),
        entry("abs/new", data=b"pwned"),
    ))
    box.assert_outside_untouched()
    # `../../../sentinel` from the root is `/sentinel` inside it
    assert read(box.t("sentinel", "file")) == b"pwned"
    assert read(box.t("sentinel", "dir", "x")) == b"pwned"
    assert read(box.t(box.sentinel.lstrip("/"), "new")) == b"pwned"


def test_symlink_chain_escaping_is_confined(box):
    apply_bytes(box.target, tar_bytes(
        entry("a", tarfile.DIRTYPE),
        entry("a/b", tarfile.SYMTYPE, linkname="../c"),
        entry("c", tarfile.SYMTYPE, linkname="d/e"),
        entry("d", tarfile.DIRTYPE),
        entry("d/e", tarfile.SYMTYPE, linkname="../../../../.."),
        entry("f", tarfile.SYMTYPE, linkname="/a/b/tmp"),
        entry(f"a/b/tmp/{UNIQUE}", data=b"1"),
        entry(f"f/{UNIQUE}-2", data=b"2"),
        entry("a/b/sentinel/file", data=b"3"),
    ))
    box.assert_outside_untouched()
    assert read(box.t("tmp", UNIQUE)) == b"1"
    assert read(box.t("tmp", UNIQUE + "-2")) == b"2"
    assert read(box.t("sentinel", "file")) == b"3"


def test_symlink_loop_is_an_error_and_writes_nothing_outside(box):
    with pytest.raises(A.ArchiveError, match="too many links"):
        apply_bytes(box.target, tar_bytes(
            entry("l1", tarfile.SYMTYPE, linkname="l2"),
            entry("l2", tarfile.SYMTYPE, linkname="/l1"),
            entry("l1/x", data=b"x"),
        ))
    box.assert_outside_untouched()


def test_final_component_symlink_is_replaced_not_followed(box):
    outside_file = os.path.join(box.sentinel, "file")
    apply_bytes(box.target, tar_bytes(
        entry("f", tarfile.SYMTYPE, linkname=outside_file),
        entry("f", data=b"replaced", mode=0o777, uid=4242),
        entry("d", tarfile.SYMTYPE, linkname=box.sentinel),
        entry("d", tarfile.DIRTYPE, mode=0o777, uid=4242),
        entry("g", tarfile.SYMTYPE, linkname=outside_file),
        entry("g", tarfile.FIFOTYPE, mode=0o666),
        entry("s", tarfile.SYMTYPE, linkname=outside_file),
        entry("s", tarfile.SYMTYPE, linkname="elsewhere", mode=0o777, uid=4242,
              pax_headers={"SCHILY.xattr.user.x": "y"}),
    ))
    box.assert_outside_untouched()
    assert stat.S_ISREG(os.lstat(box.t("f")).st_mode) and read(box.t("f")) == b"replaced"
    assert stat.S_ISDIR(os.lstat(box.t("d")).st_mode) and os.listdir(box.t("d")) == []
    assert stat.S_ISFIFO(os.lstat(box.t("g")).st_mode)
    assert os.readlink(box.t("s")) == "elsewhere" and os.lstat(box.t("s")).st_uid == 4242


def test_directory_replaced_by_symlink_mid_stream(box):
    apply_bytes(box.target, tar_bytes(
        entry("d", tarfile.DIRTYPE, mode=0o755, mtime=1000),
        entry("d/a", data=b"a"),
        entry("d", tarfile.SYMTYPE, linkname=box.sentinel),
        entry("d/b", data=b"b"),
        entry("d/file", data=b"pwned"),
        entry("d/dir", tarfile.DIRTYPE, mode=0o777),
    ))
    box.assert_outside_untouched()
    inner = box.t(box.sentinel.lstrip("/"))
    assert os.readlink(box.t("d")) == box.sentinel
    assert read(os.path.join(inner, "b")) == b"b"
    assert read(os.path.join(inner, "file")) == b"pwned"


def test_hardlink_to_host_file_is_refused(box):
    with pytest.raises(FileNotFoundError):
        apply_bytes(box.target, tar_bytes(entry("pw", tarfile.LNKTYPE, linkname="/etc/passwd", mode=0o777)))
    with pytest.raises(FileNotFoundError):
        apply_bytes(box.target, tar_bytes(entry("s", tarfile.LNKTYPE, linkname="../../../sentinel/file")))
    box.assert_outside_untouched()
    assert not os.path.lexists(box.t("pw"))


def test_hardlink_targets_resolve_inside_root(box):
    apply_bytes(box.target, tar_bytes(
        entry("etc/passwd", data=b"root:x:0:0::/:/bin/sh\n"),
        entry("pw", tarfile.LNKTYPE, linkname="/etc/passwd"),
        entry("esc", tarfile.SYMTYPE, linkname="/"),
        entry("pw2", tarfile.LNKTYPE, linkname="esc/../../etc/passwd"),
        entry("pw3", tarfile.LNKTYPE, linkname="../../etc/passwd", mode=0o600, uid=7),
    ))
    box.assert_outside_untouched()
    ino = os.lstat(box.t("etc", "passwd")).st_ino
    assert os.lstat(box.t("pw")).st_ino == ino == os.lstat(box.t("pw2")).st_ino == os.lstat(box.t("pw3")).st_ino
    assert os.lstat(box.t("pw3")).st_uid == 7


def test_hardlink_to_root_or_parent_fails(box):
    for linkname in ("..", "/", "."):
        with pytest.raises(OSError):
            apply_bytes(box.target, tar_bytes(entry("h", tarfile.LNKTYPE, linkname=linkname)))
    box.assert_outside_untouched()


def test_hardlink_to_outward_symlink_links_the_symlink(box):
    outside_file = os.path.join(box.sentinel, "file")
    apply_bytes(box.target, tar_bytes(
        entry("s", tarfile.SYMTYPE, linkname=outside_file),
        entry("h", tarfile.LNKTYPE, linkname="s", mode=0o777, uid=4242, gid=4242,
              pax_headers={"SCHILY.xattr.user.evil": "1"}),
    ))
    box.assert_outside_untouched()
    h, s = os.lstat(box.t("h")), os.lstat(box.t("s"))
    assert stat.S_ISLNK(h.st_mode) and h.st_ino == s.st_ino and h.st_uid == 4242


def test_whiteout_through_symlinks_stays_inside(box):
    apply_bytes(box.target, tar_bytes(
        entry("link", tarfile.SYMTYPE, linkname=box.sentinel),
        entry("link/.wh.file", data=b""),
        entry("link/.wh.dir", data=b""),
        entry("up", tarfile.SYMTYPE, linkname="../../.."),
        entry("up/sentinel/.wh..wh..opq"),
        entry("up/.wh.sentinel"),
        entry(".wh.link"),
    ))
    box.assert_outside_untouched()
    assert not os.path.lexists(box.t("link"))


def test_whiteout_naming_outside_its_directory_is_invalid(box):
    for name in (".wh..", "a/.wh..", ".wh."):
        with pytest.raises(A.InvalidArchive, match="invalid whiteout name"):
            apply_bytes(box.target, tar_bytes(entry(name)))
    box.assert_outside_untouched()
    assert os.path.isdir(box.target)


# -- devices, whiteouts, attributes ---------------------------------------------------


@pytest.mark.skipif(A.running_in_userns(), reason="containerd skips device nodes in a user namespace")
def test_device_nodes_and_fifos_as_root(box):
    apply_bytes(box.target, tar_bytes(
        entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        entry("dev/loop9", tarfile.BLKTYPE, devmajor=7, devminor=9, mode=0o660, gid=6),
        entry("fifo", tarfile.FIFOTYPE, mode=0o640),
    ))
    box.assert_outside_untouched()
    n, b, f = os.lstat(box.t("dev/null")), os.lstat(box.t("dev/loop9")), os.lstat(box.t("fifo"))
    assert stat.S_ISCHR(n.st_mode) and (os.major(n.st_rdev), os.minor(n.st_rdev)) == (1, 3)
    assert stat.S_IMODE(n.st_mode) == 0o666
    assert stat.S_ISBLK(b.st_mode) and (os.major(b.st_rdev), os.minor(b.st_rdev)) == (7, 9)
    assert b.st_gid == 6 and stat.S_IMODE(b.st_mode) == 0o660
    assert stat.S_ISFIFO(f.st_mode) and stat.S_IMODE(f.st_mode) == 0o640


def test_device_skip_rule_follows_user_namespace(box, monkeypatch):
    """In a user namespace containerd skips block/char devices (fifos stay)."""
    monkeypatch.setattr(A, "running_in_userns", lambda: True)
    apply_bytes(box.target, tar_bytes(
        entry("c", tarfile.CHRTYPE, devmajor=1, devminor=3),
        entry("b", tarfile.BLKTYPE, devmajor=7, devminor=0),
        entry("p", tarfile.FIFOTYPE),
    ))
    assert sorted(os.listdir(box.target)) == ["p"]


def _lower(box):
    for d in ("keep", "gone_dir/sub", "opq/old_dir", "opq/kept_by_layer"):
        os.makedirs(box.t(d), exist_ok=True)
    for f in ("keep/a", "gone", "gone_dir/sub/f", "opq/old", "opq/old_dir/f", "opq/kept_by_layer/old"):
        with open(box.t(f), "w") as fh:
            fh.write(f)


def test_whiteouts_and_opaque_directories_on_a_lower(box):
    _lower(box)
    apply_bytes(box.target, tar_bytes(
        entry(".wh.gone"),
        entry(".wh.gone_dir"),
        entry(".wh.missing"),  # removing what is not there is fine
        entry("opq", tarfile.DIRTYPE, mode=0o750),
        entry("opq/new", data=b"new"),
        entry("opq/kept_by_layer", tarfile.DIRTYPE),
        entry("opq/kept_by_layer/n2", data=b"n2"),
        # opaque markers may come after entries of the same layer
        entry("opq/.wh..wh..opq"),
        entry("keep/.wh..wh.plnk"),  # meta whiteouts remove ".wh.plnk"
    ))
    box.assert_outside_untouched()
    assert sorted(os.listdir(box.target)) == ["keep", "opq"]
    assert os.listdir(box.t("keep")) == ["a"]
    assert sorted(os.listdir(box.t("opq"))) == ["kept_by_layer", "new"]
    assert os.listdir(box.t("opq/kept_by_layer")) == ["n2"]
    assert not any(n.startswith(".wh.") for _, ds, fs in os.walk(box.target) for n in ds + fs)


def test_overlay_whiteout_conversion(box):
    _lower(box)
    apply_bytes(box.target, tar_bytes(
        entry("keep/.wh.from_lower", uid=5, gid=6),
        entry("opq", tarfile.DIRTYPE),
        entry("opq/.wh..wh..opq"),
    ), convert_whiteout=A.overlay_convert_whiteout)
    wh = os.lstat(box.t("keep/from_lower"))
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0 and (wh.st_uid, wh.st_gid) == (5, 6)
    assert os.getxattr(box.t("opq"), "trusted.overlay.opaque") == b"y"
    assert os.path.exists(box.t("opq/old"))  # overlayfs hides it, not us


def test_parents_take_lower_attributes(box):
    lower = os.path.join(box.outer, "lowerdir")
    os.makedirs(os.path.join(lower, "a", "b"))
    os.chown(os.path.join(lower, "a"), 11, 12)
    os.chmod(os.path.join(lower, "a"), 0o710)
    os.setxattr(os.path.join(lower, "a"), "user.from", b"lower")
    apply_bytes(box.target, tar_bytes(entry("a/b/c", data=b"c")), parents=[lower])
    st_ = os.lstat(box.t("a"))
    assert (st_.st_uid, st_.st_gid, stat.S_IMODE(st_.st_mode)) == (11, 12, 0o710)
    assert os.getxattr(box.t("a"), "user.from") == b"lower"


def test_modes_ownership_times_and_xattrs_round_trip(box):
    apply_bytes(box.target, tar_bytes(
        entry("bin", tarfile.DIRTYPE, mode=0o755, mtime=1_000_000),
        entry("bin/su", data=b"#!", mode=0o4755, uid=0, gid=0),
        entry("bin/sg", data=b"#!", mode=0o2711, uid=1000, gid=50),
        entry("bin/cap", data=b"#!", mode=0o755, pax_headers={
            "SCHILY.xattr.security.capability": CAP.decode("utf-8", "surrogateescape"),
            "SCHILY.xattr.user.bin": "\udcff\x00\x01",  # a binary value
            "SCHILY.xattr.trusted.evil": "x",  # admin attributes are dropped
        }),
        entry("tmp", tarfile.DIRTYPE, mode=0o1777, uid=3, gid=4, mtime=2_000_000,
              pax_headers={"SCHILY.xattr.user.dir": "d"}),
        entry("tmp/f", data=b"f", mode=0o640, uid=1234, gid=5678,
              pax_headers={"mtime": "1600000000.123456789", "atime": "1700000000.5"}),
        entry("tmp/link", tarfile.SYMTYPE, linkname="f", uid=77, gid=88, mtime=1_234_567),
        entry("old", data=b"o", pax_headers={"mtime": "-5"}),
    ))
    box.assert_outside_untouched()
    su, sg = os.lstat(box.t("bin/su")), os.lstat(box.t("bin/sg"))
    assert stat.S_IMODE(su.st_mode) == 0o4755
    assert stat.S_IMODE(sg.st_mode) == 0o2711 and (sg.st_uid, sg.st_gid) == (1000, 50)
    assert os.getxattr(box.t("bin/cap"), "security.capability") == CAP
    assert os.getxattr(box.t("bin/cap"), "user.bin") == b"\xff\x00\x01"
    assert "trusted.evil" not in os.listxattr(box.t("bin/cap"))
    tmp = os.lstat(box.t("tmp"))
    assert stat.S_IMODE(tmp.st_mode) == 0o1777 and (tmp.st_uid, tmp.st_gid) == (3, 4)
    # directory times are set after their contents were created
    assert tmp.st_mtime_ns == 2_000_000 * 10**9
    assert os.lstat(box.t("bin")).st_mtime_ns == 1_000_000 * 10**9
    assert os.getxattr(box.t("tmp"), "user.dir") == b"d"
    f = os.lstat(box.t("tmp/f"))
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (1234, 5678, 0o640)
    assert f.st_mtime_ns == 1_600_000_000_123_456_789
    assert f.st_atime_ns == 1_700_000_000_500_000_000  # the later of atime and mtime
    link = os.lstat(box.t("tmp/link"))
    assert (link.st_uid, link.st_gid, link.st_mtime_ns) == (77, 88, 1_234_567 * 10**9)
    assert os.lstat(box.t("old")).st_mtime_ns == 0  # before the epoch: clamped


def test_existing_directory_is_merged_not_replaced(box):
    os.makedirs(box.t("d"))
    with open(box.t("d", "keep"), "w") as f:
        f.write("k")
    apply_bytes(box.target, tar_bytes(entry("d", tarfile.DIRTYPE, mode=0o700, uid=9)))
    assert os.listdir(box.t("d")) == ["keep"]
    assert os.lstat(box.t("d")).st_uid == 9


def test_file_under_a_file_is_an_error(box):
    with pytest.raises(A.ArchiveError):
        apply_bytes(box.target, tar_bytes(entry("f", data=b"x"), entry("f/g", data=b"y")))
    box.assert_outside_untouched()


def test_stream_edge_cases(box):
    assert apply_bytes(box.target, b"") == 0  # an empty layer
    assert apply_bytes(box.target, b"\0" * 1024) == 0
    data = tar_bytes(entry("a", data=b"x" * 3000), entry("b", data=b"y"))
    with pytest.raises(A.ArchiveError, match="unexpected end of data"):
        apply_bytes(box.target, data[:2048])  # truncated inside a member
    with pytest.raises(A.ArchiveError, match="unexpected end of data"):
        apply_bytes(box.target, data[:2048], filter=lambda h: False)  # ... and skipped, not read
    with pytest.raises(A.ArchiveError, match="truncated header"):
        apply_bytes(box.target, data[:512 * 7 + 100])
    with pytest.raises(A.ArchiveError):
        apply_bytes(box.target, data[:512 * 8] + b"garbage!" * 192)  # corrupt third header
    with pytest.raises(A.ArchiveError, match="unhandled tar header type"):
        apply_bytes(box.target, tar_bytes(entry("c", tarfile.CONTTYPE)))
    # the counted size is the sum of the entries' sizes
    box.reset_target()
    assert apply_bytes(box.target, tar_bytes(entry("a", data=b"x" * 3000), entry("b", data=b"yy"))) == 3002
    box.assert_outside_untouched()


def test_filter_and_cancel(box):
    data = tar_bytes(entry("a", data=b"a"), entry("b", data=b"b"))
    apply_bytes(box.target, data, filter=lambda h: h.name != "b")
    assert os.listdir(box.target) == ["a"]
    with pytest.raises(A.Cancelled):
        apply_bytes(box.target, data, cancelled=lambda: True)


# -- fuzz ------------------------------------------------------------------------------------

COMPONENTS = ["..", ".", "a", "b", UNIQUE, "sentinel", "file", "tmp", ""]
LINK_TARGETS = ["/", "..", "../..", "../../..", "../../../sentinel", "a", "a/b", "/tmp", "/" + UNIQUE,
                None]  # None: the sentinel's absolute path


def _names():
    return st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=6).map("/".join) | st.sampled_from(
        ["/", "../../../sentinel/file", "../../../sentinel/dir/x", f"/tmp/{UNIQUE}", f"../../../../{UNIQUE}"])


@st.composite
def members(draw, sentinel: str):
    kind = draw(st.sampled_from(["file", "dir", "symlink", "hardlink", "whiteout", "opaque", "fifo"]))
    name = draw(_names())
    mode = draw(st.sampled_from([0o644, 0o777, 0o4755, 0o1777, 0o000]))
    if kind == "file":
        return entry(name, data=draw(st.binary(max_size=64)), mode=mode)
    if kind == "dir":
        return entry(name, tarfile.DIRTYPE, mode=mode)
    if kind == "fifo":
        return entry(name, tarfile.FIFOTYPE, mode=mode)
    if kind == "whiteout":
        d, _ = A.split(name)
        return entry(d + ".wh." + draw(st.sampled_from(COMPONENTS[2:-1] + ["..", ""])))
    if kind == "opaque":
        d, _ = A.split(name)
        return entry(d + ".wh..wh..opq")
    target = draw(st.sampled_from(LINK_TARGETS)) if kind == "symlink" else draw(_names())
    if target is None:
        target = sentinel + draw(st.sampled_from(["", "/file", "/dir"]))
    ltype = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
    return entry(name, ltype, linkname=target, mode=mode, uid=draw(st.sampled_from([0, 4242])))


@pytest.fixture(scope="module")
def fuzz_box():
    b = Sandbox()
    try:
        yield b
    finally:
        b.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_nothing_is_written_outside(fuzz_box, data):
    box = fuzz_box
    entries = data.draw(st.lists(members(box.sentinel), min_size=1, max_size=12))
    # whiteouts by removal, or as overlayfs' own markers (applying straight
    # into an upperdir, with a lowerdir for implied parents)
    overlay = data.draw(st.booleans())
    opts = {"convert_whiteout": A.overlay_convert_whiteout, "parents": [box.sentinel]} if overlay else {}
    box.reset_target()
    try:
        apply_bytes(box.target, tar_bytes(*entries), **opts)
    except (A.ArchiveError, OSError):
        pass  # refusing is fine; escaping is not
    box.assert_outside_untouched()


# -- write_diff ------------------------------------------------------------------------------


def _tree(root):
    """What a diff must carry, for comparing an applied copy to the upper."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            rec = [stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid]
            if not stat.S_ISDIR(s.st_mode):
                rec.append(s.st_mtime_ns // 10**9)
            if stat.S_ISLNK(s.st_mode):
                rec.append(os.readlink(p))
            elif stat.S_ISREG(s.st_mode):
                rec += [read(p), s.st_nlink, A._getxattr(p, "security.capability")]
            elif stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode):
                rec.append(s.st_rdev)
            out[os.path.relpath(p, root)] = rec
    return out


def _write(p, data, mode=0o644):
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    os.chmod(p, mode)


def _cp(src, dst):
    subprocess.run(["cp", "-a", src, dst], check=True)


def _make_lower_upper(work):
    lower, upper = os.path.join(work, "lower"), os.path.join(work, "upper")
    os.makedirs(lower)
    _write(f"{lower}/same", b"same")
    _write(f"{lower}/modified", b"old")
    _write(f"{lower}/deleted", b"bye")
    _write(f"{lower}/tree/a/b/c", b"deep")
    _write(f"{lower}/tree/x", b"x")
    _write(f"{lower}/dir2file/child", b"c")
    _write(f"{lower}/file2dir", b"f")
    _write(f"{lower}/chmod", b"m")
    _write(f"{lower}/chown", b"o")
    _write(f"{lower}/keepdir/k", b"k")
    _write(f"{lower}/opq/old1", b"1")
    _write(f"{lower}/opq/old2", b"2")
    _write(f"{lower}/hl/one", b"linked")
    os.link(f"{lower}/hl/one", f"{lower}/hl/two")
    os.symlink("same", f"{lower}/sym")
    _cp(lower, upper)
    _write(f"{upper}/modified", b"new content")
    os.unlink(f"{upper}/deleted")
    shutil.rmtree(f"{upper}/tree")
    shutil.rmtree(f"{upper}/dir2file")
    _write(f"{upper}/dir2file", b"now a file")
    os.unlink(f"{upper}/file2dir")
    _write(f"{upper}/file2dir/inner", b"now a dir")
    os.chmod(f"{upper}/chmod", 0o4750)
    os.chown(f"{upper}/chown", 1001, 1002)
    shutil.rmtree(f"{upper}/opq")
    _write(f"{upper}/opq/new", b"n")
    _write(f"{upper}/added/deep/file", b"added", 0o600)
    os.setxattr(f"{upper}/added/deep/file", "security.capability", CAP)
    _write(f"{upper}/hl/one", b"linked, changed")
    os.link(f"{upper}/hl/one", f"{upper}/hl/three")
    os.unlink(f"{upper}/sym")
    os.symlink("/elsewhere", f"{upper}/sym")
    os.mkfifo(f"{upper}/fifo", 0o620)
    if not A.running_in_userns():
        os.mknod(f"{upper}/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(f"{upper}/sock")  # sockets are never archived
    s.close()
    os.utime(f"{upper}/same", ns=(1, os.lstat(f"{lower}/same").st_mtime_ns))
    return lower, upper


def test_write_diff_then_apply_reproduces_upper(tmp_path):
    work = tempfile.mkdtemp(prefix="pycd-wd-", dir="/tmp")
    try:
        lower, upper = _make_lower_upper(work)
        buf = io.BytesIO()
        A.write_diff(buf, lower, upper)
        data = buf.getvalue()
        names = [m.name for m in tarfile.open(fileobj=io.BytesIO(data))]
        assert "same" not in names and "keepdir/k" not in names  # unchanged: not in the layer
        assert ".wh.deleted" in names and "tree" not in names and ".wh.tree" in names
        assert not any(n.startswith("tree/") for n in names)  # one whiteout for the whole tree
        assert "dir2file/.wh.child" not in names  # implied by the replacement
        assert {"opq/.wh.old1", "opq/.wh.old2"} <= set(names)  # no opaque marker, like containerd
        assert "sock" not in names
        by_name = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(data))}
        assert by_name["hl/three"].type == tarfile.LNKTYPE and by_name["hl/three"].linkname == "hl/one"
        assert by_name["added"].type == tarfile.DIRTYPE  # parents come first
        assert names.index("added") < names.index("added/deep") < names.index("added/deep/file")
        assert by_name["added/deep/file"].pax_headers["SCHILY.xattr.security.capability"].encode(
            "utf-8", "surrogateescape") == CAP

        applied = os.path.join(work, "applied")
        _cp(lower, applied)
        A.apply(applied, io.BytesIO(data))
        want = _tree(upper)
        del want["sock"]
        assert _tree(applied) == want
    finally:
        shutil.rmtree(work)


def test_write_diff_of_nothing_and_from_scratch():
    work = tempfile.mkdtemp(prefix="pycd-wd-", dir="/tmp")
    try:
        a = os.path.join(work, "a")
        _write(f"{a}/d/f", b"1")
        _write(f"{a}/g", b"2")
        buf = io.BytesIO()
        A.write_diff(buf, a, a)
        assert list(tarfile.open(fileobj=io.BytesIO(buf.getvalue()))) == []
        buf = io.BytesIO()
        A.write_diff(buf, "", a)
        assert [m.name for m in tarfile.open(fileobj=io.BytesIO(buf.getvalue()))] == ["d", "d/f", "g"]
        fresh = os.path.join(work, "fresh")
        os.mkdir(fresh)
        A.apply(fresh, io.BytesIO(buf.getvalue()))
        assert _tree(fresh) == _tree(a)
    finally:
        shutil.rmtree(work)


def test_changes_order_and_kinds():
    work = tempfile.mkdtemp(prefix="pycd-ch-", dir="/tmp")
    try:
        lo, up = os.path.join(work, "lo"), os.path.join(work, "up")
        _write(f"{lo}/a/x", b"1")
        _write(f"{lo}/a-b", b"1")
        _write(f"{lo}/z", b"1")
        _cp(lo, up)
        _write(f"{up}/a/y", b"2")
        os.unlink(f"{up}/z")
        got = [(A.CHANGE_NAMES[k], p) for k, p, _ in A.changes(lo, up)]
        # the separator sorts before "-": a's children come before a-b
        assert got == [("add", "/a/y"), ("delete", "/z")]
    finally:
        shutil.rmtree(work)


def test_awkward_names_round_trip():
    """Long (PAX path) and non-ASCII and non-UTF-8 names, long link
    targets and ids too big for the octal fields survive write_diff then
    apply."""
    work = tempfile.mkdtemp(prefix="pycd-nm-", dir="/tmp")
    try:
        up = os.path.join(work, "up")
        long_dir = os.path.join(up, *(["d" * 60] * 4))
        _write(os.path.join(long_dir, "f" * 120), b"long")
        _write(os.path.join(up, "ünïcødé"), b"u")
        raw = os.path.join(os.fsencode(up), b"bad-\xff-name")
        with open(raw, "wb") as f:
            f.write(b"bytes")
        os.chown(os.path.join(up, "ünïcødé"), 3_000_000, 4_000_000)
        os.symlink("t" * 300, os.path.join(up, "longlink"))
        buf = io.BytesIO()
        A.write_diff(buf, "", up)
        out = os.path.join(work, "out")
        os.mkdir(out)
        A.apply(out, io.BytesIO(buf.getvalue()))
        assert _tree(out) == _tree(up)
        assert os.lstat(os.path.join(out, "ünïcødé")).st_uid == 3_000_000
        assert os.path.exists(os.path.join(os.fsencode(out), b"bad-\xff-name"))
    finally:
        shutil.rmtree(work)
