"""`pyctr images import|export` against pycontainerd and a real containerd:
an OCI layout tar and a `docker save` tar, built here byte by byte, are
imported with the names containerd's importer gives them (as the real
`ctr images ls` shows); an export by pyctr is imported by the real ctr
with the same digests; broken archives fail cleanly (no image record, no
lease left, the blobs they carried collected)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

pytestmark = pytest.mark.e2e

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            t.addfile(info)
    return buf.getvalue()


def _layers() -> list[bytes]:
    return [_tar({"hello.txt": b"hello\n"}), _tar({"etc/motd": b"two layers\n"})]


def _config(layers: list[bytes]) -> bytes:
    return json.dumps({"architecture": ARCH, "os": "linux", "config": {},
                       "rootfs": {"type": "layers", "diff_ids": [_digest(l) for l in layers]}}).encode()


def oci_layout(ref_name: str = "1", image_name: str = "") -> tuple[bytes, str, dict[str, bytes]]:
    """An OCI layout tar (two gzip layers); returns it, the manifest digest
    and every blob by path."""
    raw = _layers()
    layers = [gzip.compress(l, mtime=0) for l in raw]
    config = _config(raw)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(l),
                    "size": len(l)} for l in layers],
    }).encode()
    annotations = {"org.opencontainers.image.ref.name": ref_name}
    if image_name:
        annotations["io.containerd.image.name"] = image_name
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": _digest(manifest), "size": len(manifest),
        "annotations": annotations, "platform": {"architecture": ARCH, "os": "linux"}}]}).encode()
    blobs = {"blobs/sha256/" + _digest(b)[7:]: b for b in [manifest, config, *layers]}
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index, **blobs}
    return _tar(members), _digest(manifest), members


def docker_save(tags: list[str]) -> tuple[bytes, str]:
    """A `docker save` tar: <id>/layer.tar (uncompressed), <id>.json config,
    manifest.json, repositories; the second layer's file is a symlink to
    a copy, as newer Dockers write. Returns it and the manifest digest
    containerd's importer derives."""
    layers = _layers()
    config = _config(layers)
    ids = [hashlib.sha256(b"id%d" % i).hexdigest() for i in range(2)]
    members = {f"{ids[0]}/layer.tar": layers[0], f"blobs/{ids[1]}.tar": layers[1], f"{_digest(config)[7:]}.json": config,
               "manifest.json": json.dumps([{"Config": f"{_digest(config)[7:]}.json", "RepoTags": tags,
                                             "Layers": [f"{i}/layer.tar" for i in ids]}]).encode(),
               "repositories": json.dumps({t.rsplit(":", 1)[0]: {t.rsplit(":", 1)[1]: ids[1]} for t in tags}).encode()}
    data = _tar(members, {f"{ids[1]}/layer.tar": f"../blobs/{ids[1]}.tar"})
    # what containerd writes for this archive: a schema 2 manifest
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": DOCKER_LAYER, "digest": _digest(l), "size": len(l)} for l in layers],
    }, separators=(",", ":")).encode()
    return data, _digest(manifest)


def _rows(out: bytes) -> list[list[str]]:
    return [line.split() for line in out.decode().splitlines()[1:] if line.strip()]


def _images(d) -> list[tuple[str, str, str]]:
    """(name, type, digest) of each image, as the real ctr lists them."""
    return [(r[0], r[1], r[2]) for r in _rows(d.ctr("images", "ls").stdout)]


@pytest.fixture(params=["pycontainerd", "containerd"])
def target(request, daemon):
    if request.param == "containerd":
        return request.getfixturevalue("containerd")
    return daemon()


