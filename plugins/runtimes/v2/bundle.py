"""A task's bundle, laid out as containerd 1.6's runtime v2 lays it out.

    <state>/<namespace>/<id>/          0700 (0710 + group when the spec maps uids)
        config.json                    the OCI spec, as the client sent it
        rootfs/                        where the shim mounts the rootfs mounts
        work -> <root>/<namespace>/<id>  the shim's persistent work directory
        log                            FIFO the shim writes its log to
        address, shim-binary-path      what a restarted daemon reconnects with

Deleting unmounts whatever is left on rootfs, then removes the bundle and
the work directory by renaming each to a dot-name first, so a crash halfway
never leaves a half-deleted bundle that looks live.
"""

from __future__ import annotations

import errno
import json
import os
import shutil

from pycontainerd.pkg import errdefs, identifiers
from pycontainerd.pkg.mount import mount_points_under, unmount, unmount_all

CONFIG = "config.json"
ADDRESS = "address"
BINARY_PATH = "shim-binary-path"
LOG = "log"


class Bundle:
    def __init__(self, id: str, namespace: str, path: str):
        self.id = id
        self.namespace = namespace
        self.path = path

    @classmethod
    def load(cls, state: str, namespace: str, id: str) -> "Bundle":
        return cls(id, namespace, os.path.join(state, namespace, id))

    @classmethod
    def create(cls, root: str, state: str, namespace: str, id: str, spec: bytes) -> "Bundle":
        """Blocking: run in a thread."""
        try:
            identifiers.validate(id)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"invalid task id {id}: {exc.message}") from None
        bundle = cls(id, namespace, os.path.join(state, namespace, id))
        work = os.path.join(root, namespace, id)
        made: list[str] = []
        try:
            os.makedirs(os.path.dirname(bundle.path), mode=0o711, exist_ok=True)
            try:
                os.mkdir(bundle.path, 0o700)
            except FileExistsError:
                raise errdefs.AlreadyExists(f"bundle of task {namespace}/{id}") from None  # its path is the daemon's own
            made.append(bundle.path)
            _bundle_permissions(bundle.path, spec)
            os.makedirs(os.path.dirname(work), mode=0o711, exist_ok=True)
            os.mkdir(os.path.join(bundle.path, "rootfs"), 0o711)
            if os.path.lexists(work):  # a leftover of a task with this id
                shutil.rmtree(work, ignore_errors=True)
            os.mkdir(work, 0o711)
            made.append(work)
            os.symlink(work, os.path.join(bundle.path, "work"))
            _write_file(os.path.join(bundle.path, CONFIG), spec, 0o666)
        except BaseException:
            for path in made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        return bundle

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def read(self, name: str) -> str:
        with open(self.file(name)) as f:
            return f.read()

    def write(self, name: str, text: str) -> None:
        _write_file(self.file(name), text.encode(), 0o600)

    def delete(self) -> None:
        """Blocking: unmount rootfs, remove the bundle and the work dir."""
        try:
            work = os.readlink(os.path.join(self.path, "work"))
        except OSError:
            work = None
        rootfs = os.path.join(self.path, "rootfs")
        unmount_all(rootfs)
        _remove_rootfs(rootfs)
        _atomic_delete(self.path)
        if work is not None:
            _atomic_delete(work)


def _bundle_permissions(path: str, spec: bytes) -> None:
    """With user namespaces, the container's root group (its host gid) must
    be able to walk into the bundle: 0710 and that group, as containerd does."""
    try:
        doc = json.loads(spec or b"{}")
    except ValueError:
        raise errdefs.InvalidArgument("the OCI spec is not valid JSON") from None
    mappings = ((doc.get("linux") or {}) if isinstance(doc, dict) else {}).get("gidMappings") or []
    gid = next((m.get("hostID", 0) for m in mappings if m.get("containerID") == 0), 0)
    if gid:
        os.chown(path, -1, gid)
        os.chmod(path, 0o710)


def _write_file(path: str, data: bytes, mode: int) -> None:
    """Crash-safe: a dot-named temporary, fsynced, renamed over `path`."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def _remove_rootfs(rootfs: str) -> None:
    """The rootfs directory, once nothing is mounted on it. It is not always
    empty then: runc makes the spec's mount points in it (proc, dev...) even
    when its create fails on a rootfs with nothing mounted (a Create with no
    rootfs mounts). Those are the bundle's own and go too, but only with no
    mount left below: a tree is never removed through a mount. (containerd
    stops at "directory not empty" and the bundle stays, so every later
    Create of that id fails until someone removes it by hand.)"""
    try:
        os.rmdir(rootfs)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY:
            raise
        if mount_points_under(rootfs):
            raise OSError(errno.EBUSY, "mounts left below the bundle's rootfs") from None
        shutil.rmtree(rootfs)


def _atomic_delete(path: str) -> None:
    hidden = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    if os.path.lexists(hidden):  # a delete of this id that did not finish (a crash)
        _remove_unmounted(hidden)
    try:
        os.rename(path, hidden)
    except FileNotFoundError:
        return
    _remove_unmounted(hidden)


def _remove_unmounted(path: str) -> None:
    """rmtree, after detaching whatever is mounted below `path`: removing
    through a live mount would delete what it shows (a bind-mounted rootfs
    is the user's own files). A mount that cannot be detached stops it."""
    for point in mount_points_under(path):  # deepest first
        unmount(point, lazy=True)
    shutil.rmtree(path, ignore_errors=True)
