"""`pyctr images push`, `mount`, `unmount` and `usage` against pycontainerd
and a real containerd, with a real registry (Debian's docker-registry)
behind a recording proxy: a pulled image pushed to another repository of
the same registry is mounted there (no blob bytes sent), a second push
sends nothing, a multi-platform index goes out whole; the pushed image
reads back identical. An image mounts read-only and read-write, its
snapshots' usage lists the chain top first, and unmount --rm leaves no
snapshot and no lease."""

from __future__ import annotations

import io
import os
from urllib.parse import parse_qs, urlsplit

import pytest

from pycontainerd.client.image_unpack import chain_ids
from pycontainerd.client.remotes import Options, Registry
from pycontainerd.pkg import platforms

from proxy_support import RegistryProxy
from registry_support import REGISTRY, RegistryProcess, make_image, make_index

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not os.access(REGISTRY, os.X_OK), reason="docker-registry is not installed")]

HOST = platforms.default_spec()
OTHER = platforms.Platform("linux", "s390x") if HOST.architecture != "s390x" else platforms.Platform("linux", "amd64")


@pytest.fixture(scope="module")
def registry():
    reg = RegistryProcess()
    yield reg
    reg.stop()


@pytest.fixture
def proxy(registry):
    p = RegistryProxy(registry.host)
    yield p
    p.close()


@pytest.fixture(params=["pycontainerd", "containerd"])
def target(request, daemon):
    if request.param == "containerd":
        return request.getfixturevalue("containerd")
    return daemon()


def _upload(reg_host: str, ref_path: str, images, index=None) -> None:
    with Registry(Options(plain_http=True)) as client:
        ref = f"{reg_host}/{ref_path}"
        for img in images:
            for b in img.blobs:
                client.push_blob(ref, b.desc, lambda b=b: io.BytesIO(b.data))
            client.push_manifest(ref, img.manifest.desc, img.manifest.data, tag=None if index is None
                                 else img.manifest.desc.digest)
        if index is not None:
            client.push_manifest(ref, index.desc, index.data)


def _diff_ids(img) -> list[str]:
    import gzip
    import hashlib

    return ["sha256:" + hashlib.sha256(gzip.decompress(b.data)).hexdigest() for b in img.layers]


def test_push_mounts_across_repositories_skips_what_exists_and_sends_indexes(target, proxy, registry):
    # repositories of this run alone; mkdtemp's `_` may not end a path component
    d, n = target, os.path.basename(target.dir).replace("_", "")
    img = make_image(HOST, [{"etc/one": os.urandom(40_000)}, {"etc/two": b"two\n"}])
    _upload(registry.host, f"src/app{n}:v1", [img])
    src, dst = f"{proxy.host}/src/app{n}:v1", f"{proxy.host}/dst/app{n}:v1"
    d.pyctr("images", "pull", "--plain-http", src)

    before = len(proxy.seen)
    out = d.pyctr("images", "push", "--plain-http", dst, src).stdout.decode().splitlines()
    sent = proxy.seen[before:]
    # ctr's table in its final state: the manifest, its config and layers, all done
    keys = [f"manifest-{img.manifest.desc.digest}", f"config-{img.config.desc.digest}",
            *[f"layer-{b.desc.digest}" for b in img.layers]]
    assert [line.split()[:2] for line in out[:-1]] == [[k + ":", "done"] for k in keys]
    assert out[-1].startswith("elapsed: ") and "total:" in out[-1]
    # the blobs came from src by a cross-repository mount: no bytes uploaded
    mounts = [s for s in sent if s.method == "POST" and "mount=" in s.path]
    assert sorted(s.path.split("mount=")[1].split("&")[0] for s in mounts) == \
        sorted(b.desc.digest for b in img.blobs)
    assert all(parse_qs(urlsplit(s.path).query)["from"] == [f"src/app{n}"] for s in mounts)
    assert not [s for s in sent if s.method in ("PATCH", "PUT") and "/blobs/uploads/" in s.path]
    assert [s.path for s in sent if s.method == "PUT"] == [f"/v2/dst/app{n}/manifests/v1"]
    with Registry(Options(plain_http=True)) as client:
        name, desc = client.resolve(f"{registry.host}/dst/app{n}:v1")
        assert desc.digest == img.manifest.desc.digest
        for b in img.blobs:
            assert b"".join(client.fetch(f"{registry.host}/dst/app{n}:v1", b.desc)) == b.data

    # again: the registry has everything, nothing is posted or put
    before = len(proxy.seen)
    d.pyctr("images", "push", "--plain-http", dst, src)
    assert {s.method for s in proxy.seen[before:]} == {"HEAD"}

    # a two-platform index, pulled whole, pushed whole to a new repository
    a = make_image(HOST, [{"arch": b"host\n"}])
    b = make_image(OTHER, [{"arch": b"other\n"}])
    index = make_index([a, b])
    _upload(registry.host, f"src/multi{n}:v1", [a, b], index)
    d.pyctr("images", "pull", "--plain-http", "--all-platforms", f"{proxy.host}/src/multi{n}:v1")
    out = d.pyctr("images", "push", "--plain-http", f"{proxy.host}/dst/multi{n}:v2",
                  f"{proxy.host}/src/multi{n}:v1").stdout.decode()
    assert f"index-{index.desc.digest}:" in out
    with Registry(Options(plain_http=True)) as client:
        ref = f"{registry.host}/dst/multi{n}:v2"
        assert client.resolve(ref)[1].digest == index.desc.digest
        for m in (a.manifest, b.manifest):
            assert client.fetch_bytes(ref, m.desc) == m.data

    # one --platform: only that platform's manifest goes, under the tag
    out = d.pyctr("images", "push", "--plain-http", "--platform", platforms.format_platform(OTHER),
                  f"{proxy.host}/dst/multi{n}:other", f"{proxy.host}/src/multi{n}:v1").stdout.decode()
    assert f"index-{index.desc.digest}" not in out
    with Registry(Options(plain_http=True)) as client:
        assert client.resolve(f"{registry.host}/dst/multi{n}:other")[1].digest == b.manifest.desc.digest

    # --manifest: a digest in the content store rather than an image name
    d.pyctr("images", "push", "--plain-http", "--manifest", a.manifest.desc.digest,
            f"{proxy.host}/dst/multi{n}:bydigest")
    with Registry(Options(plain_http=True)) as client:
        assert client.resolve(f"{registry.host}/dst/multi{n}:bydigest")[1].digest == a.manifest.desc.digest

    missing = d.pyctr("images", "push", "--plain-http", f"{proxy.host}/dst/none:v1", "no/such:image", check=False)
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith("pyctr: unable to resolve image to manifest: ")
    assert "not found" in missing.stderr.decode()


