"""containerd's distribution source labels (client/remotes/distribution.py):
the key names the registry's host without a port, the value is a sorted set
of repositories, and a push picks the repository to mount from as
containerd's selectRepositoryMountCandidate does."""

from __future__ import annotations

from pycontainerd.client.remotes.distribution import append_source, mount_candidate, source_labels, source_of
from pycontainerd.pkg.labels import MAX_LABEL_SIZE
from pycontainerd.pkg.reference import parse_docker_ref

KEY = "containerd.io/distribution.source.registry.example.com"


def ref(text: str):
    return parse_docker_ref(text)


def test_the_key_is_the_host_without_its_port():
    assert source_of(ref("registry.example.com:5000/team/app:v1")) == (KEY, "team/app")
    assert source_of(ref("127.0.0.1:5000/x:1"))[0] == "containerd.io/distribution.source.127.0.0.1"
    assert source_of(ref("busybox")) == ("containerd.io/distribution.source.docker.io", "library/busybox")


def test_repositories_accumulate_sorted_and_once():
    assert append_source("", "b/x") == "b/x"
    assert append_source("b/x", "a/x") == "a/x,b/x"
    assert append_source("a/x,b/x", "b/x") == "a/x,b/x"
    assert append_source("c,,a", "b") == "a,b,c"


def test_a_label_that_would_be_too_big_is_skipped():
    huge = ",".join(f"repo{i:05d}/name" for i in range(400))
    assert source_labels(ref("registry.example.com/new/one:1"), {KEY: huge}) == {}
    assert len(KEY) + len(huge) > MAX_LABEL_SIZE
    assert source_labels(ref("registry.example.com/new/one:1"), {KEY: "a/b"}) == {KEY: "a/b,new/one"}


def test_mount_candidate_shares_the_most_leading_components():
    target = ref("registry.example.com/team/app/api:v1")
    assert mount_candidate(target, {}) == ""
    assert mount_candidate(target, {KEY: "team/app/api"}) == ""  # its own repository is no source
    assert mount_candidate(target, {KEY: "other/thing,team/app/web,team/lib"}) == "team/app/web"
    # ties go to the last listed, as containerd's >= comparison does
    assert mount_candidate(target, {KEY: "x/one,y/two"}) == "y/two"
    # a label for another registry does not count
    assert mount_candidate(target, {"containerd.io/distribution.source.other.io": "team/app/web"}) == ""
