"""Where a blob came from: containerd's `containerd.io/distribution.source.<host>`
content labels (remotes/docker/handler.go).

A pull labels every blob it walks with the repositories of the registry it
was seen in (`<host>` is the registry's host name without its port; the
value is a sorted, comma-separated set of repository paths). A push to the
same registry reads that label to ask for a cross-repository mount
(`POST .../blobs/uploads/?mount=<digest>&from=<repo>`), so the registry links
the blob instead of receiving its bytes again.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pycontainerd.pkg import reference
from pycontainerd.pkg.labels import MAX_LABEL_SIZE

PREFIX = "containerd.io/distribution.source."


def source_of(ref: reference.Reference) -> tuple[str, str]:
    """(label key, repository path) for a reference: the key names the
    registry's host without a port, as Go's url.Hostname gives it."""
    host = urlsplit("dummy://" + ref.domain).hostname or ref.domain
    return PREFIX + host, ref.path


def append_source(existing: str, repo: str) -> str:
    """The label value with `repo` added: sorted, without duplicates or
    empty entries."""
    repos = {r for r in existing.split(",") if r} if existing else set()
    repos.add(repo)
    return ",".join(sorted(repos))


def source_labels(ref: reference.Reference, current: dict[str, str]) -> dict[str, str]:
    """The one label a pull of `ref` sets on a blob whose labels are
    `current`; empty when the value would break the label size rule (a very
    common blob seen in many repositories), as containerd skips it then."""
    key, repo = source_of(ref)
    value = append_source(current.get(key, ""), repo)
    if len(key.encode()) + len(value.encode()) > MAX_LABEL_SIZE:
        return {}
    return {key: value}


def mount_candidate(ref: reference.Reference, annotations: dict[str, str]) -> str:
    """The repository to mount a blob from when pushing to `ref` (containerd's
    selectRepositoryMountCandidate): among the repositories the blob's
    source label lists for `ref`'s registry, other than `ref`'s own, the one
    sharing the most leading path components (the last of equals); "" when
    there is none."""
    key, target = source_of(ref)
    listed = annotations.get(key, "")
    if not listed:
        return ""
    parts = target.split("/")
    best, match = 0, ""
    for repo in listed.split(","):
        if repo == target:
            continue
        common = 0
        for a, b in zip(parts, repo.split("/")):
            if a != b:
                break
            common += 1
        if common >= best:
            best, match = common, repo
    return match
