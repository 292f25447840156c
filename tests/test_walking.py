"""The walking differ's pieces that need no daemon: media types, stream
decompression as containerd's DecompressStream does it, the diff ID over
trailing data, mount option rewriting, and temp mounts that always unmount."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile

import pytest
import zstandard

from pycontainerd.plugins.differ import archive, walking as W


class FakeRA:
    """Stands in for a content ReaderAt (positioned reads over bytes)."""

    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)

    def read_at_sync(self, offset: int, n: int) -> bytes:
        return self.data[offset:offset + min(n, 4096)]  # short reads, like a real file may give


def layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("hello")
        data = os.urandom(100_000)
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def uncompressed(blob: bytes, media_type: str) -> bytes:
    return _read_all(W.decompress_stream(W._ReaderAtStream(FakeRA(blob)), media_type))


def _read_all(r) -> bytes:
    out = bytearray()
    while True:
        chunk = r.read(1 << 16)
        if not chunk:
            return bytes(out)
        out += chunk


@pytest.mark.parametrize("media_type,want", [
    (W.MEDIA_TYPE_LAYER, ""),
    (W.MEDIA_TYPE_LAYER_GZIP, "gzip"),
    (W.MEDIA_TYPE_LAYER_ZSTD, "zstd"),
    (W.MEDIA_TYPE_LAYER + "+encrypted", ""),
    (W.MEDIA_TYPE_LAYER_NONDIST + "+gzip", "gzip"),
    (W.DOCKER_LAYER, "unknown"),
    (W.DOCKER_LAYER_GZIP, "gzip"),
    (W.DOCKER_LAYER_FOREIGN_GZIP, "gzip"),
    (W.DOCKER_LAYER_GZIP + "+encrypted", ""),
])
def test_diff_compression_table(media_type, want):
    assert W.diff_compression(media_type) == want


def test_unknown_media_type():
    with pytest.raises(Exception, match="unrecognised mediatype"):
        W.diff_compression("application/json")
    with pytest.raises(archive.ArchiveError, match="no processor for media-type"):
        W.decompress_stream(W._ReaderAtStream(FakeRA(b"")), "application/json")


def test_decompression_by_magic():
    tar = layer()
    two_members = gzip.compress(tar[:5000]) + gzip.compress(tar[5000:])
    cctx = zstandard.ZstdCompressor()
    skippable = (0x184D2A5A).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"skip"
    two_frames = skippable + cctx.compress(tar[:7000]) + cctx.compress(tar[7000:])
    assert uncompressed(two_members, W.MEDIA_TYPE_LAYER_GZIP) == tar
    assert uncompressed(two_frames, W.MEDIA_TYPE_LAYER_ZSTD) == tar
    # the declared compression is only a hint: the magic number decides
    assert uncompressed(two_frames, W.MEDIA_TYPE_LAYER_GZIP) == tar
    assert uncompressed(gzip.compress(tar), W.DOCKER_LAYER) == tar
    assert uncompressed(tar, W.DOCKER_LAYER) == tar
    # a plain-tar media type is never decompressed
    assert uncompressed(gzip.compress(tar), W.MEDIA_TYPE_LAYER) == gzip.compress(tar)
    assert W.detect_compression(b"") == ""


def test_diff_id_covers_trailing_data():
    tar = layer() + b"\0" * 4096 + b"trailing"
    root = tempfile.mkdtemp(prefix="pycd-wk-", dir="/tmp")
    try:
        d = W.WalkingDiff(None)
        desc = d._apply_sync(W.Descriptor(W.MEDIA_TYPE_LAYER_GZIP, "", 0), [
            W.Mount("bind", root, ["rbind", "rw"])], FakeRA(gzip.compress(tar)), lambda: False)
        assert desc.digest == "sha256:" + hashlib.sha256(tar).hexdigest()
        assert desc.size == len(tar) and desc.media_type == W.MEDIA_TYPE_LAYER
        assert os.path.getsize(os.path.join(root, "hello")) == 100_000
    finally:
        os.unlink(os.path.join(root, "hello"))
        os.rmdir(root)


def test_readonly_mounts_and_overlay_paths():
    ov = W.Mount("overlay", "overlay", ["index=off", "workdir=/s/2/work", "upperdir=/s/2/fs", "lowerdir=/s/1/fs"])
    assert W.readonly_mounts([ov])[0].options == ["index=off", "lowerdir=/s/2/fs:/s/1/fs"]
    assert W.readonly_mounts([W.Mount("bind", "/x", ["rbind", "rw"])])[0].options == ["rbind", "ro"]
    assert W.overlay_paths(ov.options) == ("/s/2/fs", ["/s/1/fs"])
    assert W.overlay_paths(["lowerdir=/a:/b"]) is None


def _mounts_under(prefix: str) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line for line in f if prefix in line]


def test_temp_mount_always_unmounts(tmp_path):
    src = tempfile.mkdtemp(prefix="pycd-src-", dir="/tmp")
    tmp = tempfile.mkdtemp(prefix="pycd-tm-", dir="/tmp")
    try:
        with open(os.path.join(src, "f"), "w") as f:
            f.write("x")
        seen = []

        def boom(root):
            seen.append(os.listdir(root))
            raise ValueError("inside")

        with pytest.raises(archive.ArchiveError, match="mount callback failed on .*: inside"):
            W.with_temp_mount([W.Mount("bind", src, ["rbind", "ro"])], boom, tmp)
        assert seen == [["f"]]
        assert os.listdir(tmp) == [] and not _mounts_under(tmp)
        assert os.path.exists(os.path.join(src, "f"))  # nothing removed through the mount

        with pytest.raises(archive.ArchiveError, match="failed to mount"):
            W.with_temp_mount([W.Mount("bind", src, ["rbind"]), W.Mount("nosuchfs", "none", [])],
                              lambda root: None, tmp)
        assert os.listdir(tmp) == [] and not _mounts_under(tmp)
        # a read-only temp mount really is read-only
        with pytest.raises(archive.ArchiveError, match="read-only file system"):
            W.with_temp_mount(W.readonly_mounts([W.Mount("bind", src, ["rbind", "rw"])]),
                              lambda root: open(os.path.join(root, "g"), "w"), tmp)
        assert not os.path.exists(os.path.join(src, "g"))
    finally:
        os.rmdir(tmp)
        os.unlink(os.path.join(src, "f"))
        os.rmdir(src)
