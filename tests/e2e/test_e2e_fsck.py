"""`pycontainerd fsck` on roots a real daemon filled, then stopped.

The root holds what users make: two images imported with the real `ctr
images import` (unpacked on overlayfs), snapshots prepared and committed
with `ctr snapshots`, and, through the gRPC API, a lease holding blobs, an
active snapshot and a half-written ingest. fsck says it is clean (exit 0).
Then the root is damaged the ways a crash or a hand damages it (a blob
file deleted, a blob's bytes changed, a stray blob added, snapshot
directories and records removed on either side, ingest directories left
behind or lost, a reference of a lease that is gone): every damage is one finding
(exit 1), `--repair` fixes what it says it fixes, the next fsck reports
only what is left for the garbage collector, and a daemon started on the
repaired root serves everything that was intact, the real ctr checking;
once its collector ran, fsck is clean. fsck on a root a live daemon holds
is refused, naming the daemon's pid; a killed daemon's root is checked.
The native snapshotter's root_path and views, a disabled snapshotter, and
btrfs subvolumes on a loop-mounted btrfs are checked too.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import time

import grpc
import pytest

from e2e_support import START_TIMEOUT, run_pycontainerd

from pycontainerd.api.services.content.v1 import content_pb2 as cpb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as cpb_grpc
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as spb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc as spb_grpc

pytestmark = pytest.mark.e2e

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
LEASE = "keep"
MD = (("containerd-namespace", "default"),)
LEASED = MD + (("containerd-lease", LEASE),)
META = "io.containerd.metadata.v1.sqlite/meta.db"
CONTENT = "io.containerd.content.v1.content"
OVERLAY = "io.containerd.snapshotter.v1.overlayfs"

NO_GC = {"disabled_plugins": ["io.containerd.gc.v1.scheduler"]}


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


def _image_tar(name: str) -> tuple[bytes, str, str]:
    """An OCI layout holding one image called `name` (two layers whose
    files name it, so two images share no blob); its manifest digest, and
    the chain id of its top layer (the key of its top snapshot once unpacked)."""
    raw = [_tar({"hello.txt": f"hello from {name}\n".encode()}), _tar({"etc/motd": name.encode()})]
    layers = [gzip.compress(r, mtime=0) for r in raw]
    config = json.dumps({"architecture": ARCH, "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [_digest(r) for r in raw]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(l),
                    "size": len(l)} for l in layers],
    }).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest),
        "size": len(manifest), "platform": {"architecture": ARCH, "os": "linux"},
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1"}}]}).encode()
    blobs = {"blobs/sha256/" + _digest(b)[7:]: b for b in [manifest, config, *layers]}
    top = _digest(f"{_digest(raw[0])} {_digest(raw[1])}".encode())
    return _tar({"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index, **blobs}), _digest(manifest), top


def _fsck(d, *args: str):
    p = run_pycontainerd("fsck", "--config", d.config_path, *args, timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def _findings(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines() if line]


def _write_blob(channel, data: bytes, ref: str) -> str:
    list(cpb_grpc.ContentStub(channel).Write(iter([cpb.WriteContentRequest(
        action=cpb.COMMIT, ref=ref, data=data, total=len(data), expected=_digest(data))]),
        metadata=LEASED, timeout=30))
    return _digest(data)


def _half_ingest(channel, ref: str) -> None:
    """Open an ingest under the lease, write part of it, and leave (it stays, resumable)."""
    list(cpb_grpc.ContentStub(channel).Write(iter([
        cpb.WriteContentRequest(action=cpb.STAT, ref=ref, total=100),
        cpb.WriteContentRequest(action=cpb.WRITE, ref=ref, offset=0, data=b"x" * 10)]),
        metadata=LEASED, timeout=30))


class Root:
    """Paths and the two databases of a stopped daemon's root."""

    def __init__(self, d):
        self.d = d
        self.root = d.root

    def meta(self) -> sqlite3.Connection:
        return sqlite3.connect(os.path.join(self.root, META), isolation_level=None)

    def backend(self) -> sqlite3.Connection:
        return sqlite3.connect(os.path.join(self.root, OVERLAY, "metadata.db"), isolation_level=None)

    def blob(self, dgst: str) -> str:
        return os.path.join(self.root, CONTENT, "blobs", "sha256", dgst[7:])

    def backend_key(self, key: str) -> str:
        with self.meta() as db:
            return db.execute("SELECT backend_key FROM snapshots WHERE namespace = 'default' AND "
                              "snapshotter = 'overlayfs' AND key = ?", (key,)).fetchone()[0]

    def snapshot_dir(self, key: str) -> str:
        with self.backend() as db:
            sid = db.execute("SELECT id FROM snapshots WHERE key = ?", (self.backend_key(key),)).fetchone()[0]
        return os.path.join(self.root, OVERLAY, "snapshots", str(sid))


