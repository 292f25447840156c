"""The Diff service in a real in-process daemon: layers written into the
content store over gRPC, applied onto real snapshot mounts (overlayfs and
native, through the Snapshots service), and two mounts diffed back into the
content store."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile

import grpc
import pytest
import zstandard

from pycontainerd.api.services.content.v1 import content_pb2 as cpb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as cgrpc
from pycontainerd.api.services.diff.v1 import diff_pb2 as dpb
from pycontainerd.api.services.diff.v1 import diff_pb2_grpc as dgrpc
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as spb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as sgrpc
from pycontainerd.api.types import descriptor_pb2
from pycontainerd.testing import InProcessDaemon

OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_GZIP = OCI_TAR + "+gzip"
OCI_ZSTD = OCI_TAR + "+zstd"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(*entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, extra in entries:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mtime = 1_600_000_000
            ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            for k, v in extra.items():
                setattr(ti, k, v)
            if kind == tarfile.REGTYPE:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def F(name, data=b"", **extra):
    return (name, tarfile.REGTYPE, data, extra)


def D(name, **extra):
    return (name, tarfile.DIRTYPE, b"", extra)


def L(name, target, **extra):
    return (name, tarfile.SYMTYPE, b"", {"linkname": target, **extra})


class Api:
    def __init__(self, daemon: InProcessDaemon, namespace: str = "default"):
        self.client = daemon.client(namespace)
        self.dir = daemon.dir
        ch = self.client.channel
        self.md = (("containerd-namespace", namespace),)
        self.content = cgrpc.ContentStub(ch)
        self.snapshots = sgrpc.SnapshotsStub(ch)
        self.diff = dgrpc.DiffStub(ch)

    def write(self, data: bytes, ref: str) -> str:
        dgst = sha(data)
        reqs = [cpb.WriteContentRequest(action=cpb.WRITE, ref=ref, total=len(data), expected=dgst, data=data),
                cpb.WriteContentRequest(action=cpb.COMMIT, ref=ref, offset=len(data), total=len(data),
                                        expected=dgst)]
        try:
            list(self.content.Write(iter(reqs), metadata=self.md))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        return dgst

    def read(self, dgst: str) -> bytes:
        return b"".join(r.data for r in self.content.Read(cpb.ReadContentRequest(digest=dgst), metadata=self.md))

    def info(self, dgst: str):
        return self.content.Info(cpb.InfoRequest(digest=dgst), metadata=self.md).info

    def prepare(self, sn: str, key: str, parent: str = ""):
        return list(self.snapshots.Prepare(spb.PrepareSnapshotRequest(snapshotter=sn, key=key, parent=parent),
                                           metadata=self.md).mounts)

    def view(self, sn: str, key: str, parent: str):
        return list(self.snapshots.View(spb.ViewSnapshotRequest(snapshotter=sn, key=key, parent=parent),
                                        metadata=self.md).mounts)

    def commit(self, sn: str, name: str, key: str) -> None:
        self.snapshots.Commit(spb.CommitSnapshotRequest(snapshotter=sn, name=name, key=key), metadata=self.md)

    def apply(self, dgst: str, size: int, media_type: str, mounts):
        req = dpb.ApplyRequest(diff=descriptor_pb2.Descriptor(media_type=media_type, digest=dgst, size=size),
                               mounts=mounts)
        return self.diff.Apply(req, metadata=self.md).applied

    def compare(self, left, right, media_type: str = "", ref: str = "", labels=None):
        req = dpb.DiffRequest(left=left, right=right, media_type=media_type, ref=ref, labels=labels or {})
        return self.diff.Diff(req, metadata=self.md).diff


@pytest.fixture(scope="module")
def api():
    d = InProcessDaemon(config={"disabled_plugins": ["io.containerd.gc.v1.scheduler"]})
    d.start()
    try:
        a = Api(d)
        yield a
        a.client.close()
    finally:
        d.stop()


def mounted(mounts, target):
    """Mount a snapshot's mounts for reading, the way a user would."""
    for m in mounts:
        argv = ["mount", "-t", m.type, m.source, target]
        if m.options:
            argv += ["-o", ",".join(m.options)]
        subprocess.run(argv, check=True, capture_output=True)


def umount(target):
    subprocess.run(["umount", target], check=False, capture_output=True)


def assert_no_temp_mounts(api):
    tmp = os.path.join(api.dir, "state", "io.containerd.differ.v1.walking", "mounts")
    assert os.path.isdir(tmp) and os.listdir(tmp) == []
    with open("/proc/self/mounts") as f:
        assert tmp not in f.read()


