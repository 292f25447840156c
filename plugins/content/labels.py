"""Labels for a standalone content store (`pycontainerd content serve`).

Inside the daemon the metadata database keeps every namespace's labels; a
raw store served on its own has no database. containerd's local store takes
an optional label store for that case (its tests use an in-memory map, so
labels live only as long as the process). This one keeps them on disk,
beside the blobs, so they survive a restart:

    <root>/labels/<alg>/<hex>    a blob's labels as a JSON object

containerd's local store never reads `labels/`, so the root stays readable
by it. Each file is written crash-safely (temp name, fsync, rename, fsync
of the directory); a blob without labels has no file.
"""

from __future__ import annotations

import json
import os
import threading

from pycontainerd.pkg.digest import validate_digest

from .local import fsync_dir, write_atomic


class FileLabelStore:
    """Get / Set / Update of one blob's labels, as containerd's LabelStore.
    Blocking: call from a worker thread."""

    def __init__(self, root: str):
        self.dir = os.path.join(root, "labels")
        self._mu = threading.Lock()  # read-modify-write of one file at a time

    def _path(self, dgst: str) -> str:
        validate_digest(dgst)
        alg, _, hexpart = dgst.partition(":")
        return os.path.join(self.dir, alg, hexpart)

    def get(self, dgst: str) -> dict[str, str]:
        try:
            with open(self._path(dgst), "rb") as f:
                labels = json.loads(f.read())
        except FileNotFoundError:
            return {}
        except ValueError:  # a torn file cannot happen (rename), but a hand-edited one can
            return {}
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    def set(self, dgst: str, labels: dict[str, str]) -> None:
        with self._mu:
            self._set(dgst, labels)

    def update(self, dgst: str, changes: dict[str, str]) -> dict[str, str]:
        """Set each key of `changes`; an empty value removes the key."""
        with self._mu:
            labels = self.get(dgst)
            for key, value in changes.items():
                if value:
                    labels[key] = value
                else:
                    labels.pop(key, None)
            self._set(dgst, labels)
            return labels

    def delete(self, dgst: str) -> None:
        with self._mu:
            self._set(dgst, {})

    def _set(self, dgst: str, labels: dict[str, str]) -> None:
        path = self._path(dgst)
        if not labels:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        parent = os.path.dirname(path)
        os.makedirs(parent, 0o755, exist_ok=True)
        write_atomic(path, json.dumps(labels, sort_keys=True).encode())
        fsync_dir(parent)
