"""The pull pipeline (parallel downloads, each layer applied as soon as it
and its parents are in) end to end: a real registry (Debian's
docker-registry on 127.0.0.1), `pyctr images pull` into pycontainerd and
into a real containerd, the real `ctr` checking the results.

- a multi-layer image with whiteouts and an opaque directory gives the
  same root filesystem (read through `ctr images mount`) on both daemons,
  and a second pull finds everything there;
- a middle layer whose bytes do not match its digest fails the pull: no
  image record, no blob with that digest, no lease left, and once GC has
  run nothing of the pull remains;
- on a terminal (a pty) the progress is drawn with the blobs' states and
  ends with every layer done.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import select
import stat
import subprocess
import tarfile

import pytest

from pycontainerd.client.image_unpack import chain_ids
from pycontainerd.client.remotes import Options, Registry
from pycontainerd.pkg import platforms
from pycontainerd.pkg.images import mediatypes
from pycontainerd.pkg.images.manifest import Manifest, manifest_bytes
from pycontainerd.pkg.oci.descriptor import Descriptor

from e2e_support import PYCTR, clean_env
from registry_support import REGISTRY, Blob, RegistryProcess

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not os.access(REGISTRY, os.X_OK), reason="docker-registry is not installed")]

HOST = platforms.default_spec()
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def registry():
    reg = RegistryProcess()
    yield reg
    reg.stop()


# -- building layers with whiteouts ------------------------------------------------------------


def _entry(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
           link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 1_700_000_000, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _layer(build) -> tuple[Blob, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    plain = raw.getvalue()
    gz = gzip.compress(plain, mtime=0)
    return (Blob(Descriptor(mediatypes.OCI_LAYER_GZIP, "sha256:" + hashlib.sha256(gz).hexdigest(), len(gz)), gz),
            "sha256:" + hashlib.sha256(plain).hexdigest())


def _base(tar):
    for d in ("etc", "usr", "usr/bin", "data", "data/old", "lib"):
        _entry(tar, d, tarfile.DIRTYPE, mode=0o755)
    _entry(tar, "etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n")
    _entry(tar, "etc/config", data=b"setting=1\n")
    _entry(tar, "usr/bin/tool", data=b"#!/bin/sh\necho tool\n", mode=0o755)
    _entry(tar, "bin", tarfile.SYMTYPE, link="usr/bin")
    _entry(tar, "data/old/x", data=b"x\n")
    _entry(tar, "data/old/y", data=b"y\n")
    _entry(tar, "lib/gone", data=b"to be whited out\n")
    _entry(tar, "lib/stays", data=b"stays\n")


def _middle(tar):
    _entry(tar, "lib/.wh.gone")
    _entry(tar, "data/old", tarfile.DIRTYPE, mode=0o750)
    _entry(tar, "data/old/.wh..wh..opq")
    _entry(tar, "data/old/new", data=b"only me\n")
    _entry(tar, "etc/passwd", data=b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    _entry(tar, "usr/bin/tool2", tarfile.SYMTYPE, link="tool")
    _entry(tar, "usr/bin/tool3", data=b"#!/bin/sh\necho three\n", mode=0o755)
    _entry(tar, "usr/bin/tool-hard", tarfile.LNKTYPE, link="usr/bin/tool3")  # within the layer, as docker makes them


def _top(tar):
    _entry(tar, "etc/.wh.config")
    _entry(tar, "srv", tarfile.DIRTYPE, mode=0o700)
    _entry(tar, "srv/blob", data=os.urandom(3 << 20))  # big enough to still be downloading while others unpack


def _push_image(reg: RegistryProcess, ref: str, builders) -> tuple[list[Blob], Blob, Blob, list[str]]:
    made = [_layer(b) for b in builders]
    layers, diff_ids = [m[0] for m in made], [m[1] for m in made]
    config = json.dumps({"architecture": HOST.architecture, "os": HOST.os,
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}, sort_keys=True).encode()
    cfg = Blob(Descriptor(mediatypes.OCI_CONFIG, "sha256:" + hashlib.sha256(config).hexdigest(), len(config)), config)
    mdata = manifest_bytes(Manifest(mediatypes.OCI_MANIFEST, cfg.desc, [b.desc for b in layers]))
    manifest = Blob(Descriptor(mediatypes.OCI_MANIFEST, "sha256:" + hashlib.sha256(mdata).hexdigest(), len(mdata)),
                    mdata)
    with Registry(Options(plain_http=True)) as client:
        for b in (*layers, cfg):
            client.push_blob(ref, b.desc, lambda b=b: io.BytesIO(b.data))
        client.push_manifest(ref, manifest.desc, manifest.data)
    return layers, cfg, manifest, diff_ids


# -- reading a root filesystem -----------------------------------------------------------------


def _tree(root: str) -> dict[str, tuple]:
    """Every path under root: kind, permission bits, and its bytes' digest
    or its link target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)))
            else:
                with open(path, "rb") as f:
                    out[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), hashlib.sha256(f.read()).hexdigest())
    return out


def _mounted_tree(d, ref: str) -> dict[str, tuple]:
    target = os.path.join(d.dir, "rootfs")
    os.makedirs(target, exist_ok=True)
    d.ctr("images", "mount", ref, target)
    try:
        return _tree(target)
    finally:
        d.ctr("images", "unmount", "--rm", target)


