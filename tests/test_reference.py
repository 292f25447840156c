"""Image reference parsing and normalisation, with containerd's (and
Docker's) answers written out literally: the cases of their reference
package's normalisation and parse tests."""

from __future__ import annotations

import pytest

from pycontainerd.pkg import reference as r

DIGEST = "sha256:" + "e" * 64


@pytest.mark.parametrize("text, name, familiar", [
    ("fooo/bar", "docker.io/fooo/bar", "fooo/bar"),
    ("library/ubuntu", "docker.io/library/ubuntu", "ubuntu"),
    ("nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", "nonlibrary/ubuntu"),
    ("ubuntu", "docker.io/library/ubuntu", "ubuntu"),
    ("other/library", "docker.io/other/library", "other/library"),
    ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase"),
    ("127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase"),
    ("example.com/private/moonbase", "example.com/private/moonbase", "example.com/private/moonbase"),
    ("example.com:8000/privatebase", "example.com:8000/privatebase", "example.com:8000/privatebase"),
    ("localhost:8000/private/moonbase", "localhost:8000/private/moonbase", "localhost:8000/private/moonbase"),
    ("localhost/privatebase", "localhost/privatebase", "localhost/privatebase"),
    ("index.docker.io/library/ubuntu", "docker.io/library/ubuntu", "ubuntu"),
    ("index.docker.io/ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base", "ubuntu-12.04-base"),
    ("docker.io/ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base", "ubuntu-12.04-base"),
    ("ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base", "ubuntu-12.04-base"),
    ("docker.io/library/ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base", "ubuntu-12.04-base"),
])
def test_normalized_names(text, name, familiar):
    ref = r.parse_normalized_named(text)
    assert ref.name == name
    assert ref.familiar_name() == familiar


@pytest.mark.parametrize("text, expected", [
    ("nothing", "docker.io/library/nothing:latest"),
    ("busybox", "docker.io/library/busybox:latest"),
    ("nothing:tag", "docker.io/library/nothing:tag"),
    ("nothing@" + DIGEST, "docker.io/library/nothing@" + DIGEST),
    ("nothing:tag@" + DIGEST, "docker.io/library/nothing@" + DIGEST),  # both: only the digest is kept
    ("docker.io/library/nothing:latest", "docker.io/library/nothing:latest"),
    ("user/app", "docker.io/user/app:latest"),
    ("localhost:5000/nothing", "localhost:5000/nothing:latest"),
    ("localhost:5000/a/b/c:v1.2-rc_3", "localhost:5000/a/b/c:v1.2-rc_3"),
    ("127.0.0.1:5000/nothing@" + DIGEST, "127.0.0.1:5000/nothing@" + DIGEST),
    ("registry.example.com/team/app:1", "registry.example.com/team/app:1"),
])
def test_parse_docker_ref(text, expected):
    assert str(r.parse_docker_ref(text)) == expected


def test_parts_of_a_reference():
    ref = r.parse_docker_ref("localhost:5000/a/b:v1")
    assert (ref.domain, ref.path, ref.tag, ref.digest, ref.object) == ("localhost:5000", "a/b", "v1", "", "v1")
    ref = r.parse_docker_ref("busybox@" + DIGEST)
    assert (ref.domain, ref.path, ref.tag, ref.object) == ("docker.io", "library/busybox", "", DIGEST)
    assert ref.familiar_string() == "busybox@" + DIGEST


@pytest.mark.parametrize("text, message", [
    ("Nothing", "invalid reference format: repository name must be lowercase"),
    ("docker/Docker", "invalid reference format: repository name must be lowercase"),
    ("https://github.com/docker/docker", "invalid reference format"),
    ("-docker", "invalid reference format"),
    ("docker///docker", "invalid reference format"),
    ("aa/asdf$$^/aa", "invalid reference format"),
    ("busybox:", "invalid reference format"),
    ("busybox:" + "t" * 129, "invalid reference format"),
    ("busybox@sha256:abc", "invalid reference format"),  # a digest has 32 hex digits at least
    ("busybox@sha256:" + "f" * 40, "invalid checksum digest length"),
    ("busybox@sha512:" + "f" * 64, "invalid checksum digest length"),
    ("busybox@md5:" + "f" * 32, "unsupported digest algorithm"),
    ("a" * 64, "invalid repository name (" + "a" * 64 + "), cannot specify 64-byte hexadecimal strings"),
    ("a/" * 127 + "ab", "repository name must not be more than 255 characters"),
])
def test_bad_references_say_what_containerd_says(text, message):
    with pytest.raises(r.ReferenceError) as err:
        r.parse_docker_ref(text)
    assert str(err.value) == message


@pytest.mark.parametrize("text, message", [
    ("", "repository name must have at least one component"),
    ("Uppercase:tag", "repository name must be lowercase"),
    (":justtag", "invalid reference format"),
    ("@" + DIGEST, "invalid reference format"),
])
def test_parse_without_normalising(text, message):
    with pytest.raises(r.ReferenceError) as err:
        r.parse(text)
    assert str(err.value) == message


def test_parse_keeps_names_as_written():
    ref = r.parse("busybox:1")
    assert (ref.domain, ref.path, ref.tag) == ("", "busybox", "1")
    assert str(r.parse("example.com:8000/a/b@" + DIGEST)) == "example.com:8000/a/b@" + DIGEST


def test_with_tag_and_digest():
    base = r.parse_normalized_named("busybox")
    assert str(r.with_tag(base, "1.36")) == "docker.io/library/busybox:1.36"
    assert str(r.with_digest(r.with_tag(base, "1"), DIGEST)) == f"docker.io/library/busybox:1@{DIGEST}"
    with pytest.raises(r.ReferenceError, match="^invalid tag format$"):
        r.with_tag(base, "-bad")
    with pytest.raises(r.ReferenceError, match="^invalid digest format$"):
        r.with_digest(base, "sha256:xyz")


def test_hostile_name_is_linear():
    """RE2: a name that makes a backtracking engine explode (Python's re
    doubles its time per added letter here: ~0.3 s at 22 letters) is
    refused at once."""
    with pytest.raises(r.ReferenceError, match="^invalid reference format$"):
        r.parse("a" * 200 + "!")
