"""`pyctr images pull` and `pyctr content fetch` from a real registry
(Debian's docker-registry on 127.0.0.1, images pushed by the test with the
registry client), against pycontainerd and against a real containerd; the
real `ctr` checks the result on each: the image listed, complete and
unpacked, the snapshot chain committed, the layers' files visible through
`ctr images mount`. Pulling twice changes nothing; a tampered blob fails
the pull and leaves no image record and no blob with that digest."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from pycontainerd.client.image_unpack import chain_ids
from pycontainerd.client.remotes import Options, Registry
from pycontainerd.pkg import platforms

from registry_support import REGISTRY, RegistryProcess, make_image, make_index

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not os.access(REGISTRY, os.X_OK), reason="docker-registry is not installed")]

HOST = platforms.default_spec()


@pytest.fixture(scope="module")
def registry():
    reg = RegistryProcess()
    yield reg
    reg.stop()


def _push(reg: RegistryProcess, ref: str, files: list[dict[str, bytes]]):
    img = make_image(HOST, files)
    with Registry(Options(plain_http=True)) as client:
        for b in img.blobs:
            client.push_blob(ref, b.desc, lambda b=b: io.BytesIO(b.data))
        client.push_manifest(ref, img.manifest.desc, img.manifest.data)
    return img


def _rows(out: bytes) -> list[list[str]]:
    return [line.split() for line in out.decode().splitlines()[1:]]


def _diff_ids(img) -> list[str]:
    import gzip

    return ["sha256:" + hashlib.sha256(gzip.decompress(b.data)).hexdigest() for b in img.layers]


def _pull_scenario(d, registry: RegistryProcess, repo: str) -> None:
    ref = f"{registry.host}/{repo}:1"
    img = _push(registry, ref, [{"etc/hello": b"hello from layer one\n"},
                                {"bin/greet": b"hi from layer two\n", "etc/hello": b"replaced\n"}])
    chain = chain_ids(_diff_ids(img))

    out = d.pyctr("images", "pull", "--plain-http", ref).stdout.decode().splitlines()
    plat = platforms.format_platform(HOST)
    # ctr's progress table in its final state, then the unpack lines
    assert out[0].split()[:2] == [f"{ref}:", "resolved"]
    blobs = [img.manifest, img.config, *img.layers]
    kinds = ["manifest-", "config-", "layer-", "layer-"]
    assert [line.split()[:2] for line in out[1:5]] == [[k + b.desc.digest + ":", "done"]
                                                       for k, b in zip(kinds, blobs)]
    assert out[5].startswith("elapsed: ")
    assert out[6] == f"unpacking {plat} {img.manifest.desc.digest}..."
    assert out[7].startswith("done: ") and len(out) == 8

    def check_state() -> None:
        assert d.ctr("images", "ls", "-q").stdout.decode().split() == [ref]
        check = _rows(d.ctr("images", "check").stdout)
        assert check[0][0] == ref and check[0][3:5] == ["complete", "(3/3)"] and check[0][-1] == "true"
        snaps = {r[0]: r[1:] for r in _rows(d.ctr("snapshots", "ls").stdout)}
        assert snaps == {chain[0]: ["Committed"], chain[1]: [chain[0], "Committed"]}
        info = d.ctr("snapshots", "info", chain[1]).stdout.decode()
        assert f'"containerd.io/snapshot.ref": "{chain[1]}"' in info
        labels = {r[0]: r[-1] for r in _rows(d.ctr("content", "ls").stdout)}
        assert f"containerd.io/gc.ref.snapshot.overlayfs={chain[1]}" in labels[img.config.desc.digest]
        for layer, diff_id in zip(img.layers, _diff_ids(img)):
            assert f"containerd.io/uncompressed={diff_id}" in labels[layer.desc.digest]
        assert _rows(d.ctr("leases", "ls").stdout) == []  # the pull's lease is gone

    check_state()
    missing = d.pyctr("images", "pull", "--plain-http", f"{registry.host}/{repo}:nope", check=False)
    assert (missing.returncode, missing.stderr.decode()) == (1, f"pyctr: {registry.host}/{repo}:nope: not found\n")
    target = os.path.join(d.dir, "mnt")
    os.makedirs(target, exist_ok=True)
    d.ctr("images", "mount", ref, target)
    try:
        with open(os.path.join(target, "etc", "hello"), "rb") as f:
            assert f.read() == b"replaced\n"
        with open(os.path.join(target, "bin", "greet"), "rb") as f:
            assert f.read() == b"hi from layer two\n"
    finally:
        d.ctr("images", "unmount", "--rm", target)

    # a second pull finds everything there and changes nothing
    again = d.pyctr("images", "pull", "--plain-http", ref).stdout.decode().splitlines()
    assert [line.split()[1] for line in again[1:5]] == ["exists"] * 4
    check_state()

    # a platform the image does not have: containerd's images.Manifest error
    r = d.pyctr("images", "pull", "--plain-http", "--platform", "linux/s390x", ref, check=False)
    assert r.returncode != 0
    assert r.stderr.decode() == f"pyctr: manifest {img.manifest.desc.digest}: not found\n"

    # a blob whose bytes do not match its digest: the pull fails cleanly
    bad_ref = f"{registry.host}/{repo}:bad"
    bad = _push(registry, bad_ref, [{"x": os.urandom(30_000)}])
    path = registry.blob_data_path(bad.layers[0].desc.digest)
    data = bytearray(open(path, "rb").read())
    data[-50] ^= 0xFF
    open(path, "wb").write(bytes(data))
    r = d.pyctr("images", "pull", "--plain-http", bad_ref, check=False)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "Traceback" not in err and bad.layers[0].desc.digest in err
    assert d.ctr("images", "ls", "-q").stdout.decode().split() == [ref]
    assert bad.layers[0].desc.digest not in d.ctr("content", "ls", "-q").stdout.decode()

    # content fetch: the image record and its blobs, nothing unpacked
    fetch_ref = f"{registry.host}/{repo}:fetched"
    other = _push(registry, fetch_ref, [{"only": b"fetched, not unpacked\n"}])
    out = d.pyctr("content", "fetch", "--plain-http", fetch_ref).stdout.decode().splitlines()
    assert out[0].split()[:2] == [f"{fetch_ref}:", "resolved"] and out[-1].startswith("elapsed: ")
    assert sorted(d.ctr("images", "ls", "-q").stdout.decode().split()) == sorted([ref, fetch_ref])
    stored = d.ctr("content", "ls", "-q").stdout.decode().split()
    assert {b.desc.digest for b in (other.manifest, *other.blobs)} <= set(stored)
    assert len(_rows(d.ctr("snapshots", "ls").stdout)) == 2


def test_pyctr_pull_into_pycontainerd(registry, daemon):
    _pull_scenario(daemon(), registry, "pull/pycontainerd")


@pytest.mark.containerd
def test_pyctr_pull_into_real_containerd(registry, containerd):
    _pull_scenario(containerd, registry, "pull/containerd")


def test_pyctr_pull_with_basic_auth_and_a_hosts_dir_mirror(daemon):
    """`--user u:p` against a registry with htpasswd Basic auth, and
    `--hosts-dir` mapping docker.io to that registry: the short name is
    normalised, served by the mirror, unpacked."""
    reg = RegistryProcess(users={"puller": "s3cret"})
    try:
        with Registry(Options(plain_http=True, credentials=lambda host: ("puller", "s3cret"))) as client:
            img = make_image(HOST, [{"etc/motd": b"from the mirror\n"}])
            ref = f"{reg.host}/library/mirrored:1"
            for b in img.blobs:
                client.push_blob(ref, b.desc, lambda b=b: io.BytesIO(b.data))
            client.push_manifest(ref, img.manifest.desc, img.manifest.data)
        hosts = os.path.join(reg.dir, "hosts")
        os.makedirs(os.path.join(hosts, "docker.io"))
        with open(os.path.join(hosts, "docker.io", "hosts.toml"), "w") as f:
            f.write(f'[host."http://{reg.host}"]\n  capabilities = ["pull", "resolve"]\n')
        d = daemon()
        denied = d.pyctr("images", "pull", "--hosts-dir", hosts, "mirrored:1", check=False)
        assert denied.returncode == 1
        assert denied.stderr.decode().startswith("pyctr: pull access denied, repository does not exist or may "
                                                 "require authorization")
        assert d.ctr("images", "ls", "-q").stdout.decode() == ""
        out = d.pyctr("images", "pull", "--user", "puller:s3cret", "--hosts-dir", hosts, "mirrored:1").stdout.decode()
        assert out.splitlines()[0].split()[:2] == ["docker.io/library/mirrored:1:", "resolved"]
        assert d.ctr("images", "ls", "-q").stdout.decode().split() == ["docker.io/library/mirrored:1"]
        check = _rows(d.ctr("images", "check").stdout)
        assert check[0][3:5] == ["complete", "(2/2)"] and check[0][-1] == "true"
    finally:
        reg.stop()


def test_pyctr_pull_all_platforms_of_an_index(registry, daemon):
    """`--all-platforms`: every manifest of the index fetched, each platform
    unpacked in turn (one `unpacking` line each); `--platform` alone
    fetches only what that platform needs."""
    arm = platforms.Platform("linux", "s390x")  # a platform other than this machine's
    one = make_image(HOST, [{"arch": b"host\n"}])
    two = make_image(arm, [{"arch": b"s390x\n"}])
    index = make_index([one, two])
    ref = f"{registry.host}/pull/multi:1"
    with Registry(Options(plain_http=True)) as client:
        for img in (one, two):
            for b in img.blobs:
                client.push_blob(ref, b.desc, lambda b=b: io.BytesIO(b.data))
            client.push_manifest(ref, img.manifest.desc, img.manifest.data, tag=img.manifest.desc.digest)
        client.push_manifest(ref, index.desc, index.data)
    d = daemon()
    out = d.pyctr("images", "pull", "--plain-http", "--platform", "linux/s390x", ref).stdout.decode()
    assert f"unpacking linux/s390x {index.desc.digest}..." in out.splitlines()
    stored = set(d.ctr("content", "ls", "-q").stdout.decode().split())
    assert two.layers[0].desc.digest in stored and one.layers[0].desc.digest not in stored

    out = d.pyctr("images", "pull", "--plain-http", "--all-platforms", ref).stdout.decode().splitlines()
    unpacking = sorted(line for line in out if line.startswith("unpacking "))
    assert unpacking == sorted(f"unpacking {platforms.format_platform(p)} {index.desc.digest}..." for p in (HOST, arm))
    assert {b.desc.digest for b in (*one.blobs, *two.blobs)} <= set(d.ctr("content", "ls", "-q").stdout.decode().split())
    snaps = {r[0] for r in _rows(d.ctr("snapshots", "ls").stdout)}
    assert snaps == {chain_ids(_diff_ids(one))[0], chain_ids(_diff_ids(two))[0]}
