"""The version the Version service reports. The revision is the git commit
when running from a checkout, read from .git directly (no subprocess on
the start-up path), and empty otherwise."""

from __future__ import annotations

import os

VERSION = "0.1.0"


def revision() -> str:
    git = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), ".git")
    try:
        with open(os.path.join(git, "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        try:
            with open(os.path.join(git, ref)) as f:
                return f.read().strip()
        except FileNotFoundError:
            with open(os.path.join(git, "packed-refs")) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0]
    except OSError:
        pass
    return ""
