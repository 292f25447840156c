"""The pieces of `pyctr images pull` that are pure functions: the OCI
image spec's ChainID, and ctr's number formats (Go's Duration String,
go-units' binary sizes as ctr's progress shows them)."""

from __future__ import annotations

import hashlib

from pycontainerd.client.image_unpack import chain_ids
from pycontainerd.client.commands.snapshots import human_bytes as _bytes
from pycontainerd.pkg.goduration import format as _format


def go_duration(seconds: float) -> str:
    return _format(round(seconds * 1e9))


def test_chain_ids_follow_the_image_spec():
    a, b, c = ("sha256:" + hashlib.sha256(x).hexdigest() for x in (b"a", b"b", b"c"))
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, ab, abc]
    assert chain_ids([]) == []


def test_go_duration_strings():
    assert go_duration(0.0000005) == "500ns"
    assert go_duration(0.035825093) == "35.825093ms"
    assert go_duration(1.5) == "1.5s"
    assert go_duration(2.0) == "2s"
    assert go_duration(61.25) == "1m1.25s"
    assert go_duration(3600 + 120 + 3) == "1h2m3s"


def test_progress_sizes_as_ctr_prints_them():
    assert _bytes(0) == "0.0 B"
    assert _bytes(1126) == "1.1 KiB"
    assert _bytes(5 * 1024 * 1024) == "5.0 MiB"
    assert f"{_bytes(1126):>7.6}" == " 1.1 Ki"
