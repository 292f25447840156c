"""The real `ctr` manages images on pycontainerd: `images import` of an OCI
image-layout tar the test builds (content, leases, images, diff and
snapshots driven exactly as containerd's client drives them, unpack
included), `images ls`, `check`, `tag`, `export` (and the export imported
again), `label`, `mount`/`unmount`, `rm`, a sync removal whose garbage
collection takes the blobs and the unpacked snapshot only once no tag holds
them, and `push`/`pull --plain-http` through Debian's docker-registry."""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time

import pytest

from e2e_support import STOP_TIMEOUT
from pycontainerd.client.client import Client
from pycontainerd.client.images import Images
from pycontainerd.pkg.imagestore import Image
from pycontainerd.pkg.oci.descriptor import Descriptor

pytestmark = pytest.mark.e2e

CONTENT_ROOT = "io.containerd.content.v1.content"
NAME = "docker.io/library/tiny:1"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class OCIImage:
    """A one-layer OCI image layout, written as a tar: a gzip layer, its
    config, the manifest, index.json naming it, and oci-layout."""

    def __init__(self, name: str = NAME, files: dict[str, bytes] | None = None):
        self.layer_tar = _tar(files or {"hello.txt": b"hello from a layer\n", "etc/motd": b"tiny\n"})
        self.layer = gzip.compress(self.layer_tar, mtime=0)
        self.diff_id = _digest(self.layer_tar)
        self.config = json.dumps({
            "architecture": ARCH, "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [self.diff_id]},
        }).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _digest(self.config), "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": _digest(self.layer), "size": len(self.layer)}],
        }).encode()
        self.index = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": MANIFEST, "digest": _digest(self.manifest), "size": len(self.manifest),
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1"},
                "platform": {"architecture": ARCH, "os": "linux"},
            }],
        }).encode()

    @property
    def blobs(self) -> list[bytes]:
        return [self.manifest, self.config, self.layer]

    def write(self, path: str) -> str:
        members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": self.index}
        members.update({"blobs/sha256/" + _digest(b)[7:]: b for b in self.blobs})
        with open(path, "wb") as f:
            f.write(_tar(members))
        return path


def _rows(out: bytes) -> list[list[str]]:
    return [line.split() for line in out.decode().splitlines()[1:] if line.strip()]


def _on_disk(d, data: bytes) -> bool:
    return os.path.exists(os.path.join(d.root, CONTENT_ROOT, "blobs", "sha256", _digest(data)[7:]))


@pytest.fixture
def image(daemon):
    d = daemon()
    img = OCIImage()
    return d, img, img.write(os.path.join(d.dir, "tiny.tar"))


@pytest.mark.parametrize("snapshotter", ["native", "overlayfs"])
def test_ctr_imports_and_unpacks_an_oci_layout_then_lists_and_checks_it(image, snapshotter):
    d, img, path = image
    out = d.ctr("images", "import", "--snapshotter", snapshotter, path)
    assert out.stdout.decode() == f"unpacking {NAME} ({_digest(img.manifest)})...done\n"
    rows = _rows(d.ctr("images", "ls").stdout)
    assert rows == [[NAME, MANIFEST, _digest(img.manifest), *rows[0][3:5], f"linux/{ARCH}", "-"]]
    assert " ".join(rows[0][3:5]) == f"{float(sum(map(len, img.blobs))):.1f} B"
    check = _rows(d.ctr("images", "check", "--snapshotter", snapshotter).stdout)
    assert [r[0] for r in check] == [NAME]
    assert check[0][3:5] == ["complete", "(2/2)"] and check[0][-1] == "true"
    # one layer: its chain id is its diff id, committed in the snapshotter
    snaps = _rows(d.ctr("snapshots", "--snapshotter", snapshotter, "ls").stdout)
    assert snaps == [[img.diff_id, "Committed"]]
    if snapshotter == "native":
        found = glob.glob(os.path.join(d.root, "io.containerd.snapshotter.v1.native", "snapshots", "*", "hello.txt"))
        assert [open(p, "rb").read() for p in found] == [b"hello from a layer\n"]
    # what containerd's unpacker records, so later pulls and GC see it
    labels = {r[0]: r[-1] for r in _rows(d.ctr("content", "ls").stdout)}
    assert f"containerd.io/uncompressed={img.diff_id}" in labels[_digest(img.layer)]
    assert f"containerd.io/gc.ref.snapshot.{snapshotter}={img.diff_id}" in labels[_digest(img.config)]