@pytest.fixture
def filled(daemon):
    """A daemon's root with images, snapshots, a lease, its blobs, a held
    snapshot and a half-written ingest; the daemon stopped. Returns
    (daemon, facts)."""
    d = daemon()
    facts: dict[str, str] = {}
    for name in ("example.com/fsck/intact:1", "example.com/fsck/broken:1"):
        data, manifest, top = _image_tar(name)
        path = os.path.join(d.dir, name.split("/")[-1].replace(":", "-") + ".tar")
        with open(path, "wb") as f:
            f.write(data)
        d.ctr("images", "import", "--snapshotter", "overlayfs", path)
        facts[name] = manifest
        facts[name + " top"] = top
    for key in ("base", "work-gone", "backend-gone", "unheld"):
        d.ctr("snapshots", "--snapshotter", "overlayfs", "prepare", key + ("-active" if key == "base" else ""))
    d.ctr("snapshots", "--snapshotter", "overlayfs", "commit", "base", "base-active")
    d.ctr("leases", "create", "--id", LEASE)
    with grpc.insecure_channel("unix:" + d.address) as ch:
        for what in ("kept", "deleted", "corrupted"):
            facts[what] = _write_blob(ch, f"a blob the lease keeps: {what}\n".encode() * 100, f"ref-{what}")
        spb_grpc.SnapshotsStub(ch).Prepare(spb.PrepareSnapshotRequest(snapshotter="overlayfs", key="held"),
                                           metadata=LEASED, timeout=30)
        _half_ingest(ch, "half")
        _half_ingest(ch, "half-lost")
    assert d.stop() == 0
    return d, facts


def test_a_filled_root_is_clean(filled):
    d, _ = filled
    rc, out, err = _fsck(d, "--verify-content")
    assert (rc, out) == (0, ""), err
    assert "fsck: clean" in err
    rc, out, err = _fsck(d, "--repair")
    assert (rc, out) == (0, ""), err


def test_a_live_daemon_root_is_refused(daemon):
    d = daemon()
    rc, out, err = _fsck(d)
    assert rc == 2 and out == ""
    assert f"pid {d.pid}" in err and "refusing to check it" in err, err
    assert d.running
    # a killed daemon's lock file is not held: its root is checked
    d.kill()
    assert os.path.exists(os.path.join(d.root, "pycontainerd.lock"))
    rc, out, err = _fsck(d)
    assert (rc, out) == (0, ""), err