def _write(d, name: str, data: bytes) -> str:
    path = os.path.join(d.dir, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_import_oci_layout_names_and_labels(target):
    d = target
    data, manifest, members = oci_layout(ref_name="1")
    path = _write(d, "oci.tar", data)
    out = d.pyctr("images", "import", "--no-unpack", "--base-name", "example.com/app", "--digests",
                  "--index-name", "idx:1", path)
    assert out.stdout == b"" and out.stderr == b""
    index = _digest(members["index.json"])
    assert sorted(_images(d)) == sorted([
        ("example.com/app:1", OCI_MANIFEST, manifest),
        (f"example.com/app@{manifest}", OCI_MANIFEST, manifest),
        ("idx:1", "application/vnd.oci.image.index.v1+json", index)])
    # the real ctr sees it whole, and the import left no lease behind
    check = _rows(d.ctr("images", "check").stdout)
    assert {r[0]: r[3:5] for r in check}["example.com/app:1"] == ["complete", "(3/3)"]
    assert {r[0]: r[-1] for r in check}["example.com/app:1"] == "false"
    assert _rows(d.ctr("leases", "ls").stdout) == []
    labels = {r[0]: r[-1] for r in _rows(d.ctr("content", "ls").stdout)}
    assert f"containerd.io/gc.ref.content.m.0={manifest}" in labels[index]
    m = json.loads(members["blobs/sha256/" + manifest[7:]])
    assert f"containerd.io/gc.ref.content.config={m['config']['digest']}" in labels[manifest]
    assert f"containerd.io/gc.ref.content.l.1={m['layers'][1]['digest']}" in labels[manifest]


def test_import_without_base_name_prefixes_bare_ref_names(target):
    d = target
    data, manifest, _ = oci_layout(ref_name="v2")
    d.pyctr("images", "import", "--no-unpack", _write(d, "oci.tar", data))
    [(name, _, dgst)] = _images(d)
    assert name.startswith("import-") and name.endswith(":v2") and dgst == manifest


@pytest.mark.parametrize("snapshotter", ["native", "overlayfs"])
def test_import_unpacks_as_ctr_does(target, snapshotter):
    d = target
    data, manifest, members = oci_layout(image_name="example.com/app:1")
    out = d.pyctr("images", "import", "--snapshotter", snapshotter, _write(d, "oci.tar", data))
    assert out.stdout.decode() == f"unpacking example.com/app:1 ({manifest})...done\n"
    check = _rows(d.ctr("images", "check", "--snapshotter", snapshotter).stdout)
    assert check[0][0] == "example.com/app:1" and check[0][-1] == "true"
    # one committed snapshot per layer, named by chain id, as containerd names them
    diff_ids = [_digest(l) for l in _layers()]
    top = _digest(f"{diff_ids[0]} {diff_ids[1]}".encode())
    snaps = sorted(_rows(d.ctr("snapshots", "--snapshotter", snapshotter, "ls").stdout))
    assert snaps == sorted([[diff_ids[0], "Committed"], [top, diff_ids[0], "Committed"]])
    m = json.loads(members["blobs/sha256/" + manifest[7:]])
    labels = {r[0]: r[-1] for r in _rows(d.ctr("content", "ls").stdout)}
    assert f"containerd.io/gc.ref.snapshot.{snapshotter}={top}" in labels[m["config"]["digest"]]
    assert f"containerd.io/uncompressed={diff_ids[1]}" in labels[m["layers"][1]["digest"]]
    assert _rows(d.ctr("leases", "ls").stdout) == []
    # a second import finds the layers unpacked and applies nothing again
    d.pyctr("images", "import", "--snapshotter", snapshotter, os.path.join(d.dir, "oci.tar"))
    assert sorted(_rows(d.ctr("snapshots", "--snapshotter", snapshotter, "ls").stdout)) == snaps


def test_import_docker_save_tar(target):
    d = target
    data, manifest = docker_save(["busybox:1", "example.com/team/app:2"])
    path = _write(d, "docker.tar", data)
    d.pyctr("images", "import", "--no-unpack", path)
    # the real ctr's importer derives the very same manifest from this tar
    d.ctr("-n", "viactr", "images", "import", "--no-unpack", "--index-name", "i", path)
    d.pyctr("-n", "viapyctr", "images", "import", "--no-unpack", "--index-name", "i", path)
    assert _rows(d.ctr("-n", "viactr", "images", "ls").stdout) == _rows(d.ctr("-n", "viapyctr", "images", "ls").stdout)
    assert sorted(_images(d)) == [("docker.io/library/busybox:1", DOCKER_MANIFEST, manifest),
                                  ("example.com/team/app:2", DOCKER_MANIFEST, manifest)]
    ls = {r[0]: r for r in _rows(d.ctr("images", "ls").stdout)}
    assert ls["docker.io/library/busybox:1"][-2] == f"linux/{ARCH}"
    check = {r[0]: r[3:5] for r in _rows(d.ctr("images", "check").stdout)}
    assert check["example.com/team/app:2"] == ["complete", "(3/3)"]


def test_pyctr_export_is_imported_by_the_real_ctr(target, tmp_path):
    d = target
    data, manifest, members = oci_layout(image_name="example.com/app:1")
    d.pyctr("images", "import", "--snapshotter", "native", _write(d, "oci.tar", data))
    d.pyctr("images", "tag", "example.com/app:1", "example.com/app:latest")
    out = os.path.join(d.dir, "out.tar")
    d.pyctr("images", "export", out, "example.com/app:1", "example.com/app:latest")
    with tarfile.open(out) as t:
        index = json.load(t.extractfile("index.json"))
        docker_manifest = json.load(t.extractfile("manifest.json"))
        for path, blob in members.items():
            if path.startswith("blobs/"):
                assert t.extractfile(path).read() == blob
        assert t.extractfile("oci-layout").read() == b'{"imageLayoutVersion":"1.0.0"}'
    assert [(m["digest"], m["annotations"]) for m in index["manifests"]] == [
        (manifest, {"io.containerd.image.name": "example.com/app:1", "org.opencontainers.image.ref.name": "1"}),
        (manifest, {"io.containerd.image.name": "example.com/app:latest",
                    "org.opencontainers.image.ref.name": "latest"})]
    assert docker_manifest[0]["RepoTags"] == ["example.com/app:1", "example.com/app:latest"]
    # the real ctr reads it back (unpacking it too), same digests
    got = d.ctr("-n", "again", "images", "import", "--snapshotter", "native", out).stdout.decode()
    assert got == (f"unpacking example.com/app:1 ({manifest})...done\n"
                   f"unpacking example.com/app:latest ({manifest})...done\n")
    assert d.ctr("-n", "again", "images", "ls", "-q").stdout == b"example.com/app:1\nexample.com/app:latest\n"


def _broken_archives() -> dict[str, tuple[bytes, str]]:
    data, manifest, members = oci_layout()
    no_index = dict(members)
    del no_index["index.json"]
    wrong = dict(members)
    layer_path = next(p for p, b in members.items() if p.startswith("blobs/") and b[:2] == b"\x1f\x8b")
    wrong[layer_path] = gzip.compress(b"not the layer", mtime=0)
    escape = dict(members)
    escape["../../etc/evil"] = b"x"
    return {
        "missing index.json": (_tar(no_index), "missing index.json in OCI layout 1.0.0"),
        "wrong digest": (_tar(wrong), f'blob "{layer_path}" does not match its digest'),
        "path traversal": (_tar(escape), 'invalid entry name in archive: "../../etc/evil"'),
        "not a tar": (b"\0" * 10 + b"garbage" * 100, "not a tar archive"),
        "neither layout": (_tar({"hello": b"x"}), "unrecognized image format"),
    }


@pytest.mark.parametrize("case", sorted(_broken_archives()))
def test_broken_archive_fails_cleanly(target, case):
    d = target
    data, message = _broken_archives()[case]
    out = d.pyctr("images", "import", _write(d, "bad.tar", data), check=False)
    assert out.returncode != 0
    assert message in out.stderr.decode()
    assert "Traceback" not in out.stderr.decode()
    assert _images(d) == []
    assert _rows(d.ctr("leases", "ls").stdout) == []
    # the lease went with a synchronous collection: nothing it carried stays
    assert _rows(d.ctr("content", "ls").stdout) == []
    assert not os.path.exists(os.path.join(d.dir, "etc", "evil"))


def test_pyctr_images_check_prints_what_ctr_prints(target):
    d = target
    data, manifest, members = oci_layout(image_name="example.com/app:1")
    path = _write(d, "oci.tar", data)
    d.pyctr("images", "import", "--snapshotter", "native", path)
    d.pyctr("images", "import", "--no-unpack", "--index-name", "idx:1", path)
    m = json.loads(members["blobs/sha256/" + manifest[7:]])
    # a third name whose content is partly gone
    d.pyctr("images", "tag", "example.com/app:1", "example.com/app:2")

    def same(*args: str) -> bytes:
        want = d.ctr("images", "check", *args)
        got = d.pyctr("images", "check", *args)
        assert (got.returncode, got.stdout) == (want.returncode, want.stdout)
        return got.stdout

    out = same("--snapshotter", "native")
    assert b"complete (3/3)" in out and b"true" in out
    same("--snapshotter", "overlayfs")
    same("-q", "--snapshotter", "native")
    same("--snapshotter", "native", "name==idx:1")
    d.ctr("content", "rm", m["layers"][1]["digest"])  # held only by the labels: removable by hand
    out = same("--snapshotter", "native")
    assert b"incomplete (2/3)" in out
    same("-q")


def two_platform_layout() -> tuple[bytes, dict[str, str], dict[str, list[str]]]:
    """An OCI layout whose index lists this machine's platform and another
    one; returns it, the manifest digest per platform and the blob paths
    each platform's manifest needs."""
    other = "s390x" if ARCH != "s390x" else "amd64"
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    entries, manifests, needs = [], {}, {}
    for arch in (ARCH, other):
        layer = gzip.compress(_tar({"arch": arch.encode()}), mtime=0)
        config = json.dumps({"architecture": arch, "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [_digest(gzip.decompress(layer))]}}).encode()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": _digest(config), "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                           "digest": _digest(layer), "size": len(layer)}]}).encode()
        paths = ["blobs/sha256/" + _digest(b)[7:] for b in (manifest, config, layer)]
        members.update(zip(paths, (manifest, config, layer)))
        entries.append({"mediaType": OCI_MANIFEST, "digest": _digest(manifest), "size": len(manifest),
                        "platform": {"architecture": arch, "os": "linux"}})
        manifests[arch], needs[arch] = _digest(manifest), paths
    members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
    return _tar(members), manifests, needs


@pytest.mark.parametrize("all_platforms", [False, True])
def test_all_platforms_on_import_and_export(target, all_platforms):
    d = target
    data, manifests, needs = two_platform_layout()
    flag = ["--all-platforms"] if all_platforms else []
    d.pyctr("images", "import", "--no-unpack", *flag, "--index-name", "multi:1", _write(d, "multi.tar", data))
    [(_, _, index)] = _images(d)
    labels = {r[0]: r[-1] for r in _rows(d.ctr("content", "ls").stdout)}
    kept = sorted(v for k, v in (kv.split("=", 1) for kv in labels[index].split(",")) if ".m." in k)
    assert kept == sorted(manifests.values() if all_platforms else [manifests[ARCH]])
    out = os.path.join(d.dir, "multi-out.tar")
    d.pyctr("images", "export", *flag, out, "multi:1")
    with tarfile.open(out) as t:
        names = set(t.getnames())
    other = next(a for a in manifests if a != ARCH)
    assert set(needs[ARCH]) <= names
    assert bool(set(needs[other]) & names) == all_platforms
    # the real ctr reads what pyctr wrote, for all the platforms it holds
    d.ctr("-n", "again", "images", "import", "--no-unpack", *flag, "--index-name", "multi:1", out)
    again = [r[:3] for r in _rows(d.ctr("-n", "again", "images", "ls").stdout)]
    assert again == [["multi:1", "application/vnd.oci.image.index.v1+json", index]]
    assert d.ctr("-n", "again", "images", "check", "-q").stdout == b"multi:1\n"


def test_export_of_a_missing_image_fails_and_writes_nothing(target):
    d = target
    out = os.path.join(d.dir, "none.tar")
    got = d.pyctr("images", "export", out, "example.com/missing:1", check=False)
    assert got.returncode != 0
    assert got.stderr.decode().strip() == 'pyctr: image "example.com/missing:1": not found'
    assert not os.path.exists(out) and not [f for f in os.listdir(d.dir) if f.startswith("none.tar")]
