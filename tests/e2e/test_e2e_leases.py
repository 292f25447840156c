"""Leases and garbage collection driven by the real `ctr` against a
pycontainerd daemon started as a subprocess: what a user types and reads,
pyctr's output equal to ctr's byte for byte, and a collection removing an
unreferenced blob from disk the way containerd's does."""

from __future__ import annotations

import hashlib
import os
import re
import time

import pytest

pytestmark = pytest.mark.e2e

NO_STARTUP_GC = {"plugins": {"io.containerd.gc.v1.scheduler": {"startup_delay": "0ms"}}}
LIST_HEADER = re.compile(rb"^ID\s+CREATED AT\s+LABELS\s*$")


def test_ctr_creates_lists_and_removes_a_lease(daemon, ctr):
    d = daemon()
    assert ctr(d.address, "leases", "create", "--id", "l1").stdout == b"l1\n"
    out = ctr(d.address, "leases", "ls").stdout.decode().splitlines()
    assert LIST_HEADER.match(out[0].encode())
    row = out[1].split()
    assert row[0] == "l1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)", row[1])
    assert row[2].startswith("containerd.io/gc.expire=")  # ctr's default 24 h expiry
    assert ctr(d.address, "leases", "ls", "-q").stdout == b"l1\n"
    assert ctr(d.address, "leases", "rm", "l1").stdout == b"l1\n"
    assert ctr(d.address, "leases", "ls", "-q").stdout == b""
    gone = ctr(d.address, "leases", "rm", "l1", check=False)
    assert gone.returncode == 1 and gone.stderr == b'ctr: lease "l1": not found\n'


def test_ctr_errors_read_as_containerds(daemon, ctr):
    d = daemon()
    ctr(d.address, "leases", "create", "--id", "dup")
    dup = ctr(d.address, "leases", "create", "--id", "dup", check=False)
    assert dup.stderr == b'ctr: lease "dup": already exists\n'
    bad = ctr(d.address, "leases", "ls", "labels.a==", check=False)
    assert bad.stderr == (b"ctr: failed to list leases: filters: parse error: [labels.a==]: "
                          b"expected value or quoted: invalid argument: invalid argument\n")


def test_pyctr_leases_output_equals_ctrs(daemon, ctr, pyctr):
    d = daemon()
    ctr(d.address, "leases", "create", "--id", "short")
    ctr(d.address, "leases", "create", "--id", "a-much-longer-lease-id", "--expires", "0", "team=zoë", "b=c=d")
    pyctr(d.address, "leases", "create", "--id", "made-by-pyctr", "-x", "1h30m", "x=y")
    ctr(d.address, "leases", "create")  # a generated id
    ctr(d.address, "-n", "other", "leases", "create", "--id", "elsewhere")
    for args in (("leases", "ls"), ("leases", "ls", "-q"), ("leases", "list", "labels.team"),
                 ("-n", "other", "leases", "ls"), ("-n", "empty", "leases", "ls")):
        ours, theirs = pyctr(d.address, *args), ctr(d.address, *args)
        assert ours.stdout == theirs.stdout, args
    assert b"made-by-pyctr" in ctr(d.address, "leases", "ls", "-q").stdout
    for args in (("leases", "rm", "nope"), ("leases", "create", "--id", "short"), ("leases", "ls", "id==")):
        ours, theirs = pyctr(d.address, *args, check=False), ctr(d.address, *args, check=False)
        assert ours.returncode == theirs.returncode == 1
        assert ours.stderr.replace(b"pyctr: ", b"ctr: ") == theirs.stderr
    out = pyctr(d.address, "leases", "rm", "--sync", "short", "made-by-pyctr").stdout
    assert out == b"short\nmade-by-pyctr\n"


def test_collection_removes_an_unreferenced_blob_as_containerd_does(daemon, ctr):
    """`ctr content ingest` takes no lease: the blob is garbage, and goes at
    the collection a deletion brings about (here `leases rm --sync`). The
    start-up collection is turned off: it would take the blob too, as
    containerd's does 100 ms after start, but at a moment the test does not
    choose."""
    d = daemon(config=NO_STARTUP_GC)
    data = b"nobody holds this blob\n"
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    ctr(d.address, "content", "ingest", "--expected-digest", dgst, "ref1", input=data)
    path = os.path.join(d.dir, "root", "io.containerd.content.v1.content", "blobs", "sha256", dgst[7:])
    kept = b"held by a gc.root label\n"
    kept_dgst = "sha256:" + hashlib.sha256(kept).hexdigest()
    ctr(d.address, "content", "ingest", "--expected-digest", kept_dgst, "ref2", input=kept)
    ctr(d.address, "content", "label", kept_dgst, "containerd.io/gc.root=" + time.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert os.path.exists(path)
    ctr(d.address, "leases", "create", "--id", "gc")
    ctr(d.address, "leases", "rm", "--sync", "gc")
    assert not os.path.exists(path)
    assert ctr(d.address, "content", "ls", "-q").stdout == kept_dgst.encode() + b"\n"


@pytest.mark.containerd
def test_pyctr_drives_a_real_containerds_leases(containerd, ctr, pyctr):
    """The other direction: pyctr against a real containerd reads like ctr."""
    addr = containerd.address
    pyctr(addr, "leases", "create", "--id", "from-pyctr", "-x", "0", "k=v")
    ctr(addr, "leases", "create", "--id", "from-ctr")
    for args in (("leases", "ls"), ("leases", "ls", "-q"), ("leases", "ls", "labels.k==v")):
        assert pyctr(addr, *args).stdout == ctr(addr, *args).stdout, args
    assert pyctr(addr, "leases", "rm", "--sync", "from-pyctr", "from-ctr").stdout == b"from-pyctr\nfrom-ctr\n"
    assert ctr(addr, "leases", "ls", "-q").stdout == b""