def _damage(r: Root, facts: dict[str, str]) -> dict[str, str]:
    """Every kind of damage, once; returns what each one touched."""
    hurt: dict[str, str] = {}
    # a blob file deleted: the lease's blob, and the broken image's manifest
    os.unlink(r.blob(facts["deleted"]))
    os.unlink(r.blob(facts["example.com/fsck/broken:1"]))
    # a blob's bytes changed (same size: only --verify-content sees it)
    path = r.blob(facts["corrupted"])
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"X")
    # a stray blob nothing records
    stray = b"nobody recorded me\n"
    with open(r.blob(_digest(stray)), "wb") as f:
        f.write(stray)
    hurt["stray"] = _digest(stray)
    # a file whose name is no digest
    with open(os.path.join(r.root, CONTENT, "blobs", "sha256", "not-a-digest"), "wb") as f:
        f.write(b"what is this\n")
    # a snapshot's directory removed
    shutil.rmtree(os.path.dirname(r.snapshot_dir("work-gone") + "/"))
    # a snapshot gone from the snapshotter (its record and directory), recorded in the metadata
    bkey = r.backend_key("backend-gone")
    shutil.rmtree(r.snapshot_dir("backend-gone"))
    with r.backend() as db:
        db.execute("DELETE FROM snapshots WHERE key = ?", (bkey,))
    # metadata records deleted: the intact image's top layer (committed),
    # the lease's active snapshot (held) and an active snapshot nothing holds
    top = hurt["top"] = facts["example.com/fsck/intact:1 top"]
    with r.meta() as db:
        for key in (top, "held", "unheld"):
            db.execute("DELETE FROM snapshots WHERE namespace = 'default' AND snapshotter = 'overlayfs' AND key = ?",
                       (key,))
    # a directory no snapshot record names
    os.mkdir(os.path.join(r.root, OVERLAY, "snapshots", "9999"))
    # ingests: one's directory lost; a directory with no status; one no namespace knows
    ingest = os.path.join(r.root, CONTENT, "ingest")
    shutil.rmtree(os.path.join(ingest, hashlib.sha256(b"default/half-lost").hexdigest()))
    os.mkdir(os.path.join(ingest, "0" * 64))
    ghost = os.path.join(ingest, hashlib.sha256(b"default/ghost").hexdigest())
    shutil.copytree(os.path.join(ingest, hashlib.sha256(b"default/half").hexdigest()), ghost)
    with open(os.path.join(ghost, "ref"), "w") as f:
        f.write("default/ghost")
    # a reference of a lease that is gone
    with r.meta() as db:
        db.execute("INSERT INTO lease_resources VALUES ('default', 'gone', 'content', ?)", (_digest(b"nothing"),))
        # and no damage: a lease naming content that does not exist (containerd's
        # AddResource allows it: a client may reserve what it has not made yet)
        db.execute("INSERT INTO lease_resources VALUES ('default', ?, 'content', ?)", (LEASE, _digest(b"later")))
    return hurt


def _kinds(findings: list[list[str]]) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for f in findings:
        out.setdefault(f[0], []).append(f)
    return out


