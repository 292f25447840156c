"""The applier's own tar reader (plugins/differ/tarstream.py) against
archives written by Python's tarfile and by GNU tar: every header format
it meets in layers, the limits it keeps on hostile headers, the hand-over
to tarfile for sparse members, and the applier's create-first paths
(something already in the way of a file, a directory or a symlink)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile

import pytest

from pycontainerd.plugins.differ import archive as A
from pycontainerd.plugins.differ import tarstream as T


def member(name, kind=tarfile.REGTYPE, data=b"", **attrs):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    ti.mtime = attrs.pop("mtime", 1_600_000_000)
    for k, v in attrs.items():
        setattr(ti, k, v)
    return ti, (data if kind == tarfile.REGTYPE else None)


def tar_bytes(*members, format=tarfile.PAX_FORMAT, pax_headers=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=format, pax_headers=pax_headers) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def read_all(data: bytes) -> list[tuple[T.Member, bytes]]:
    r = T.TarReader(io.BytesIO(data))
    out = []
    while (m := r.next()) is not None:
        body = b""
        if m.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            src = r.data(m)
            while chunk := src.read(7):
                body += chunk
        out.append((m, body))
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_every_format_reads_as_tarfile_does(fmt):
    long = "d/" + "n" * 90 + "/" + "m" * 120  # past the 100 bytes of a name field
    members = [member("d", tarfile.DIRTYPE, mode=0o750, uid=3, gid=4),
               member("d/f", data=b"x" * 1000, mode=0o640, uid=5, gid=6, mtime=1_234_567_890),
               member("d/l", tarfile.SYMTYPE, linkname="f"),
               member("d/h", tarfile.LNKTYPE, linkname="d/f"),
               member("d/c", tarfile.CHRTYPE, devmajor=1, devminor=3),
               member("d/p", tarfile.FIFOTYPE)]
    if fmt != tarfile.USTAR_FORMAT:  # ustar cannot hold a 214-byte name without a slash fit
        members.append(member(long, data=b"long"))
        members.append(member("d/ll", tarfile.SYMTYPE, linkname="t" * 150))
    data = tar_bytes(*members, format=fmt)
    got = read_all(data)
    want = list(tarfile.open(fileobj=io.BytesIO(data)))
    assert [m.name for m, _ in got] == [w.name for w in want]
    for (m, body), w in zip(got, want):
        assert (m.type, m.mode, m.uid, m.gid, m.size, m.mtime, m.linkname, m.devmajor, m.devminor) == (
            w.type, w.mode, w.uid, w.gid, w.size, int(w.mtime), w.linkname, w.devmajor, w.devminor)
    assert dict((m.name, b) for m, b in got)["d/f"] == b"x" * 1000


def test_base256_numbers_and_pax_overrides():
    big = member("big", data=b"b", uid=3_000_000, gid=2**31 - 2)  # past 7 octal digits: base-256 in GNU
    (m, body), = read_all(tar_bytes(big, format=tarfile.GNU_FORMAT))
    assert (m.uid, m.gid, body) == (3_000_000, 2**31 - 2, b"b")
    pax = member("short", data=b"p", pax_headers={"path": "a/longer/name", "uid": "70000000",
                                                  "SCHILY.xattr.user.k": "v"})
    (m, body), = read_all(tar_bytes(pax))
    assert (m.name, m.uid, m.pax_headers["SCHILY.xattr.user.k"], body) == ("a/longer/name", 70000000, "v", b"p")


def test_global_headers_are_ignored_as_containerd_does(tmp_path):
    data = tar_bytes(member("a", data=b"1"), member("b", data=b"2"),
                     pax_headers={"path": "everything-renamed", "comment": "global"})
    assert [(m.name, body) for m, body in read_all(data)] == [("a", b"1"), ("b", b"2")]
    A.apply(str(tmp_path), io.BytesIO(data))
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_hostile_headers_are_refused():
    big_pax = member("x", data=b"", pax_headers={"comment": "z" * (T.MAX_SPECIAL_FILE + 10)})
    with pytest.raises(T.StreamError, match="header field too long"):
        read_all(tar_bytes(big_pax))
    good = tar_bytes(member("a", data=b"1"), member("b", data=b"2", pax_headers={"comment": "abc"}))
    broken = bytearray(good)
    i = broken.index(b" comment=abc\n") - 2  # the record's length digits
    broken[i:i + 2] = b"99"
    with pytest.raises(T.StreamError, match="invalid tar header"):
        read_all(bytes(broken))
    negative = bytearray(tar_bytes(member("n", data=b"")))
    negative[124:136] = b"\xff" * 12  # base-256 size -1
    chk = sum(negative[:148]) + 256 + sum(negative[156:512])
    negative[148:156] = b"%06o\x00 " % chk
    with pytest.raises(T.StreamError, match="archive/tar: invalid header"):
        read_all(bytes(negative))


def test_cut_streams_say_where():
    data = tar_bytes(member("a", data=b"x" * 3000), member("b", data=b"y"))
    with pytest.raises(T.StreamError, match="unexpected end of data"):
        read_all(data[:512 + 3000])  # the data is there, its block padding is not
    with pytest.raises(T.StreamError, match="invalid tar header: truncated header"):
        read_all(data[:512 + 3072 + 100])
    with pytest.raises(T.StreamError, match="archive/tar: truncated header"):
        read_all(data[:100])
    whole = [(m.name, body) for m, body in read_all(data)]
    assert whole == [("a", b"x" * 3000), ("b", b"y")]
    assert [(m.name, body) for m, body in read_all(data[:512 + 3072 + 1024])] == whole  # no end blocks
    assert read_all(b"") == []


def test_sparse_member_hands_over_to_tarfile(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "a", "wb") as f:
        f.write(b"first")
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(1 << 20)
        f.write(b"tail")
    with open(src / "z", "wb") as f:
        f.write(b"after")
    layer = tmp_path / "layer.tar"
    for fmt in ("gnu", "posix"):
        subprocess.run(["tar", "--sparse", f"--format={fmt}", "-cf", str(layer), "-C", str(src), "a", "sparse", "z"],
                       check=True)
        root = tmp_path / f"root-{fmt}"
        root.mkdir()
        with open(layer, "rb") as f:
            A.apply(str(root), f)
        assert (root / "a").read_bytes() == b"first"
        body = (root / "sparse").read_bytes()
        assert len(body) == (1 << 20) + 4 and body.startswith(b"head") and body.endswith(b"tail")
        assert body[4:1 << 20] == bytes((1 << 20) - 4)
        assert (root / "z").read_bytes() == b"after"


def test_whatever_is_in_the_way_is_replaced(tmp_path):
    root = str(tmp_path / "root")
    os.mkdir(root)
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    layer1 = tar_bytes(member("d", tarfile.DIRTYPE), member("d/inner", data=b"i"),
                       member("f", data=b"old"), member("s", tarfile.SYMTYPE, linkname=str(outside)),
                       member("e", tarfile.DIRTYPE, mode=0o700))
    A.apply(root, io.BytesIO(layer1))
    layer2 = tar_bytes(member("d", data=b"now a file", mode=0o600),  # a directory, full, in the way
                       member("f", tarfile.SYMTYPE, linkname="elsewhere"),  # a file in the way of a symlink
                       member("s", data=b"not through the link", mode=0o644),  # a symlink in the way of a file
                       member("e", tarfile.DIRTYPE, mode=0o755, uid=7))  # a directory: merged, attributes set
    A.apply(root, io.BytesIO(layer2))
    assert open(os.path.join(root, "d"), "rb").read() == b"now a file"
    assert os.readlink(os.path.join(root, "f")) == "elsewhere"
    assert not os.path.islink(os.path.join(root, "s"))
    assert open(os.path.join(root, "s"), "rb").read() == b"not through the link"
    assert outside.read_bytes() == b"keep"
    st = os.lstat(os.path.join(root, "e"))
    assert (st.st_mode & 0o7777, st.st_uid) == (0o755, 7)