def listing(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "-> " + os.readlink(p)
            elif os.path.isdir(p):
                out[rel] = "dir"
            else:
                with open(p, "rb") as f:
                    out[rel] = f.read()
    return out


LAYER1 = tar_of(D("etc"), F("etc/hostname", b"box\n"), F("etc/gone", b"x"), D("opt"), F("opt/a", b"a"),
                F("opt/b", b"b"), L("bin", "usr/bin"), D("usr"), D("usr/bin"), F("usr/bin/sh", b"#!", mode=0o4755))
LAYER2 = tar_of(D("etc"), F("etc/.wh.gone"), D("opt"), F("opt/.wh..wh..opq"), F("opt/c", b"c"),
                F("etc/new", b"new"))
AFTER2 = {"etc": "dir", "etc/hostname": b"box\n", "etc/new": b"new", "opt": "dir", "opt/c": b"c",
          "bin": "-> usr/bin", "usr": "dir", "usr/bin": "dir", "usr/bin/sh": b"#!"}


@pytest.mark.parametrize("sn", ["overlayfs", "native"])
def test_apply_layers_then_diff_back(api, sn, tmp_path):
    target = str(tmp_path / "mnt")
    os.makedirs(target)
    gz1 = gzip.compress(LAYER1)
    d1 = api.write(gz1, f"{sn}-layer1")
    mounts = api.prepare(sn, f"{sn}-k1")
    applied = api.apply(d1, len(gz1), OCI_GZIP, mounts)
    # the applied descriptor is the uncompressed tar: its digest is the diff ID
    assert (applied.media_type, applied.digest, applied.size) == (OCI_TAR, sha(LAYER1), len(LAYER1))
    api.commit(sn, f"{sn}-l1", f"{sn}-k1")

    zs2 = zstandard.ZstdCompressor().compress(LAYER2)
    d2 = api.write(zs2, f"{sn}-layer2")
    mounts2 = api.prepare(sn, f"{sn}-k2", f"{sn}-l1")
    applied2 = api.apply(d2, len(zs2), OCI_ZSTD, mounts2)
    assert applied2.digest == sha(LAYER2)

    mounted(mounts2, target)
    try:
        got = listing(target)
        assert got == AFTER2
        assert os.stat(os.path.join(target, "usr/bin/sh")).st_mode & 0o7777 == 0o4755
    finally:
        umount(target)

    # Diff the parent (a view) against the active snapshot: the layer that
    # turns one into the other, gzip by default, labelled with its diff ID
    lower = api.view(sn, f"{sn}-v1", f"{sn}-l1")
    desc = api.compare(lower, mounts2, ref=f"{sn}-diff", labels={"x": "y"})
    assert desc.media_type == OCI_GZIP
    blob = api.read(desc.digest)
    assert sha(blob) == desc.digest and len(blob) == desc.size
    raw = gzip.decompress(blob)
    info = api.info(desc.digest)
    assert info.labels["containerd.io/uncompressed"] == sha(raw)
    assert info.labels["x"] == "y"
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(raw))]
    assert "etc/.wh.gone" in names and "opt/.wh.a" in names and "opt/.wh.b" in names
    assert "opt/c" in names and "etc/new" in names and "etc/hostname" not in names

    # applying that layer onto the parent gives the same tree back
    mounts3 = api.prepare(sn, f"{sn}-k3", f"{sn}-l1")
    applied3 = api.apply(desc.digest, desc.size, OCI_GZIP, mounts3)
    assert applied3.digest == sha(raw)
    mounted(mounts3, target)
    try:
        assert listing(target) == AFTER2
    finally:
        umount(target)

    # uncompressed diffs carry no label
    plain = api.compare(lower, mounts2, media_type=OCI_TAR)
    assert plain.media_type == OCI_TAR
    assert "containerd.io/uncompressed" not in api.info(plain.digest).labels
    plain_names = [m.name for m in tarfile.open(fileobj=io.BytesIO(api.read(plain.digest)))]
    assert plain_names == names

    # nothing is left mounted or behind in the differ's temp directory
    assert_no_temp_mounts(api)


