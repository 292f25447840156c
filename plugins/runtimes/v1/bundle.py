"""A v1 task's bundle and work directory, laid out as containerd 1.6's
runtime/v1/linux lays them out.

    <state>/<namespace>/<id>/        0700 (0710 + group when the spec maps uids)
        config.json                  the OCI spec, as the client sent it
        rootfs/                      where the shim mounts the rootfs mounts
        address                      the shim's ttrpc address (unix://...)
        shim.pid                     the shim's pid
        init.pid                     the container's init pid (the shim writes it)
    <root>/<namespace>/<id>/         the shim's -workdir
        shim.stdout.log, shim.stderr.log   FIFOs the shim's stdout and stderr go to

The shim's socket is `unix:///run/containerd/s/<sha256 of
<daemon address>/<namespace>/<id>>`: a path of fixed length whatever the
daemon's address, and one per daemon, namespace and task. A bundle with no
`address` file is a shim of containerd before 1.2, reached at the abstract
socket `/containerd-shim/<namespace>/<id>/shim.sock`.

Deleting unmounts whatever the shim left on rootfs (removing a directory
tree with a mounted rootfs would delete the snapshot's files), removes the
shim's socket, then the bundle and the work directory, each renamed to a
dot-name first so a crash halfway never leaves a half-deleted bundle that
looks live.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat

from pycontainerd.pkg import errdefs, identifiers
from pycontainerd.pkg.mount import unmount_all

CONFIG = "config.json"
ADDRESS = "address"
SHIM_PID = "shim.pid"
INIT_PID = "init.pid"
STDOUT_LOG = "shim.stdout.log"
STDERR_LOG = "shim.stderr.log"
SOCKET_ROOT = "/run/containerd"  # containerd's, not the daemon's state: the v1 shims of every daemon share it
SOCKET_PATH_LIMIT = 106
UNIX_PREFIX = "unix://"


MAX_ID = 2**32 - 1


class BundleError(errdefs.Unknown):
    """A spec the bundle cannot be laid out for, reported plainly (gRPC UNKNOWN)."""

    sentinel = ""


class Bundle:
    def __init__(self, id: str, namespace: str, path: str, work_dir: str):
        self.id = id
        self.namespace = namespace
        self.path = path
        self.work_dir = work_dir

    @classmethod
    def load(cls, root: str, state: str, namespace: str, id: str) -> "Bundle":
        return cls(id, namespace, os.path.join(state, namespace, id), os.path.join(root, namespace, id))

    @classmethod
    def create(cls, root: str, state: str, namespace: str, id: str, spec: bytes) -> "Bundle":
        """Blocking: run in a thread."""
        try:
            identifiers.validate(id)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"invalid task id: {exc.message}") from None
        bundle = cls.load(root, state, namespace, id)
        os.makedirs(os.path.dirname(bundle.path), mode=0o711, exist_ok=True)
        try:
            os.mkdir(bundle.path, 0o700)
        except FileExistsError:
            raise errdefs.Unknown(f"mkdir {bundle.path}: file exists") from None
        made = [bundle.path]
        try:
            _bundle_permissions(bundle.path, spec)
            if not os.path.isdir(bundle.work_dir):
                made.append(bundle.work_dir)
            os.makedirs(os.path.dirname(bundle.work_dir), mode=0o711, exist_ok=True)
            os.makedirs(bundle.work_dir, mode=0o711, exist_ok=True)
            os.makedirs(os.path.join(bundle.path, "rootfs"), mode=0o711, exist_ok=True)
            _write_file(os.path.join(bundle.path, CONFIG), spec, 0o666)
        except BaseException:
            for path in made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        return bundle

    # -- files ----------------------------------------------------------------------------

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def write(self, name: str, text: str) -> None:
        """Crash-safe, as containerd writes `address` and `shim.pid`."""
        _write_file(self.file(name), text.encode(), 0o666)

    def read_pid(self, name: str) -> int:
        """go-runc's ReadPidFile, forgiving: 0 when absent or unreadable."""
        try:
            with open(self.file(name)) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    # -- the shim's socket ------------------------------------------------------------------

    def shim_address(self, daemon_address: str) -> str:
        key = os.path.normpath(os.path.join(daemon_address, self.namespace, self.id))
        return f"{UNIX_PREFIX}{SOCKET_ROOT}/s/{hashlib.sha256(key.encode()).hexdigest()}"

    def legacy_address(self) -> str:
        return f"/containerd-shim/{self.namespace}/{self.id}/shim.sock"

    def load_address(self) -> str:
        with open(self.file(ADDRESS)) as f:
            return f.read()

    def decide_address(self) -> str:
        try:
            return self.load_address()
        except OSError:
            return self.legacy_address()

    # -- removal --------------------------------------------------------------------------

    def delete(self) -> None:
        """Blocking: unmount rootfs, remove the socket, the bundle and the work dir."""
        try:
            remove_socket(self.load_address())
        except OSError:
            pass
        rootfs = os.path.join(self.path, "rootfs")
        if os.path.isdir(rootfs):
            unmount_all(rootfs)
        _atomic_delete(self.path)
        _atomic_delete(self.work_dir)


def socket_path(address: str) -> str:
    """The path to bind or dial: a `unix://` address's file, else the
    abstract name (a leading NUL)."""
    if address.startswith(UNIX_PREFIX):
        return address[len(UNIX_PREFIX):]
    return "\0" + address


def remove_socket(address: str) -> None:
    """Unlink a `unix://` address's socket file; an abstract one has none.
    Only a socket where shims' sockets are made is removed: the address
    comes from a file in the bundle, and whatever else it may name (a
    file, another service's socket) is not the task's to delete."""
    if not address.startswith(UNIX_PREFIX):
        return
    path = socket_path(address)
    if os.path.dirname(os.path.normpath(path)) != os.path.join(SOCKET_ROOT, "s"):
        return
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _bundle_permissions(path: str, spec: bytes) -> None:
    """With user namespaces the container's root group (its host gid) must
    be able to walk into the bundle: 0710 and that group, as containerd does."""
    try:
        doc = json.loads(spec or b"{}")
    except ValueError:
        raise errdefs.InvalidArgument("the OCI spec is not valid JSON") from None
    linux = (doc.get("linux") or {}) if isinstance(doc, dict) else {}
    mappings = (linux.get("gidMappings") or []) if isinstance(linux, dict) else []
    gid = next((m.get("hostID", 0) for m in mappings if isinstance(m, dict) and m.get("containerID") == 0), 0)
    if isinstance(gid, bool) or not isinstance(gid, int) or not 0 <= gid <= MAX_ID:
        # what a Go reader of the spec says: a host id is a uint32
        raise BundleError(f"json: cannot unmarshal {_json_kind(gid)} into Go struct field "
                          "LinuxIDMapping.linux.gidMappings.hostID of type uint32")
    if gid:
        os.chown(path, -1, gid)
        os.chmod(path, 0o710)


def _json_kind(value: object) -> str:
    """How Go's encoding/json names a value it cannot take ("number 5" for numbers)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return f"number {value}"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def _write_file(path: str, data: bytes, mode: int) -> None:
    """A dot-named temporary, synced, renamed over `path`."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def _atomic_delete(path: str) -> None:
    hidden = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    try:
        os.rename(path, hidden)
    except FileNotFoundError:
        return
    shutil.rmtree(hidden, ignore_errors=True)