def test_each_damage_is_found_repaired_and_the_rest_survives(filled, daemon):
    d, facts = filled
    r = Root(d)
    hurt = _damage(r, facts)

    rc, out, err = _fsck(d)
    assert rc == 1, err
    found = _kinds(_findings(out))
    # damage has four fields; garbage (no finding) a fifth saying the collector takes it
    assert all(len(f) == 4 for f in _findings(out) if not f[-1].startswith("left for GC: ")), out
    assert {f[0] for f in _findings(out) if len(f) == 5} == {
        "blob-unreferenced", "snapshot-unrecorded", "snapshot-dir-unrecorded"}, out
    assert sorted((f[1], f[2]) for f in found["blob-missing"]) == sorted(
        [("default", facts["deleted"]), ("default", facts["example.com/fsck/broken:1"])])
    assert found["blob-missing"][0][3].startswith(os.path.join(r.root, CONTENT, "blobs", "sha256"))
    assert [(f[1], f[2]) for f in found["blob-unreferenced"]] == [("-", hurt["stray"])]
    assert "blob-corrupt" not in found  # only --verify-content reads the bytes
    assert [f[2] for f in found["blob-invalid-name"]] == ["sha256:not-a-digest"]
    assert [f[2] for f in found["image-target-missing"]] == [
        f"image example.com/fsck/broken:1 -> {facts['example.com/fsck/broken:1']}"]
    assert [(f[1], f[2]) for f in found["snapshot-dir-missing"]] == [("default", "overlayfs/work-gone")]
    assert [(f[1], f[2]) for f in found["snapshot-missing"]] == [("default", "overlayfs/backend-gone")]
    assert sorted(f[2].split("/", 1)[1] for f in found["snapshot-unrecorded"]) == sorted(
        [hurt["top"], "held", _unheld_backend_key(r)])
    assert [f[3] for f in found["snapshot-dir-unrecorded"]] == [os.path.join(r.root, OVERLAY, "snapshots", "9999")]
    assert [f[2] for f in found["ingest-missing"]] == ["half-lost"]
    assert [f[2] for f in found["ingest-unrecorded"]] == ["default/ghost"]
    assert len(found["ingest-no-status"]) == 1 and found["ingest-no-status"][0][2].startswith("0" * 64)
    assert [f[2] for f in found["lease-dangling"]] == [
        f"lease gone -> content {_digest(b'nothing')} (the lease does not exist)"]

    rc, out, err = _fsck(d, "--verify-content")
    assert rc == 1
    corrupt = _kinds(_findings(out))["blob-corrupt"]
    assert [(f[1], f[2]) for f in corrupt] == [("default", facts["corrupted"])]

    # repair: every line says what was done
    rc, out, err = _fsck(d, "--repair", "--verify-content")
    assert rc == 4, err  # the broken image cannot be fixed by fsck
    done = _kinds(_findings(out))
    outcome = {(f[0], f[2]): f[4] for f in _findings(out)}
    assert all(len(f) == 5 for f in _findings(out)), out
    assert done["blob-corrupt"][0][4].startswith("quarantined: moved to " + os.path.join(r.root, CONTENT, "quarantine"))
    assert "dropped the records in default" in done["blob-corrupt"][0][4]
    assert outcome[("blob-missing", facts["deleted"])] == "repaired: dropped the record and 1 lease reference"
    assert outcome[("blob-unreferenced", hurt["stray"])].startswith("left for GC")
    assert outcome[("snapshot-unrecorded", "overlayfs/" + hurt["top"])] == "repaired: restored the metadata record"
    assert outcome[("snapshot-unrecorded", "overlayfs/held")] == "repaired: restored the metadata record"
    assert outcome[("snapshot-unrecorded", "overlayfs/" + _unheld_backend_key(r))].startswith("left for GC")
    assert outcome[("snapshot-dir-missing", "overlayfs/work-gone")].startswith("repaired: dropped the snapshotter's")
    assert outcome[("snapshot-missing", "overlayfs/backend-gone")] == "repaired: dropped the record"
    assert outcome[("ingest-missing", "half-lost")] == "repaired: dropped the record and 1 lease reference"
    assert outcome[("ingest-unrecorded", "default/ghost")] == "repaired: removed the directory"
    assert done["ingest-no-status"][0][4] == "repaired: removed the directory"
    assert done["lease-dangling"][0][4] == "repaired: removed the reference"
    assert done["image-target-missing"][0][4].startswith("not fixed")
    assert done["blob-invalid-name"][0][4] == "quarantined: moved to " + os.path.join(
        r.root, CONTENT, "quarantine", "sha256", "not-a-digest")
    # quarantined, not deleted: the bytes are kept
    assert os.path.getsize(done["blob-corrupt"][0][4].split("moved to ")[1].split(";")[0]) > 0

    # what is left: the garbage the daemon collects, and the image that points at nothing
    rc, out, err = _fsck(d, "--verify-content")
    left = _kinds(_findings(out))
    assert rc == 1
    assert set(left) == {"blob-unreferenced", "snapshot-unrecorded", "snapshot-dir-unrecorded",
                         "image-target-missing"}, out
    assert [f[2] for f in left["snapshot-unrecorded"]] == ["overlayfs/" + _unheld_backend_key(r)]

    # a daemon on the repaired root serves what was intact
    d2 = daemon(config={"root": d.root, "state": d.state, "grpc": {"address": d.address}})
    # (ctr exits 1: the broken image, which fsck reported and left alone, cannot be checked)
    check = d2.ctr("images", "check", check=False).stdout.decode()
    intact = [line.split() for line in check.splitlines() if line.startswith("example.com/fsck/intact:1")]
    assert intact and intact[0][3:5] == ["complete", "(3/3)"] and intact[0][-1] == "true", check
    keys = {line.split()[0] for line in d2.ctr("snapshots", "--snapshotter", "overlayfs", "ls").stdout.decode()
            .splitlines()[1:] if line.strip()}
    assert {"base", "held", hurt["top"]} <= keys, keys
    assert not {"work-gone", "backend-gone", "unheld"} & keys
    assert LEASE in d2.ctr("leases", "ls").stdout.decode()
    from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc

    with grpc.insecure_channel("unix:" + d2.address) as ch:  # the reservation is kept
        held = leases_pb2_grpc.LeasesStub(ch).ListResources(leases_pb2.ListResourcesRequest(id=LEASE), metadata=MD,
                                                           timeout=30).resources
    assert ("content", _digest(b"later")) in {(r.type, r.id) for r in held}
    assert d2.ctr("content", "get", facts["kept"]).stdout == b"a blob the lease keeps: kept\n" * 100
    statuses = d2.ctr("content", "active").stdout.decode()
    assert "half" in statuses and "half-lost" not in statuses
    # its collector takes the garbage fsck left to it
    deadline = time.monotonic() + START_TIMEOUT
    while os.path.exists(r.blob(hurt["stray"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(r.blob(hurt["stray"]))
    assert not os.path.exists(os.path.join(r.root, OVERLAY, "snapshots", "9999"))
    # what fsck could not fix is the user's to decide: here, the image goes
    d2.ctr("images", "rm", "--sync", "example.com/fsck/broken:1")
    assert d2.stop() == 0

    rc, out, err = _fsck(d, "--verify-content")
    assert (rc, out) == (0, ""), out + err


def test_after_repair_a_second_fsck_is_clean_before_any_daemon_ran(filled, daemon):
    """What a crash leaves is damage (records without data, references to
    nothing), which --repair fixes, and garbage (data no record names),
    which the daemon's collector removes, as containerd's does: garbage
    is listed but is no finding, so right after --repair fsck says clean,
    without a daemon run in between; once a daemon ran, nothing is listed."""
    d, facts = filled
    r = Root(d)
    os.unlink(r.blob(facts["deleted"]))  # damage: a record (held by the lease) whose blob is gone
    unheld = os.path.join(r.snapshot_dir("unheld"), "fs")
    with r.meta() as db:  # damage: a reference of a lease that is gone
        db.execute("INSERT INTO lease_resources VALUES ('default', 'gone', 'content', ?)", (_digest(b"nothing"),))
        # garbage: an active snapshot's record gone (nothing holds it)
        db.execute("DELETE FROM snapshots WHERE namespace = 'default' AND snapshotter = 'overlayfs' AND key = 'unheld'")
    stray = b"written, never recorded\n"  # garbage: a blob no namespace records
    with open(r.blob(_digest(stray)), "wb") as f:
        f.write(stray)
    os.mkdir(os.path.join(r.root, OVERLAY, "snapshots", "9998"))  # garbage: a directory no snapshot names
    garbage = [["blob-unreferenced", "-", _digest(stray), r.blob(_digest(stray)),
                "left for GC: the daemon's first collection removes it"],
               ["snapshot-dir-unrecorded", "-", "overlayfs/9998", os.path.join(r.root, OVERLAY, "snapshots", "9998"),
                "left for GC: the snapshotter's cleanup removes it at the next start"],
               ["snapshot-unrecorded", "default", "overlayfs/" + _unheld_backend_key(r), unheld,
                "left for GC: nothing holds it, the daemon removes it at its next start"]]

    rc, out, err = _fsck(d)
    assert rc == 1, err
    assert [f[:2] + f[2:3] for f in _findings(out) if len(f) == 4] == [
        ["blob-missing", "default", facts["deleted"]],
        ["lease-dangling", "default", f"lease gone -> content {_digest(b'nothing')} (the lease does not exist)"]]
    assert [f for f in _findings(out) if len(f) == 5] == garbage
    assert "fsck: 2 findings (2 fixed by --repair); 3 items left for the daemon's garbage collector" in err

    rc, out, err = _fsck(d, "--repair")
    assert rc == 1, err
    assert [f[4] for f in _findings(out) if not f[4].startswith("left for GC")] == [
        "repaired: dropped the record and 1 lease reference", "repaired: removed the reference"]

    for args in ((), ("--repair",), ("--verify-content",)):  # clean, and a repair has nothing more to do
        rc, out, err = _fsck(d, *args)
        assert (rc, _findings(out)) == (0, garbage), err
        assert "fsck: clean (3 items left for the daemon's garbage collector)" in err

    # a daemon's collector takes the garbage; then nothing is listed
    d2 = daemon(config={"root": d.root, "state": d.state, "grpc": {"address": d.address}})
    deadline = time.monotonic() + START_TIMEOUT
    while os.path.exists(r.blob(_digest(stray))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d2.ctr("content", "get", facts["kept"]).stdout == b"a blob the lease keeps: kept\n" * 100
    assert d2.stop() == 0
    rc, out, err = _fsck(d)
    assert (rc, out) == (0, ""), err


def _unheld_backend_key(r: Root) -> str:
    with r.backend() as db:
        return db.execute("SELECT key FROM snapshots WHERE key GLOB 'default/*/unheld'").fetchone()[0]


def test_native_root_path_views_and_a_parent_that_children_need(daemon):
    """fsck reads the daemon's config: native's root_path is where it looks
    (a view of a committed parent has no directory of its own there, as
    native makes it), a disabled snapshotter is named and left alone, and
    a committed snapshot whose directory is gone but which others are built
    on is reported and not touched by --repair."""
    import toml

    elsewhere = os.path.join(daemon.tempdir(), "native")
    # no collector while the layout is built: nothing holds these snapshots
    # (no lease, no container), so a collection between two ctr calls would
    # take the view before fsck sees it
    d = daemon(config={**NO_GC, "plugins": {"io.containerd.snapshotter.v1.native": {"root_path": elsewhere}}})
    sn = ("snapshots", "--snapshotter", "native")
    d.ctr(*sn, "prepare", "base-active")
    d.ctr(*sn, "commit", "base", "base-active")
    d.ctr(*sn, "view", "look", "base")
    d.ctr(*sn, "prepare", "child", "base")
    assert d.stop() == 0
    assert os.path.exists(os.path.join(elsewhere, "metadata.db"))

    rc, out, err = _fsck(d)
    assert (rc, out) == (0, ""), err

    disabled = os.path.join(d.dir, "disabled.toml")
    with open(disabled, "w") as f:
        toml.dump({**d.config, "disabled_plugins": ["io.containerd.snapshotter.v1.native"]}, f)
    p = run_pycontainerd("--config", disabled, "fsck", timeout=120)  # the daemon's own flag, before the command
    assert (p.returncode, p.stdout) == (0, b""), p.stderr
    assert "fsck: snapshotter native not checked: disabled" in p.stderr.decode()

    with contextlib.closing(sqlite3.connect(os.path.join(elsewhere, "metadata.db"))) as db:
        sid = db.execute("SELECT id FROM snapshots WHERE key GLOB 'default/*/base'").fetchone()[0]
    shutil.rmtree(os.path.join(elsewhere, "snapshots", str(sid)))
    rc, out, err = _fsck(d, "--repair")
    assert rc == 4, err
    assert _findings(out) == [["snapshot-dir-missing", "default", "native/base",
                               os.path.join(elsewhere, "snapshots", str(sid)),
                               "not fixed: 2 snapshots built on it: remove them first"]]
    rc, out, err = _fsck(d)
    assert rc == 1 and [f[0] for f in _findings(out)] == ["snapshot-dir-missing"]


def test_btrfs_subvolumes_on_a_loop_mounted_btrfs(daemon):
    """The btrfs layout (active/, view/, snapshots/ subvolumes): a clean
    root is clean; a view's subvolume deleted is found and its records
    dropped, a subvolume no record names is left to the snapshotter's
    cleanup, which removes it when the daemon starts again."""
    import subprocess

    with open("/proc/filesystems") as f:
        if "btrfs" not in f.read().split():
            pytest.skip("this kernel has no btrfs")
    if not shutil.which("mkfs.btrfs"):
        pytest.skip("btrfs-progs is not installed (make install)")
    base = daemon.tempdir()
    image, point = os.path.join(base, "img"), os.path.join(base, "fs")
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.btrfs", "-q", image], check=True, capture_output=True)
    os.mkdir(point)
    subprocess.run(["mount", "-o", "loop", image, point], check=True)
    d = d2 = None
    try:
        cfg = {"root": os.path.join(point, "root"), "grpc": {"address": os.path.join(base, "s.sock")}}
        d = daemon(config={**cfg, **NO_GC})  # see the native test: nothing holds these snapshots
        sn = ("snapshots", "--snapshotter", "btrfs")
        d.ctr(*sn, "prepare", "k1")
        d.ctr(*sn, "commit", "c1", "k1")
        d.ctr(*sn, "view", "v1", "c1")
        d.ctr(*sn, "prepare", "k2", "c1")
        assert d.stop() == 0
        rc, out, err = _fsck(d)
        assert (rc, out) == (0, ""), err

        broot = os.path.join(d.root, "io.containerd.snapshotter.v1.btrfs")
        # closing(): sqlite3's own `with` commits but leaves the file open,
        # and an open file keeps the loop-mounted btrfs busy at umount
        with contextlib.closing(sqlite3.connect(os.path.join(broot, "metadata.db"))) as db:
            vid = db.execute("SELECT id FROM snapshots WHERE key GLOB 'default/*/v1'").fetchone()[0]
        subprocess.run(["btrfs", "subvolume", "delete", os.path.join(broot, "view", str(vid))], check=True,
                       capture_output=True)
        stray = os.path.join(broot, "active", "999")
        subprocess.run(["btrfs", "subvolume", "create", stray], check=True, capture_output=True)
        rc, out, err = _fsck(d, "--repair")
        assert rc == 1, err
        assert _findings(out) == [
            ["snapshot-dir-missing", "default", "btrfs/v1", os.path.join(broot, "view", str(vid)),
             "repaired: dropped the snapshotter's and the metadata record"],
            ["snapshot-dir-unrecorded", "-", "btrfs/999", stray,
             "left for GC: the snapshotter's cleanup removes it at the next start"]]

        d2 = daemon(config={**cfg, "state": d.state})
        rows = d2.ctr(*sn, "ls").stdout.decode().split("\n")[1:]
        assert sorted(r.split()[0] for r in rows if r.strip()) == ["c1", "k2"]
        assert not os.path.exists(stray)
        assert d2.stop() == 0
        rc, out, err = _fsck(d)
        assert (rc, out) == (0, ""), err
    finally:
        for proc in (d, d2):  # its root is on the image: stop it before unmounting
            if proc is not None and proc.running:
                proc.stop()
        subprocess.run(["umount", point], check=True, capture_output=True)
