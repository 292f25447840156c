"""Content digests, with go-digest's rules and wording: what every
content store, the metadata layer, the services and pyctr validate."""

from __future__ import annotations

import re

from . import errdefs

# algorithm -> length of its hex encoding
ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX_RE = re.compile(r"^[a-f0-9]+$")


def digest_error(dgst: str) -> str | None:
    """go-digest's Validate: None when `dgst` is valid, else its message."""
    alg, sep, hexpart = dgst.partition(":")
    if not sep or not hexpart:
        return "invalid checksum digest format"
    size = ALGORITHMS.get(alg)
    if size is None:
        return "invalid checksum digest format" if not _DIGEST_RE.match(dgst) else "unsupported digest algorithm"
    if len(hexpart) != size:
        return "invalid checksum digest length"
    if not _HEX_RE.match(hexpart):
        return "invalid checksum digest format"
    return None


def validate_digest(dgst: str) -> None:
    """InvalidArgument, worded as containerd's local store words it, unless
    `dgst` is valid."""
    err = digest_error(dgst)
    if err is not None:
        raise errdefs.InvalidArgument(f"cannot calculate blob path from invalid digest: {err}")