def test_ctr_tag_label_and_filter(image):
    d, img, path = image
    d.ctr("images", "import", "--no-unpack", path)
    assert d.ctr("images", "tag", NAME, "docker.io/library/tiny:2").stdout == b"docker.io/library/tiny:2\n"
    assert d.ctr("images", "ls", "-q").stdout == f"{NAME}\ndocker.io/library/tiny:2\n".encode()
    out = d.ctr("images", "tag", NAME, "docker.io/library/tiny:2", check=False)
    assert out.returncode != 0 and b'image "docker.io/library/tiny:2": already exists' in out.stderr
    out = d.ctr("images", "tag", "docker.io/library/missing:1", "x", check=False)
    assert out.returncode != 0 and b'image "docker.io/library/missing:1": not found' in out.stderr
    assert d.ctr("images", "label", NAME, "team=a").stdout == b"team=a\n"
    assert d.ctr("images", "ls", "-q", "labels.team==a").stdout == f"{NAME}\n".encode()
    assert d.ctr("images", "ls", "-q", "name~=tiny:2$").stdout == b"docker.io/library/tiny:2\n"
    out = d.ctr("images", "ls", "-q", "name==", check=False)
    assert out.returncode != 0 and b"filters: parse error" in out.stderr


def test_ctr_rm_sync_collects_blobs_and_snapshots_only_once_no_tag_holds_them(image):
    d, img, path = image
    d.ctr("images", "import", "--snapshotter", "native", path)
    d.ctr("images", "tag", NAME, "docker.io/library/tiny:2")
    assert d.ctr("images", "rm", "--sync", NAME).stdout == f"{NAME}\n".encode()
    # the tagged copy holds the manifest, and through its labels the rest
    assert all(_on_disk(d, b) for b in img.blobs)
    assert len(_rows(d.ctr("snapshots", "--snapshotter", "native", "ls").stdout)) == 1
    d.ctr("images", "rm", "--sync", "docker.io/library/tiny:2")
    assert not any(_on_disk(d, b) for b in img.blobs)
    assert _rows(d.ctr("content", "ls").stdout) == []
    assert _rows(d.ctr("snapshots", "--snapshotter", "native", "ls").stdout) == []
    out = d.ctr("images", "rm", "docker.io/library/tiny:2")  # ctr warns and goes on, as with containerd
    assert b'docker.io/library/tiny:2: image not found' in out.stderr


def test_ctr_export_writes_a_layout_that_imports_again(image):
    d, img, path = image
    d.ctr("images", "import", "--no-unpack", path)
    exported = os.path.join(d.dir, "out.tar")
    d.ctr("images", "export", exported, NAME)
    with tarfile.open(exported) as t:
        names = set(t.getnames())
        index = json.load(t.extractfile("index.json"))
        for blob in img.blobs:
            assert t.extractfile("blobs/sha256/" + _digest(blob)[7:]).read() == blob
    assert {"oci-layout", "index.json"} <= names
    [entry] = index["manifests"]
    assert entry["digest"] == _digest(img.manifest)
    assert entry["annotations"]["io.containerd.image.name"] == NAME
    out = d.ctr("-n", "again", "images", "import", "--snapshotter", "native", exported)
    assert out.stdout.decode() == f"unpacking {NAME} ({_digest(img.manifest)})...done\n"
    assert d.ctr("-n", "again", "images", "ls", "-q").stdout == f"{NAME}\n".encode()


