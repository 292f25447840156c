"""The names containerd's archive importer and exporter give images
(images/archive/reference.go), as client/archive_import.py reproduces them."""

from __future__ import annotations

import pytest

from pycontainerd.client.archive_import import (add_ref_prefix, digest_translator, filter_ref_prefix,
                                                normalize_reference, oci_reference_name, ArchiveError)
from pycontainerd.client.archive_export import _familiar


@pytest.mark.parametrize("name, want", [
    ("docker.io/library/busybox:latest", "latest"),
    ("example.com:5000/team/app:1.2", "1.2"),
    ("example.com/app@sha256:" + "a" * 64, "@sha256:" + "a" * 64),
    ("example.com/app:1@sha256:" + "a" * 64, "1@sha256:" + "a" * 64),
    ("example.com/app", ""),
    ("app:1", "app:1"),            # no host part: the name itself
])
def test_oci_reference_name(name, want):
    assert oci_reference_name(name) == want


def test_ref_prefixes_as_ctr_import_applies_them():
    add = add_ref_prefix("import-2026-12-04")
    assert add("v1") == "import-2026-12-04:v1"
    assert add("example.com/app:1") == "example.com/app:1"
    keep = filter_ref_prefix("example.com/app")
    assert keep("1") == "example.com/app:1"
    assert keep("example.com/app:2") == "example.com/app:2"
    assert keep("example.com/app@sha256:" + "b" * 64) == "example.com/app@sha256:" + "b" * 64
    assert keep("example.com/application:2") == ""   # a longer name is not under the prefix
    assert keep("other.io/x:1") == ""
    assert digest_translator("p")("sha256:" + "c" * 64) == "p@sha256:" + "c" * 64


def test_docker_tags_normalise_and_familiarise():
    assert normalize_reference("busybox") == "docker.io/library/busybox:latest"
    assert normalize_reference("team/app:2") == "docker.io/team/app:2"
    with pytest.raises(ArchiveError, match='normalize image ref "UPPER:1"'):
        normalize_reference("UPPER:1")
    assert _familiar("docker.io/library/busybox:1") == "busybox:1"
    assert _familiar("example.com/app") == "example.com/app:latest"