def test_pull_labels_blobs_with_every_repository_they_came_from(target, registry):
    """containerd's distribution source label: keyed by the registry's host
    name without the port, its value the sorted set of repositories."""
    d = target
    img = make_image(HOST, [{"shared": b"shared layer\n"}])
    _upload(registry.host, "zeta/img:v1", [img])
    _upload(registry.host, "alpha/img:v1", [img])
    d.pyctr("images", "pull", "--plain-http", f"{registry.host}/zeta/img:v1")
    d.pyctr("images", "pull", "--plain-http", f"{registry.host}/alpha/img:v1")
    rows = {line.split()[0]: line.split()[-1] for line in d.ctr("content", "ls").stdout.decode().splitlines()[1:]}
    assert "containerd.io/distribution.source.127.0.0.1=alpha/img,zeta/img" in rows[img.layers[0].desc.digest]
    # the real ctr's pull adds to the same label, the same way
    _upload(registry.host, "mid/img:v1", [img])
    d.ctr("images", "pull", "--plain-http", f"{registry.host}/mid/img:v1")
    rows = {line.split()[0]: line.split()[-1] for line in d.ctr("content", "ls").stdout.decode().splitlines()[1:]}
    labels = rows[img.layers[0].desc.digest].split(",containerd.io/")
    assert "distribution.source.127.0.0.1=alpha/img,mid/img,zeta/img" in [x.removeprefix("containerd.io/")
                                                                          for x in labels]


def test_mount_usage_unmount(target, registry):
    d = target
    img = make_image(HOST, [{"etc/hello": b"one\n"}, {"etc/hello": b"two\n", "bin/tool": b"tool\n"}])
    _upload(registry.host, "mnt/app:v1", [img])
    ref = f"{registry.host}/mnt/app:v1"
    d.pyctr("images", "pull", "--plain-http", ref)
    chain = chain_ids(_diff_ids(img))
    where = os.path.join(d.dir, "mnt-ro")
    os.makedirs(where)

    out = d.pyctr("images", "mount", ref, where).stdout.decode().splitlines()
    try:
        assert out == [chain[-1], where]
        with open(os.path.join(where, "etc", "hello"), "rb") as f:
            assert f.read() == b"two\n"
        with pytest.raises(OSError):
            open(os.path.join(where, "new"), "wb").close()
        # the snapshot and the lease are named after the target, as ctr names them
        assert where in d.ctr("snapshots", "ls").stdout.decode()
        assert where in d.ctr("leases", "ls", "-q").stdout.decode().split()
    finally:
        assert d.pyctr("images", "unmount", "--rm", where).stdout.decode() == where + "\n"
    assert not os.path.ismount(where)
    assert where not in d.ctr("snapshots", "ls").stdout.decode()
    assert where not in d.ctr("leases", "ls", "-q").stdout.decode().split()

    rw = os.path.join(d.dir, "mnt-rw")
    os.makedirs(rw)
    d.pyctr("images", "mount", "--rw", ref, rw)
    try:
        with open(os.path.join(rw, "written"), "wb") as f:
            f.write(b"rw\n")
        # unmount without --rm keeps the active snapshot and its lease
        d.pyctr("images", "unmount", rw)
        assert not os.path.ismount(rw)
        rows = [line.split() for line in d.ctr("snapshots", "ls").stdout.decode().splitlines()[1:]]
        assert [rw, chain[-1], "Active"] in rows
    finally:
        d.pyctr("images", "unmount", "--rm", rw)
    assert rw not in d.ctr("snapshots", "ls").stdout.decode()

    usage = d.pyctr("images", "usage", ref).stdout.decode().splitlines()
    assert usage[0].split() == ["KEY", "SIZE", "INODES"]
    assert [line.split()[0] for line in usage[1:]] == list(reversed(chain))
    # the same sizes and inode counts the real ctr shows for those snapshots
    by_ctr = d.ctr("snapshots", "usage", *reversed(chain)).stdout.decode().splitlines()
    assert [line.split() for line in usage] == [line.split() for line in by_ctr]

    r = d.pyctr("images", "usage", f"{registry.host}/mnt/none:v1", check=False)
    assert r.returncode == 1 and r.stderr.decode().startswith(
        f"pyctr: failed to ensure if image {registry.host}/mnt/none:v1 exists: ")
    r = d.pyctr("images", "mount", "no/such:image", os.path.join(d.dir, "mnt-ro"), check=False)
    assert r.returncode == 1 and "not found" in r.stderr.decode()
    assert os.path.join(d.dir, "mnt-ro") not in d.ctr("leases", "ls", "-q").stdout.decode().split()
