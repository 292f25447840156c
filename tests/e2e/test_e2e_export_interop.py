"""What `pyctr images export` writes, read by other tools: skopeo reads it
as `oci-archive:` (inspects it, copies it whole to a registry with every
digest kept) and a real containerd imports it (`ctr images import`). The
image is a two-platform index built by hand in the test, pulled into
pycontainerd from a real registry, exported with and without
`--all-platforms`."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import pytest

from pycontainerd.client.remotes import Options, Registry
from pycontainerd.pkg import platforms

from registry_support import REGISTRY, RegistryProcess, make_image, make_index

SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not os.access(REGISTRY, os.X_OK), reason="docker-registry is not installed"),
              pytest.mark.skipif(not os.access(SKOPEO, os.X_OK), reason="skopeo is not installed")]

HOST = platforms.default_spec()
OTHER = platforms.Platform("linux", "s390x") if HOST.architecture != "s390x" else platforms.Platform("linux", "amd64")


def skopeo(*args: str) -> bytes:
    r = subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


@pytest.fixture(scope="module")
def registry():
    reg = RegistryProcess()
    yield reg
    reg.stop()


def test_export_is_read_by_skopeo_and_imported_by_a_real_containerd(daemon, containerd, registry):
    host_img = make_image(HOST, [{"etc/arch": b"host\n"}, {"bin/tool": os.urandom(20_000)}])
    other_img = make_image(OTHER, [{"etc/arch": b"other\n"}])
    index = make_index([host_img, other_img])
    ref = f"{registry.host}/interop/multi:v1"
    with Registry(Options(plain_http=True)) as client:
        for img in (host_img, other_img):
            for b in img.blobs:
                client.push_blob(ref, b.desc, lambda b=b: io.BytesIO(b.data))
            client.push_manifest(ref, img.manifest.desc, img.manifest.data, tag=img.manifest.desc.digest)
        client.push_manifest(ref, index.desc, index.data)

    d = daemon()
    d.pyctr("images", "pull", "--plain-http", "--all-platforms", ref)
    every = os.path.join(d.dir, "all.tar")
    single = os.path.join(d.dir, "single.tar")
    d.pyctr("images", "export", "--all-platforms", every, ref)
    d.pyctr("images", "export", single, ref)

    # skopeo: the index is the one pushed, byte for byte; the host's image
    # (its manifest, config and layers) is what was pushed for this platform
    for archive in (every, single):
        assert skopeo("inspect", "--raw", f"oci-archive:{archive}") == index.data
        inspected = json.loads(skopeo("inspect", f"oci-archive:{archive}"))
        assert inspected["Digest"] == index.desc.digest  # skopeo names the image by its top digest
        assert inspected["Layers"] == [b.desc.digest for b in host_img.layers]
        assert json.loads(skopeo("inspect", "--config", "--raw", f"oci-archive:{archive}")) == \
            json.loads(host_img.config.data)

    # skopeo copies the whole index from the archive to a registry, every
    # digest kept; pyctr pulls it back as the same image
    copied = f"{registry.host}/interop/copied:v1"
    skopeo("copy", "--all", "--preserve-digests", "--dest-tls-verify=false", f"oci-archive:{every}",
           f"docker://{copied}")
    with Registry(Options(plain_http=True)) as client:
        assert client.resolve(copied)[1].digest == index.desc.digest
        for img in (host_img, other_img):
            assert client.fetch_bytes(copied, img.manifest.desc) == img.manifest.data
            for b in img.blobs:
                assert b"".join(client.fetch(copied, b.desc)) == b.data

    # a real containerd imports both exports: the same index, complete for
    # the platforms each holds, unpacked for this one
    out = containerd.ctr("images", "import", "--all-platforms", every).stdout.decode()
    assert f"unpacking {ref} ({index.desc.digest})...done" in out
    rows = [line.split() for line in containerd.ctr("images", "ls").stdout.decode().splitlines()[1:]]
    assert [r[:3] for r in rows] == [[ref, "application/vnd.oci.image.index.v1+json", index.desc.digest]]
    assert set(rows[0][-2].split(",")) == {platforms.format_platform(HOST), platforms.format_platform(OTHER)}
    check = containerd.ctr("images", "check").stdout.decode().splitlines()[1].split()
    assert check[3:5] == ["complete", "(3/3)"] and check[-1] == "true"  # config and two layers

    containerd.ctr("-n", "single", "images", "import", single)
    assert containerd.ctr("-n", "single", "images", "check", "-q").stdout.decode().split() == [ref]