def _rows(out: bytes) -> list[list[str]]:
    return [line.split() for line in out.decode().splitlines()[1:]]


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.containerd
def test_whiteouts_give_the_same_rootfs_on_pycontainerd_and_containerd(registry, daemon, containerd):
    ref = f"{registry.host}/pipeline/whiteouts:1"
    layers, cfg, manifest, diff_ids = _push_image(registry, ref, [_base, _middle, _top])
    chain = chain_ids(diff_ids)
    trees = []
    for d in (daemon(), containerd):
        out = d.pyctr("images", "pull", "--plain-http", "--max-concurrent-downloads", "2", ref).stdout.decode()
        assert [line.split()[1] for line in out.splitlines()[1:6]] == ["done"] * 5
        snaps = {r[0]: r[-1] for r in _rows(d.ctr("snapshots", "ls").stdout)}
        assert snaps == {c: "Committed" for c in chain}
        check = _rows(d.ctr("images", "check").stdout)
        assert check[0][3:5] == ["complete", "(4/4)"] and check[0][-1] == "true"
        trees.append(_mounted_tree(d, ref))
        # pulling again: every blob exists, the chain is the same
        again = d.pyctr("images", "pull", "--plain-http", ref).stdout.decode().splitlines()
        assert [line.split()[1] for line in again[1:6]] == ["exists"] * 5
        assert {r[0]: r[-1] for r in _rows(d.ctr("snapshots", "ls").stdout)} == snaps
        assert _rows(d.ctr("leases", "ls").stdout) == []
    ours, theirs = trees
    assert ours == theirs
    assert "lib/gone" not in ours and "etc/config" not in ours and ours["lib/stays"][0] == "file"
    assert sorted(p for p in ours if p.startswith("data/old/")) == ["data/old/new"]
    assert ours["data/old"] == ("dir", "0o750") and ours["bin"] == ("link", "usr/bin")
    assert ours["usr/bin/tool-hard"] == ours["usr/bin/tool3"]
    assert ours["etc/passwd"][2] == hashlib.sha256(
        b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n").hexdigest()


def test_a_layer_whose_bytes_do_not_match_leaves_no_image(registry, daemon):
    d = daemon()
    keep_ref = f"{registry.host}/pipeline/keep:1"
    _push_image(registry, keep_ref, [_base])
    d.pyctr("images", "pull", "--plain-http", keep_ref)

    ref = f"{registry.host}/pipeline/tampered:1"
    salt = os.urandom(16)  # blobs of its own: the registry shares a blob between repositories

    def middle(tar):
        _middle(tar)
        _entry(tar, "salt", data=salt)

    layers, cfg, manifest, diff_ids = _push_image(registry, ref, [_base, middle, _top])
    bad = layers[1].desc.digest
    path = registry.blob_data_path(bad)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(data))
    # one download at a time: the layer after the bad one is still queued
    # when the pull fails, and is dropped
    r = d.pyctr("images", "pull", "--plain-http", "--max-concurrent-downloads", "1", ref, check=False)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.startswith("pyctr: ") and bad in err and "Traceback" not in err
    assert d.ctr("images", "ls", "-q").stdout.decode().split() == [keep_ref]
    stored = d.ctr("content", "ls", "-q").stdout.decode()
    assert bad not in stored and layers[2].desc.digest not in stored
    assert _rows(d.ctr("leases", "ls").stdout) == []
    # GC (run by a synchronous image delete) finds nothing of the failed
    # pull still referenced: no snapshot, no blob, no ingest left
    d.ctr("images", "rm", "--sync", keep_ref)
    assert _rows(d.ctr("snapshots", "ls").stdout) == []
    assert d.ctr("content", "ls", "-q").stdout.decode().split() == []
    assert _rows(d.ctr("content", "active").stdout) == []


def _run_in_pty(argv: list[str]) -> tuple[int, bytes, bytes]:
    """argv with stdout on a pseudo-terminal (80x40... wide enough); returns
    the exit code, everything drawn, and stderr."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = clean_env({"TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50"})
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    drawn = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                raise AssertionError("no output from the pull for 60 s")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        code = proc.wait(60)
        stderr = proc.stderr.read()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return code, bytes(drawn), stderr


def test_progress_on_a_terminal_draws_states_and_ends_done(registry, daemon):
    d = daemon()
    ref = f"{registry.host}/pipeline/tty:1"
    layers, cfg, manifest, diff_ids = _push_image(registry, ref, [_base, _middle, _top])
    code, drawn, stderr = _run_in_pty([PYCTR, "--address", d.address, "images", "pull", "--plain-http", ref])
    assert code == 0, stderr.decode()
    text = ANSI.sub(b"", drawn).decode()
    assert "\x1b[" in drawn.decode()  # drawn in place, not printed as plain lines
    assert "resolving" in text or "resolved" in text
    # the last frame: the reference resolved, every blob done, the totals line
    frame = text[text.rindex(ref + ":"):].splitlines()
    states = {line.split()[0]: line.split()[1] for line in frame if line.strip() and not line.startswith("elapsed")}
    assert states[ref + ":"] == "resolved"
    for b in (*layers, cfg, manifest):
        kind = "layer" if b in layers else ("config" if b is cfg else "manifest")
        assert states[f"{kind}-{b.desc.digest[:19]}:"] == "done"
    assert any(line.startswith("elapsed: ") for line in frame)
    assert f"unpacking {platforms.format_platform(HOST)}" not in text  # ctr's plain lines are for pipes only
    # every frame drawn shows blobs in the pipeline's states only
    known = {"resolving", "resolved", "waiting", "downloading", "downloaded", "unpacking", "done", "exists"}
    for line in text.splitlines():
        words = line.split()
        if len(words) > 1 and re.match(r"(layer|config|manifest)-sha256:[0-9a-f]{12}:$", words[0]):
            assert words[1] in known, line
    snaps = {r[0] for r in _rows(d.ctr("snapshots", "ls").stdout)}
    assert snaps == set(chain_ids(diff_ids))
