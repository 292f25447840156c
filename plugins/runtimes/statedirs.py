"""What both runtimes do with their root and state directories on load and
cleanup: list the namespace and task directories (dot-names are a delete
half done, never a task), remove a work tree, delete a bundle without
letting one bad bundle stop the rest."""

from __future__ import annotations

import os
import shutil
from typing import Protocol

import structlog

log = structlog.get_logger("runtime")


class _Bundle(Protocol):
    id: str
    namespace: str

    def delete(self) -> None: ...


def subdirs(path: str) -> list[str]:
    """The task (or namespace) directories under `path`, sorted; none when
    `path` does not exist yet."""
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    except FileNotFoundError:
        return []


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def delete_quietly(bundle: _Bundle) -> None:
    """Logged, not raised: cleanup goes on with the next bundle."""
    try:
        bundle.delete()
    except OSError as exc:
        log.error("failed to delete bundle", id=bundle.id, namespace=bundle.namespace, error=str(exc))
