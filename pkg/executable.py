"""The path of the `pycontainerd` program itself, which shims are told to
run to send events (`-publish-binary` for v2 shims, `-containerd-binary`
for the v1 shim): containerd hands them its own os.Executable()."""

from __future__ import annotations

import os
import sys


def daemon_executable() -> str:
    """Our `pycontainerd` script (beside the interpreter in a venv), else
    the program this process was started as."""
    beside = os.path.join(os.path.dirname(sys.executable), "pycontainerd")
    if os.access(beside, os.X_OK):
        return beside
    return os.path.abspath(sys.argv[0])