def test_apply_media_types_and_errors(api):
    layer = tar_of(F("hello", b"world"))
    mounts = api.prepare("native", "mt-k")
    # docker's layer types: gzip declared, and plain tar that is gzip anyway
    gz = gzip.compress(layer)
    dg = api.write(gz, "mt-gz")
    assert api.apply(dg, len(gz), DOCKER_GZIP, mounts).digest == sha(layer)
    assert api.apply(dg, len(gz), "application/vnd.docker.image.rootfs.diff.tar", mounts).digest == sha(layer)
    dp = api.write(layer, "mt-plain")
    assert api.apply(dp, len(layer), OCI_TAR, mounts).size == len(layer)

    with pytest.raises(grpc.RpcError) as e:
        api.apply(sha(b"missing"), 7, OCI_GZIP, mounts)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "failed to get reader from content store" in e.value.details()

    with pytest.raises(grpc.RpcError) as e:
        api.apply(dp, len(layer), "application/x-nope", mounts)
    assert e.value.code() == grpc.StatusCode.UNKNOWN
    assert "no processor for media-type" in e.value.details()

    with pytest.raises(grpc.RpcError) as e:
        api.compare(mounts, mounts, media_type="application/x-nope")
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "unsupported diff media type" in e.value.details()

    # a malicious layer through the service: confined, and refused where
    # containerd refuses
    evil = tar_of(L("evil", "/"), F("evil/tmp/pycd-evil-escape", b"x"), F("../../pycd-evil-escape2", b"y"))
    de = api.write(evil, "mt-evil")
    api.apply(de, len(evil), OCI_TAR, mounts)
    assert not os.path.exists("/tmp/pycd-evil-escape") and not os.path.exists("/pycd-evil-escape2")
    bad = tar_of(F(".wh.."))
    db = api.write(bad, "mt-bad")
    with pytest.raises(grpc.RpcError) as e:
        api.apply(db, len(bad), OCI_TAR, mounts)
    assert "invalid whiteout name" in e.value.details()
    assert_no_temp_mounts(api)  # unmounted after the failure too


def test_broken_layers_are_answered_in_gos_words(api):
    """A layer cut short, corrupt or with an owner no system call takes:
    code Unknown and the words Go's libraries use (what containerd sends),
    never Python's ("Compressed file ended before the end-of-stream marker
    was reached", "Error -3 while decompressing", "uid is greater than
    maximum")."""
    mounts = api.prepare("native", "broken-k")
    layer = tar_of(F("hello", b"world" * 1000))
    gz = gzip.compress(layer)
    crc_broken = bytearray(gz)
    crc_broken[-8] ^= 0xFF
    deflate_broken = bytearray(gz)
    deflate_broken[20:40] = b"\xff" * 20
    huge_owner = tar_of(F("owned", b"x", uid=1 << 40, gid=1 << 40))
    cases = [
        (gz[:-20], OCI_GZIP, "unexpected EOF"),
        (bytes(crc_broken), OCI_GZIP, "gzip: invalid checksum"),
        (bytes(deflate_broken), OCI_GZIP, "flate: corrupt input"),
        (huge_owner, OCI_TAR, 'for UID 1099511627776, GID 1099511627776: invalid argument'),
    ]
    for i, (data, media_type, words) in enumerate(cases):
        dg = api.write(data, f"broken-{i}")
        with pytest.raises(grpc.RpcError) as e:
            api.apply(dg, len(data), media_type, mounts)
        assert e.value.code() == grpc.StatusCode.UNKNOWN
        assert e.value.details().endswith(words), e.value.details()  # Go's errno words are lower case
    assert_no_temp_mounts(api)


def test_namespaces_are_separate(api):
    layer = tar_of(F("f", b"1"))
    dgst = api.write(layer, "ns-layer")
    other = Api.__new__(Api)
    other.__dict__.update(api.__dict__)
    other.md = (("containerd-namespace", "elsewhere"),)
    mounts = other.prepare("native", "ns-k")
    with pytest.raises(grpc.RpcError) as e:
        other.apply(dgst, len(layer), OCI_TAR, mounts)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # a diff written in that namespace is visible there only
    desc = other.compare([], mounts, media_type=OCI_TAR)
    assert other.info(desc.digest).size == desc.size
    with pytest.raises(grpc.RpcError) as e:
        api.info(desc.digest)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_differ_order_is_configured():
    cfg = {"plugins": {"io.containerd.service.v1.diff-service": {"default": ["walking", "nope"]}}}
    with InProcessDaemon(config=cfg) as d:
        rows = {p.uri: p for p in d.client().plugins()}
    svc = rows["io.containerd.service.v1.diff-service"]
    assert svc.status == "error" and "needed differ not loaded: nope" in svc.init_err[1]
    assert rows["io.containerd.differ.v1.walking"].status == "ok"