def test_ctr_mounts_an_image_and_unmount_rm_removes_its_snapshot(image):
    # ctr 1.6's mount and unmount read --snapshotter from the global flags,
    # which have none: they always use containerd's default, overlayfs (and
    # unpack there first if need be)
    d, img, path = image
    snapshotter = "overlayfs"
    d.ctr("images", "import", "--snapshotter", "native", path)
    target = os.path.join(d.dir, "mnt")
    os.mkdir(target)
    assert d.ctr("images", "mount", NAME, target).stdout.decode() == f"{img.diff_id}\n{target}\n"
    try:
        with open(os.path.join(target, "hello.txt"), "rb") as f:
            assert f.read() == b"hello from a layer\n"
        assert len(_rows(d.ctr("snapshots", "--snapshotter", snapshotter, "ls").stdout)) == 2
        # the read-only view is held by a lease named after the mount point
        assert [r[0] for r in _rows(d.ctr("leases", "ls").stdout)] == [target]
    finally:
        d.ctr("images", "unmount", "--rm", target)
    assert not os.path.ismount(target)
    assert _rows(d.ctr("snapshots", "--snapshotter", snapshotter, "ls").stdout) == [[img.diff_id, "Committed"]]
    assert _rows(d.ctr("leases", "ls").stdout) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def registry(daemon):
    """Debian's docker-registry on 127.0.0.1 (plain HTTP), stopped by pid."""
    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.skip("docker-registry is not installed")
    d = daemon.tempdir()
    port = _free_port()
    with open(os.path.join(d, "config.yml"), "w") as f:
        f.write(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n"
                f"http:\n  addr: 127.0.0.1:{port}\n")
    with open(os.path.join(d, "log"), "wb") as log:
        proc = subprocess.Popen([exe, "serve", os.path.join(d, "config.yml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "docker-registry did not start"
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(STOP_TIMEOUT)


def test_ctr_pushes_to_a_registry_and_pulls_back_into_another_namespace(image, registry):
    d, img, path = image
    ref = f"{registry}/tiny:1"
    d.ctr("images", "import", "--no-unpack", path)
    d.ctr("images", "tag", NAME, ref)
    d.ctr("images", "push", "--plain-http", ref)
    d.ctr("-n", "pulled", "images", "pull", "--plain-http", "--snapshotter", "native", ref)
    check = _rows(d.ctr("-n", "pulled", "images", "check", "--snapshotter", "native").stdout)
    assert [(r[0], r[2], r[-1]) for r in check] == [(ref, _digest(img.manifest), "true")]
    infos = {r[0] for r in _rows(d.ctr("-n", "pulled", "content", "ls").stdout)}
    assert infos == {_digest(b) for b in img.blobs}


def test_pyctr_images_ls_tag_rm_print_what_ctr_prints(image):
    d, img, path = image
    d.ctr("images", "import", "--no-unpack", path)
    # an index naming two platforms, over the same manifest, as a second image
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": MANIFEST, "digest": _digest(img.manifest), "size": len(img.manifest),
         "platform": {"architecture": arch, "os": "linux"}} for arch in (ARCH, "s390x")]}).encode()
    d.ctr("content", "ingest", "--expected-digest", _digest(index), "--expected-size", str(len(index)), "idx",
          input=index)
    with Client(address=d.address, namespace="default") as client:
        Images(client).create(Image("docker.io/library/multi:1", Descriptor(
            "application/vnd.oci.image.index.v1+json", _digest(index), len(index))))
    assert d.pyctr("images", "tag", NAME, "docker.io/library/tiny:2", "docker.io/library/tiny:3").stdout == \
        b"docker.io/library/tiny:2\ndocker.io/library/tiny:3\n"
    d.ctr("images", "label", "docker.io/library/tiny:2", "team=a", "z=1")
    for args in (("images", "ls"), ("images", "ls", "-q"), ("images", "ls", "labels.team==a"),
                 ("images", "ls", "name~=tiny:[13]$")):
        assert d.pyctr(*args).stdout == d.ctr(*args).stdout, args
    out = d.pyctr("images", "tag", NAME, "docker.io/library/tiny:2", check=False)
    assert out.returncode == 1 and b'image "docker.io/library/tiny:2": already exists' in out.stderr
    assert d.pyctr("images", "tag", "--force", NAME, "docker.io/library/tiny:2").stdout == b"docker.io/library/tiny:2\n"
    out = d.pyctr("images", "rm", "--sync", "docker.io/library/nope:1", "docker.io/library/tiny:2", NAME)
    assert out.stdout == f"docker.io/library/tiny:2\n{NAME}\n".encode()
    assert b'docker.io/library/nope:1: image not found' in out.stderr
    assert d.ctr("images", "ls", "-q").stdout == b"docker.io/library/multi:1\ndocker.io/library/tiny:3\n"
    assert all(_on_disk(d, b) for b in img.blobs)  # tiny:3 holds them
