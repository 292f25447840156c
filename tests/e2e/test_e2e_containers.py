"""The real `ctr containers` against pycontainerd: `create` from an image
imported with `ctr images import` (containerd's client prepares the
container's snapshot from the unpacked image and writes the spec it
built), `ls` with filters, `info`, `label`, `rm`, containerd's errors for
a duplicate or missing container, and the container's snapshot kept by
the garbage collector until `rm`."""

from __future__ import annotations

import json
import os

import pytest

from busybox_image import NAME, write_busybox_layout

pytestmark = pytest.mark.e2e

RUNC = "io.containerd.runc.v2"


def _rows(out: bytes) -> list[list[str]]:
    return [line.split() for line in out.decode().splitlines()[1:] if line.strip()]


@pytest.fixture
def imported(daemon):
    d = daemon()
    d.ctr("images", "import", write_busybox_layout(os.path.join(d.dir, "busybox.tar")))
    return d


def test_ctr_containers_create_ls_info_label_rm(imported):
    d = imported
    d.ctr("containers", "create", "--label", "team=a", NAME, "c1", "--", "/bin/sh", "-c", "echo hi")
    d.ctr("containers", "create", NAME, "c2")
    out = d.ctr("containers", "ls")
    lines = out.stdout.decode().splitlines()
    assert lines[0].split() == ["CONTAINER", "IMAGE", "RUNTIME"]
    assert _rows(out.stdout) == [["c1", NAME, RUNC], ["c2", NAME, RUNC]]
    assert d.ctr("containers", "ls", "-q").stdout == b"c1\nc2\n"
    assert d.ctr("containers", "ls", "-q", "labels.team==a").stdout == b"c1\n"
    assert d.ctr("containers", "ls", "-q", "id==c2").stdout == b"c2\n"

    info = json.loads(d.ctr("containers", "info", "c1").stdout)
    assert info["ID"] == "c1" and info["Image"] == NAME
    assert info["Runtime"]["Name"] == RUNC
    assert info["Labels"]["team"] == "a"
    assert (info["Snapshotter"], info["SnapshotKey"]) == ("overlayfs", "c1")
    # the spec containerd's client built from the image config, read back
    assert info["Spec"]["process"]["args"] == ["/bin/sh", "-c", "echo hi"]
    assert any(e.startswith("PATH=") for e in info["Spec"]["process"]["env"])
    assert info["CreatedAt"] == info["UpdatedAt"]
    # the snapshot it prepared is the container's, on the image's layer
    snaps = {r[0]: r for r in _rows(d.ctr("snapshots", "ls").stdout)}
    assert snaps["c1"][-1] == "Active" and snaps["c2"][-1] == "Active"

    # ctr prints every label after the change (its client added the image's stop signal)
    printed = set(d.ctr("containers", "label", "c1", "team=b", "extra=1").stdout.decode().strip().split(","))
    assert {"team=b", "extra=1", "io.containerd.image.config.stop-signal=SIGTERM"} == printed
    labels = json.loads(d.ctr("containers", "info", "c1").stdout)["Labels"]
    assert (labels["team"], labels["extra"]) == ("b", "1")
    d.ctr("containers", "label", "c1", "extra=")
    assert "extra" not in json.loads(d.ctr("containers", "info", "c1").stdout)["Labels"]

    d.ctr("containers", "rm", "c1", "c2")
    assert d.ctr("containers", "ls", "-q").stdout == b""
    # ctr rm deletes the container with its snapshot (WithSnapshotCleanup)
    assert "c1" not in {r[0] for r in _rows(d.ctr("snapshots", "ls").stdout)}


def test_ctr_reports_containerds_errors_for_duplicates_and_missing_containers(imported):
    d = imported
    d.ctr("containers", "create", NAME, "dup")
    again = d.ctr("containers", "create", NAME, "dup", check=False)
    assert again.returncode != 0
    # the snapshot is prepared first, under the same key: containerd's answer
    assert b"already exists" in again.stderr
    missing = d.ctr("containers", "info", "nope", check=False)
    assert missing.returncode != 0
    assert b'container "nope" in namespace "default": not found' in missing.stderr
    bad = d.ctr("containers", "create", NAME, "bad/id", check=False)
    assert bad.returncode != 0
    assert b"must match" in bad.stderr or b"invalid argument" in bad.stderr
    assert d.ctr("containers", "ls", "-q").stdout == b"dup\n"


def test_a_containers_snapshot_survives_gc_until_the_container_is_gone(imported):
    d = imported
    d.ctr("containers", "create", NAME, "keep")
    # a sync image removal runs a collection: the image's content goes, the
    # container keeps its snapshot and, through it, the image's layer
    d.ctr("images", "rm", "--sync", NAME)
    assert d.ctr("content", "ls", "-q").stdout == b""
    names = {r[0] for r in _rows(d.ctr("snapshots", "ls").stdout)}
    assert "keep" in names and len(names) == 2
    d.ctr("containers", "delete", "--keep-snapshot", "keep")
    d.ctr("leases", "create", "--id", "trigger")
    d.ctr("leases", "rm", "--sync", "trigger")
    assert _rows(d.ctr("snapshots", "ls").stdout) == []
