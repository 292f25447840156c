"""containerd's identifiers package: the rule namespaces, event topic
components (and next container and image ids) must follow, with its
wording. Lengths are in bytes, as Go counts them."""

from __future__ import annotations

import re

from . import errdefs

PATTERN = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"  # as containerd prints it
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*\Z")
MAX_LENGTH = 76


def validate(s: str) -> None:
    """InvalidArgument unless `s` is an identifier; a long one is quoted cut."""
    if not s:
        raise errdefs.InvalidArgument("identifier must not be empty")
    if len(s.encode("utf-8", "surrogatepass")) > MAX_LENGTH:
        raise errdefs.InvalidArgument(
            f"identifier {errdefs.quote(s)} greater than maximum length ({MAX_LENGTH} characters)"
        )
    if not _IDENTIFIER.match(s):
        raise errdefs.InvalidArgument(f"identifier {errdefs.go_quote(s)} must match {PATTERN}")
