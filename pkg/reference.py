"""Image references as containerd and Docker read them (containerd's
reference/docker package): `busybox` is `docker.io/library/busybox:latest`.

A reference is `[domain/]path[:tag][@digest]`. The domain is the first
path component when it looks like a host (it has a `.` or a `:`, or is
`localhost`); otherwise the reference is on Docker Hub, `docker.io`, where a
one-component name lives under `library/`. The patterns are RE2 (linear
time), as containerd's are Go regexps: a hostile name cannot stall a caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import re2

from . import digest as _digest

NAME_TOTAL_LENGTH_MAX = 255
DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_NAME = "library"
DEFAULT_TAG = "latest"

# containerd's wording (reference/docker's error values)
ERR_REFERENCE_INVALID_FORMAT = "invalid reference format"
ERR_TAG_INVALID_FORMAT = "invalid tag format"
ERR_DIGEST_INVALID_FORMAT = "invalid digest format"
ERR_NAME_CONTAINS_UPPERCASE = "repository name must be lowercase"
ERR_NAME_EMPTY = "repository name must have at least one component"
ERR_NAME_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]*)"
_NAME_COMPONENT = _ALNUM + r"(?:(?:" + _SEPARATOR + _ALNUM + r")+)?"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = _DOMAIN_COMPONENT + r"(?:(?:\." + _DOMAIN_COMPONENT + r")+)?(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}"
_NAME = r"(?:" + _DOMAIN + r"/)?" + _NAME_COMPONENT + r"(?:(?:/" + _NAME_COMPONENT + r")+)?"

_REFERENCE_RE = re2.compile(r"^(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?$")
_ANCHORED_NAME_RE = re2.compile(
    r"^(?:(" + _DOMAIN + r")/)?(" + _NAME_COMPONENT + r"(?:(?:/" + _NAME_COMPONENT + r")+)?)$")
_IDENTIFIER_RE = re2.compile(r"^[a-f0-9]{64}$")
_TAG_RE = re2.compile(r"^" + _TAG + r"$")


class ReferenceError(ValueError):
    """A reference that does not parse; the message is containerd's."""


@dataclass(frozen=True)
class Reference:
    """A parsed reference: domain, path, and an optional tag and digest."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The repository's full name: `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text

    @property
    def object(self) -> str:
        """What the registry is asked for: the digest when there is one
        (it pins the content), else the tag."""
        return self.digest or self.tag

    def familiar_name(self) -> str:
        """The short name Docker shows: `busybox`, `user/app`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        parts = self.path.split("/")
        if len(parts) == 2 and parts[0] == OFFICIAL_REPO_NAME:
            return parts[1]
        return self.path

    def familiar_string(self) -> str:
        text = self.familiar_name()
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text


def parse(text: str) -> Reference:
    """A reference exactly as written (no normalisation): containerd's
    reference/docker Parse."""
    m = _REFERENCE_RE.match(text)
    if m is None:
        if text == "":
            raise ReferenceError(ERR_NAME_EMPTY)
        if _REFERENCE_RE.match(text.lower()) is not None:
            raise ReferenceError(ERR_NAME_CONTAINS_UPPERCASE)
        raise ReferenceError(ERR_REFERENCE_INVALID_FORMAT)
    name, tag, dgst = m.group(1), m.group(2) or "", m.group(3) or ""
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise ReferenceError(ERR_NAME_TOO_LONG)
    if dgst:
        err = _digest.digest_error(dgst)
        if err is not None:
            raise ReferenceError(err)
    nm = _ANCHORED_NAME_RE.match(name)
    domain, path = (nm.group(1) or "", nm.group(2)) if nm is not None else ("", name)
    return Reference(domain, path, tag, dgst)


def _split_docker_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or (not any(c in first for c in ".:") and first != "localhost"):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = f"{OFFICIAL_REPO_NAME}/{remainder}"
    return domain, remainder


def parse_normalized_named(text: str) -> Reference:
    """containerd's ParseNormalizedNamed: a familiar name made whole
    (`ubuntu` -> `docker.io/library/ubuntu`), no tag added."""
    if _IDENTIFIER_RE.match(text) is not None:
        raise ReferenceError(
            f"invalid repository name ({_quoted(text)}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(text)
    remote_name = remainder.split(":", 1)[0]
    if remote_name.lower() != remote_name:
        raise ReferenceError(f"{ERR_REFERENCE_INVALID_FORMAT}: {ERR_NAME_CONTAINS_UPPERCASE}")
    return parse(f"{domain}/{remainder}")


def parse_docker_ref(text: str) -> Reference:
    """containerd's ParseDockerRef, what ctr and the pull path use: the
    normalised name, tagged `latest` when it names neither a tag nor a
    digest, and only the digest when it names both."""
    ref = parse_normalized_named(text)
    if ref.digest:
        return Reference(ref.domain, ref.path, "", ref.digest)
    if not ref.tag:
        return Reference(ref.domain, ref.path, DEFAULT_TAG)
    return ref


def with_tag(ref: Reference, tag: str) -> Reference:
    """`ref` with its tag set (and no digest), checked as containerd does."""
    if _TAG_RE.match(tag) is None:
        raise ReferenceError(ERR_TAG_INVALID_FORMAT)
    return Reference(ref.domain, ref.path, tag)


def with_digest(ref: Reference, dgst: str) -> Reference:
    """`ref` pinned to `dgst` (the tag kept, as containerd's WithDigest)."""
    if _digest.digest_error(dgst) is not None:
        raise ReferenceError(ERR_DIGEST_INVALID_FORMAT)
    return Reference(ref.domain, ref.path, ref.tag, dgst)


def _quoted(text: str) -> str:
    from .errdefs import cut

    return cut(text)
