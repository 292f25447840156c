"""Pulls that meet bad input or faults, end to end: a real registry
(Debian's docker-registry on 127.0.0.1), a real pycontainerd daemon, pyctr
(and the real ctr where it says so), and a recording proxy the test runs
where a fault must be injected or counted.

Each test checks what a user would: the command's exit and words, the
image records, the content store (`ctr content ls`, `ctr content active`),
the leases, and the file system outside the daemon's root.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile

import pytest

from e2e_support import CTR, PYCONTAINERD, PYCTR, DaemonProcess, clean_env
from pycontainerd.client.remotes import Options, Registry
from pycontainerd.pkg import platforms
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import Manifest, manifest_bytes
from pycontainerd.pkg.oci.descriptor import Descriptor

from proxy_support import RegistryProxy
from registry_support import REGISTRY, Blob, RegistryProcess, free_port, make_image

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not os.access(REGISTRY, os.X_OK), reason="docker-registry is not installed")]

HOST = platforms.default_spec()


@pytest.fixture(scope="module")
def registry():
    reg = RegistryProcess()
    yield reg
    reg.stop()


def _upload(ref: str, img) -> None:
    with Registry(Options(plain_http=True)) as client:
        for b in img.blobs:
            client.push_blob(ref, b.desc, lambda b=b: io.BytesIO(b.data))
        client.push_manifest(ref, img.manifest.desc, img.manifest.data)


def _content(d) -> list[str]:
    return d.ctr("content", "ls", "-q").stdout.decode().split()


def _active(d) -> list[str]:
    return [line.split()[0] for line in d.ctr("content", "active").stdout.decode().splitlines()[1:]]


def _leases(d) -> list[str]:
    return d.ctr("leases", "ls", "-q").stdout.decode().split()


def _images(d) -> list[str]:
    return d.ctr("images", "ls", "-q").stdout.decode().split()


def test_a_registry_that_is_down_fails_with_its_address(daemon):
    d = daemon()
    port = free_port()
    r = d.pyctr("images", "pull", "--plain-http", f"127.0.0.1:{port}/some/image:v1", check=False)
    err = r.stderr.decode()
    assert r.returncode == 1
    assert f"127.0.0.1:{port}" in err and "connect: connection refused" in err
    assert "Traceback" not in err and "Errno" not in err
    assert _images(d) == [] and _leases(d) == [] and _content(d) == []


def test_a_missing_tag_says_not_found_and_names_the_ref(daemon, registry):
    d = daemon()
    ref = f"{registry.host}/faults/missing:nope"
    for run in (d.pyctr, d.ctr):
        r = run("images", "pull", "--plain-http", ref, check=False)
        assert r.returncode == 1
        assert ref in r.stderr.decode() and "not found" in r.stderr.decode()
    assert _images(d) == [] and _leases(d) == []


def test_a_blob_that_does_not_match_its_digest_is_never_stored(daemon, registry):
    d = daemon()
    ref = f"{registry.host}/faults/tampered:v1"
    img = make_image(HOST, [{"ok": b"fine\n"}, {"bad": os.urandom(60_000)}])
    _upload(ref, img)
    bad = img.layers[1].desc.digest
    path = registry.blob_data_path(bad)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    r = d.pyctr("images", "pull", "--plain-http", ref, check=False)
    assert r.returncode == 1 and bad in r.stderr.decode()
    assert _images(d) == []
    assert bad not in _content(d)
    # the pull's lease is gone, so GC takes what it had fetched; a sync
    # collection (deleting a lease of our own with --sync) shows it
    d.ctr("leases", "create", "--id", "trigger")
    d.ctr("leases", "rm", "--sync", "trigger")
    assert _content(d) == [] and _active(d) == [] and _leases(d) == []


def test_a_manifest_claiming_more_bytes_than_are_served_fails(daemon, registry):
    d = daemon()
    ref = f"{registry.host}/faults/liar:v1"
    img = make_image(HOST, [{"small": b"small layer\n"}])
    real = img.layers[0].desc
    claimed = Descriptor(real.media_type, real.digest, 1 << 30)  # 1 GiB claimed, ~150 bytes served
    m = Manifest(mediatypes.OCI_MANIFEST, img.config.desc, [claimed])
    data = manifest_bytes(m)
    img.manifest = Blob(Descriptor(mediatypes.OCI_MANIFEST, "sha256:" + hashlib.sha256(data).hexdigest(),
                                   len(data)), data)
    _upload(ref, img)
    r = d.pyctr("images", "pull", "--plain-http", ref, check=False)
    err = r.stderr.decode()
    assert r.returncode == 1 and real.digest in err and "Traceback" not in err
    assert _images(d) == [] and real.digest not in _content(d)


def test_a_connection_dropped_mid_blob_resumes_with_range(daemon, registry):
    d = daemon()
    ref_path = "faults/dropped:v1"
    img = make_image(HOST, [{"big": os.urandom(600_000)}])
    _upload(f"{registry.host}/{ref_path}", img)
    layer = img.layers[0].desc
    proxy = RegistryProxy(registry.host, cut=(layer.digest, 200_000))
    try:
        ref = f"{proxy.host}/{ref_path}"
        d.pyctr("images", "pull", "--plain-http", ref)
        assert proxy.cuts == 1
        assert [g.range for g in proxy.gets(layer.digest)] == ["", "bytes=200000-"]
        assert _images(d) == [ref]
        assert d.ctr("images", "check", "-q").stdout.decode().split() == [ref]
        assert b"".join([d.ctr("content", "get", layer.digest).stdout]) == img.layers[0].data
    finally:
        proxy.close()


@pytest.mark.parametrize("clients", [
    ["pyctr", "pyctr"],
    # issue 10's load proof: 8 at once, the real ctr among them
    ["pyctr", "ctr", "pyctr", "pyctr", "ctr", "pyctr", "pyctr", "pyctr"],
], ids=["two", "eight"])
def test_concurrent_pulls_fetch_each_blob_once(daemon, registry, clients):
    """The first pull is held mid-layer at the proxy until every other has
    resolved the image too, so all want the same blobs at once; the
    daemon's ingest ref lock makes the others wait for the one writing
    instead of downloading again, as in containerd."""
    d = daemon()
    ref_path = f"faults/together{len(clients)}:v1"
    img = make_image(HOST, [{"a": os.urandom(300_000)}, {"b": os.urandom(300_000)}, {"c": b"small\n"}])
    _upload(f"{registry.host}/{ref_path}", img)
    proxy = RegistryProxy(registry.host, hold=(img.layers[0].desc.digest, 100_000))
    procs: list[subprocess.Popen] = []
    try:
        ref = f"{proxy.host}/{ref_path}"

        def start(tool: str) -> None:
            argv = [PYCTR if tool == "pyctr" else CTR, "--address", d.address, "images", "pull", "--plain-http", ref]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env()))

        start(clients[0])
        assert proxy.held.wait(60), "the first pull never reached its first layer"
        for tool in clients[1:]:
            start(tool)
        while len([s for s in proxy.seen if s.method == "HEAD" and "/manifests/" in s.path]) < len(clients):
            for p in procs[1:]:
                assert p.poll() is None, p.communicate()[1].decode()
            proxy.resolved.wait(1)  # woken on every manifest HEAD
            proxy.resolved.clear()
        proxy.release.set()
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()
        for b in img.blobs:
            assert len(proxy.gets(f"/blobs/{b.desc.digest}")) == 1, b.desc.digest
        assert d.ctr("images", "check", "-q").stdout.decode().split() == [ref]
        assert _leases(d) == [] and _active(d) == []
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        proxy.close()


@pytest.mark.parametrize("client", ["pyctr", "ctr"])
def test_a_blob_already_there_is_held_by_the_pull_through_a_collection(daemon, registry, client):
    """Blobs the store has (held by another lease: the image's manifest,
    config and first layer) are not fetched again, and the pull's lease
    takes them over, as containerd's fetch does (its writer, opened for a
    digest the store has, leases it and says it exists): that other lease
    gone and a collection run while the pull is held on the layer it
    fetches, they stay and the pull succeeds."""
    d = daemon()
    ref_path = f"faults/there-{client}:v1"
    img = make_image(HOST, [{"there": os.urandom(50_000)}, {"fetched": os.urandom(300_000)}])
    _upload(f"{registry.host}/{ref_path}", img)
    there, fetched = [img.manifest, img.config, img.layers[0]], img.layers[1]
    d.ctr("leases", "create", "--id", "ld-other")
    import grpc

    from pycontainerd.api.services.content.v1 import content_pb2 as cpb
    from pycontainerd.api.services.content.v1 import content_pb2_grpc as cpb_grpc

    with grpc.insecure_channel("unix:" + d.address) as ch:
        for b in there:
            list(cpb_grpc.ContentStub(ch).Write(iter([cpb.WriteContentRequest(
                action=cpb.COMMIT, ref=f"ld-{b.desc.digest}", data=b.data, total=len(b.data),
                expected=b.desc.digest)]),
                metadata=(("containerd-namespace", "default"), ("containerd-lease", "ld-other")), timeout=30))
    proxy = RegistryProxy(registry.host, hold=(fetched.desc.digest, 100_000))
    pull = None
    try:
        ref = f"{proxy.host}/{ref_path}"
        pull = subprocess.Popen([PYCTR if client == "pyctr" else CTR, "--address", d.address, "images", "pull",
                                 "--plain-http", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
        assert proxy.held.wait(60), "the pull never reached the layer it fetches"
        d.ctr("leases", "rm", "--sync", "ld-other")  # the other holder gone, and a collection run
        proxy.release.set()
        _, err = pull.communicate(timeout=120)
        assert pull.returncode == 0, err.decode()
        assert [g.path for b in there for g in proxy.gets(f"/blobs/{b.desc.digest}")] == []
        assert d.ctr("images", "check", "-q").stdout.decode().split() == [ref]
        assert [d.ctr("content", "get", b.desc.digest).stdout for b in there] == [b.data for b in there]
    finally:
        if pull is not None and pull.poll() is None:
            pull.kill()
            pull.wait()
        proxy.close()


def test_the_daemon_killed_mid_pull_then_pull_again_and_gc(daemon, registry):
    d = daemon()
    ref_path = "faults/killed:v1"
    img = make_image(HOST, [{"first": os.urandom(50_000)}, {"second": os.urandom(500_000)}])
    _upload(f"{registry.host}/{ref_path}", img)
    held = img.layers[1].desc.digest
    proxy = RegistryProxy(registry.host, hold=(held, 100_000))
    try:
        ref = f"{proxy.host}/{ref_path}"
        pull = subprocess.Popen([PYCTR, "--address", d.address, "images", "pull", "--plain-http", ref],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
        try:
            assert proxy.held.wait(60), "the pull never reached the held blob"
            d.send_signal(signal.SIGKILL)
            d.proc.wait(10)
            proxy.release.set()
            _, err = pull.communicate(timeout=60)
            assert pull.returncode != 0
        finally:
            if pull.poll() is None:
                pull.kill()
                pull.wait()
        d.kill()
        again = DaemonProcess("pycontainerd", [PYCONTAINERD], d.dir, d.config, {})
        daemon.daemons.append(again)
        again.wait_ready()
        # what the killed pull left: no image, its lease, what it had written
        assert _images(again) == []
        stale = _leases(again)
        assert len(stale) == 1
        left = set(_content(again))
        assert img.manifest.desc.digest in left and held not in left

        again.pyctr("images", "pull", "--plain-http", ref)
        assert again.ctr("images", "check", "-q").stdout.decode().split() == [ref]

        # the stale lease gone, GC keeps exactly what the image holds
        again.ctr("leases", "rm", "--sync", *stale)
        assert _leases(again) == [] and _active(again) == []
        assert sorted(_content(again)) == sorted(b.desc.digest for b in (img.manifest, *img.blobs))
    finally:
        proxy.close()


# -- layers crafted to escape the root file system ------------------------------

def _tar(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info, data = (e, b"") if isinstance(e, tarfile.TarInfo) else e
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return raw.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"escaped\n",
           dev: tuple[int, int] = (0, 0)):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, link, 0o644, 0
    info.devmajor, info.devminor = dev
    return (info, data) if kind == tarfile.REGTYPE else info


def _escape_image(layers: list[list]):
    """An image whose layers are the given tar entries (gzip, OCI types)."""
    blobs, diff_ids = [], []
    for entries in layers:
        tar = _tar(entries)
        gz = gzip.compress(tar, mtime=0)
        blobs.append(Blob(Descriptor(mediatypes.OCI_LAYER_GZIP, "sha256:" + hashlib.sha256(gz).hexdigest(),
                                     len(gz)), gz))
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
    config = json.dumps({"architecture": HOST.architecture, "os": HOST.os,
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cfg = Blob(Descriptor(mediatypes.OCI_CONFIG, "sha256:" + hashlib.sha256(config).hexdigest(), len(config)),
               config)
    m = manifest_bytes(Manifest(mediatypes.OCI_MANIFEST, cfg.desc, [b.desc for b in blobs]))
    img = make_image(HOST, [{}])
    img.layers, img.config = blobs, cfg
    img.manifest = Blob(Descriptor(mediatypes.OCI_MANIFEST, "sha256:" + hashlib.sha256(m).hexdigest(), len(m)), m)
    return img


UP = "../" * 12


def _escapes(outside: str) -> dict[str, list[list]]:
    o = outside.lstrip("/")
    return {
        "dotdot": [[_entry(f"{UP}{o}/dotdot")]],
        "absolute": [[_entry(f"/{o}/absolute")]],
        "symlink": [[_entry("abs-link", tarfile.SYMTYPE, f"/{o}"), _entry("rel-link", tarfile.SYMTYPE, f"{UP}{o}")],
                    [_entry("abs-link/via-absolute-symlink"), _entry("rel-link/via-relative-symlink")]],
        "symlink-same-layer": [[_entry("link", tarfile.SYMTYPE, f"/{o}"), _entry("link/same-layer")]],
        "hardlink": [[_entry("abs-hard", tarfile.LNKTYPE, f"/{o}/victim"),
                      _entry("rel-hard", tarfile.LNKTYPE, f"{UP}{o}/victim")],
                     [_entry("abs-hard", data=b"overwritten\n"), _entry("rel-hard", data=b"overwritten\n")]],
        "device": [[_entry(f"{UP}{o}/chardev", tarfile.CHRTYPE, dev=(1, 3)),
                    _entry(f"/{o}/blockdev", tarfile.BLKTYPE, dev=(7, 0)),
                    _entry(f"{UP}{o}/fifo", tarfile.FIFOTYPE)]],
    }


# where each case's entries land inside the image ({o}: the outside path,
# without its leading slash); a real containerd puts them in the same places
ROOTED = {"dotdot": ["{o}/dotdot"], "absolute": ["{o}/absolute"],
          # the second layer's parent directories replace the first's links
          "symlink": ["abs-link/via-absolute-symlink", "rel-link/via-relative-symlink"],
          "symlink-same-layer": ["{o}/same-layer"],
          "device": ["{o}/blockdev", "{o}/chardev", "{o}/fifo"]}


@pytest.mark.parametrize("client", ["pyctr", "ctr"])
@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "symlink-same-layer", "hardlink", "device"])
def test_a_layer_crafted_to_escape_writes_nothing_outside(daemon, registry, client, case):
    outside = tempfile.mkdtemp(prefix="pcd-escape-")
    try:
        victim = os.path.join(outside, "victim")
        with open(victim, "wb") as f:
            f.write(b"original\n")
        d = daemon()
        img = _escape_image(_escapes(outside)[case])
        ref = f"{registry.host}/escape/{case}:{client}"
        _upload(ref, img)
        run = d.pyctr if client == "pyctr" else d.ctr
        r = run("images", "pull", "--plain-http", ref, check=False)
        # whether the pull refuses the layer or roots it in the snapshot,
        # nothing outside changed
        assert os.listdir(outside) == ["victim"], r.stderr.decode()
        st = os.lstat(victim)
        assert st.st_nlink == 1
        with open(victim, "rb") as f:
            assert f.read() == b"original\n"
        assert "Traceback" not in r.stderr.decode()
        if case == "hardlink":  # a link to a file the layer's root lacks: refused, as containerd does
            assert r.returncode == 1 and "failed to extract layer" in r.stderr.decode()
            if client == "ctr":  # ctr records the image, then fails to unpack it
                assert d.ctr("images", "check").stdout.decode().split()[-1] == "false"
            else:  # pyctr's pipeline records an image only once it is all in
                assert d.ctr("images", "ls", "-q").stdout == b""
            return
        assert r.returncode == 0, r.stderr.decode()
        # what the layer named outside is rooted inside the image instead
        mnt = os.path.join(d.dir, "rootfs")
        os.makedirs(mnt)
        d.pyctr("images", "mount", ref, mnt)
        try:
            for path in ROOTED[case]:
                assert os.path.lexists(os.path.join(mnt, path.format(o=outside.lstrip("/")))), path
        finally:
            d.pyctr("images", "unmount", "--rm", mnt)
    finally:
        shutil.rmtree(outside, ignore_errors=True)


