"""The version the Version service reports; the revision is the git commit
when running from a checkout."""

from __future__ import annotations

import os
import subprocess

VERSION = "0.1.0"


def revision() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
