"""Support for the container tests: a small image built here from
Debian's busybox-static (one uncompressed layer: /bin/busybox, a link
per applet, /etc/passwd and /etc/group with a user `app` 1000:1000 and a
group `staff` 50 it belongs to), as an OCI layout tar, imported with the
real ctr; and what a container leaves behind, listed so a test can say
"nothing".
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile

import pytest

BUSYBOX = "/bin/busybox"
IMAGE = "docker.io/library/pcd-busybox:test"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
APPLETS = ("sh", "echo", "id", "env", "pwd", "sleep", "cat", "true", "false", "touch", "ls", "mkdir", "ps",
           "stty", "hostname", "grep", "head", "wc", "mount", "printf", "kill", "test", "[")
PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP = b"root:x:0:\nstaff:x:50:app\napp:x:1000:\n"
IMAGE_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "IMAGE_VAR=from-image"]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer() -> bytes:
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(name: str, data: bytes | None = None, mode: int = 0o644, kind: bytes = tarfile.REGTYPE,
                link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.type, info.linkname = mode, 0, kind, link
            info.size = len(data) if data is not None else 0
            t.addfile(info, io.BytesIO(data) if data is not None else None)
        for d in ("bin", "etc", "tmp", "home", "home/app", "proc", "sys", "dev", "run"):
            add(d, mode=0o1777 if d == "tmp" else 0o755, kind=tarfile.DIRTYPE)
        add("bin/busybox", busybox, 0o755)
        for applet in APPLETS:
            add(f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        add("etc/passwd", PASSWD)
        add("etc/group", GROUP)
    return buf.getvalue()


def image_tar(path: str) -> None:
    """Write the OCI layout tar of the test image to `path`."""
    layer = _layer()
    config = json.dumps({
        "architecture": ARCH, "os": "linux",
        "config": {"Env": IMAGE_ENV, "Cmd": ["/bin/echo", "hello from the image"], "WorkingDir": "/",
                   "Labels": {"org.example.from-image": "yes"}},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer),
                    "size": len(layer)}],
    }).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest),
        "size": len(manifest), "annotations": {"io.containerd.image.name": IMAGE,
                                               "org.opencontainers.image.ref.name": "test"}}]}).encode()
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for blob in (layer, config, manifest):
        members["blobs/sha256/" + _digest(blob)[7:]] = blob
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, io.BytesIO(data))


def import_image(daemon, directory: str) -> str:
    """Import the test image into `daemon` with the real ctr; its name."""
    if not os.access(BUSYBOX, os.X_OK):
        pytest.skip(f"{BUSYBOX} is not installed (Debian's busybox-static)")
    path = os.path.join(directory, "busybox.tar")
    image_tar(path)
    daemon.ctr("images", "import", path, timeout=120)
    return IMAGE


def leftovers(daemon) -> dict[str, list[str]]:
    """Containers, tasks and snapshots (other than the image's own
    committed layer) the daemon still has, as ctr lists them."""
    containers = daemon.ctr("containers", "ls", "-q").stdout.decode().split()
    tasks = daemon.ctr("tasks", "ls", "-q").stdout.decode().split()
    snapshots = [line.split()[0] for line in daemon.ctr("snapshots", "ls").stdout.decode().splitlines()[1:]
                 if line.split() and line.split()[-1] != "Committed"]
    return {"containers": containers, "tasks": tasks, "snapshots": snapshots}


def fifo_dirs(base: str = "/run/containerd/fifo") -> list[str]:
    """What ctr's and pyctr's FIFO directories hold now."""
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


def fifos_of(container_id: str, base: str = "/run/containerd/fifo") -> list[str]:
    """The FIFOs ctr or pyctr made for `container_id` (`<dir>/<id>-stdout`...)
    still in the FIFO root."""
    if not os.path.isdir(base):
        return []
    return sorted(os.path.join(d, f) for d in os.listdir(base) if os.path.isdir(os.path.join(base, d))
                  for f in os.listdir(os.path.join(base, d)) if f.startswith(container_id + "-"))


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, timeout=kwargs.pop("timeout", 60), **kwargs)


# -- what a daemon's containers leave on the host ------------------------------------

RUNTIME_DIR = "io.containerd.runtime.v2.task"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def shim_pids(address: str) -> set[int]:
    """Live processes whose command line names `address` after `-address`:
    the shims a daemon on that socket started (every daemon of the tests
    has a socket of its own, so these are that daemon's only)."""
    want = os.fsencode(address)
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a == b"-address" and b == want for a, b in zip(argv, argv[1:])) and _alive(int(entry)):
            found.add(int(entry))
    return found


def shim_pid_of(address: str, container_id: str, namespace: str = "default") -> int:
    """The pid of the shim serving `container_id` for the daemon on `address`."""
    for pid in shim_pids(address):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        pairs = dict(zip(argv, argv[1:]))
        if pairs.get(b"-id") == container_id.encode() and pairs.get(b"-namespace") == namespace.encode():
            return pid
    raise AssertionError(f"no shim of {address} serves {namespace}/{container_id}")


def mounts_under(*dirs: str) -> list[str]:
    """Mount points in /proc/self/mountinfo at or below any of `dirs`."""
    prefixes = tuple(os.path.realpath(d).rstrip("/") + "/" for d in dirs)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return [p for p in points if (p + "/").startswith(prefixes)]


def bundle_dirs(root: str, state: str, container_id: str, namespace: str = "default") -> list[str]:
    """The task's bundle (state) and work (root) directories, and runc's
    state of it (pycontainerd keeps it under <state>/runc), still there."""
    paths = (os.path.join(state, RUNTIME_DIR, namespace, container_id),
             os.path.join(root, RUNTIME_DIR, namespace, container_id),
             os.path.join(state, "runc", namespace, container_id))
    return [p for p in paths if os.path.lexists(p)]


def cgroups_of(container_id: str, namespace: str = "default") -> list[str]:
    """The cgroups `/<namespace>/<id>` (ctr's and pyctr's cgroupsPath) under
    any controller, v1 or v2."""
    import glob

    rel = os.path.join(namespace, container_id)
    return sorted(glob.glob(f"/sys/fs/cgroup/*/{rel}") + glob.glob(f"/sys/fs/cgroup/{rel}"))


def residue(d, ids: list[str], shims_before: set[int] = frozenset(), fifo_root: str = "/run/containerd/fifo",
            namespace: str = "default") -> dict[str, list]:
    """Everything containers `ids` of daemon `d` left behind, by kind; only
    non-empty kinds appear, so "nothing" is `{}`."""
    records = leftovers(d)
    found = {
        "containers": [c for c in records["containers"] if c in ids],
        "tasks": [t for t in records["tasks"] if t in ids],
        "snapshots": [s for s in records["snapshots"] if s in ids],
        "mounts": mounts_under(d.root, d.state),
        "shims": sorted(shim_pids(d.address) - set(shims_before)),
        "fifos": [f for cid in ids for f in fifos_of(cid, fifo_root)],
        "bundles": [b for cid in ids for b in bundle_dirs(d.root, d.state, cid, namespace)],
        "cgroups": [c for cid in ids for c in cgroups_of(cid, namespace)],
    }
    return {k: v for k, v in found.items() if v}


def force_cleanup(d, ids: list[str], shims_before: set[int] = frozenset(), namespace: str = "default") -> None:
    """After a failed test: remove what `ids` left, by pid and by path."""
    import signal
    import time

    for cid in ids:
        d.ctr("-n", namespace, "tasks", "kill", "-s", "SIGKILL", cid, check=False, timeout=30)
    for cid in ids:
        d.ctr("-n", namespace, "tasks", "rm", "-f", cid, check=False, timeout=30)
        d.ctr("-n", namespace, "containers", "rm", cid, check=False, timeout=30)
    for pid in shim_pids(d.address) - set(shims_before):
        os.kill(pid, signal.SIGKILL)
    runc_root = os.path.join(d.state, "runc", namespace)
    for cid in ids:
        run(["runc", "--root", runc_root, "delete", "--force", cid])
    for point in reversed(mounts_under(d.root, d.state)):
        run(["umount", "-l", point])
    for cid in ids:
        for cg in cgroups_of(cid, namespace):
            for _ in range(50):
                try:
                    os.rmdir(cg)
                    break
                except OSError:
                    time.sleep(0.1)


# -- the real ctr's task listing, and the Tasks stub ------------------------------------

STATE_DEADLINE = 30.0  # how long a state change the kernel decides may take to be reported


def ctr_rows(out: bytes) -> list[list[str]]:
    """A ctr table's rows (header dropped), split on blanks."""
    return [line.split() for line in out.decode().splitlines()[1:] if line.strip()]


def ctr_tasks(d) -> dict[str, tuple[int, str]]:
    """`ctr tasks ls` as {id: (pid, status)}."""
    return {r[0]: (int(r[1]), r[2]) for r in ctr_rows(d.ctr("tasks", "ls").stdout)}


def wait_task_status(d, cid: str, status: str) -> None:
    import time

    deadline = time.monotonic() + STATE_DEADLINE
    while (now := ctr_tasks(d).get(cid, (0, ""))[1]) != status:
        assert time.monotonic() < deadline, f"{cid} is {now!r}, never {status}"
        time.sleep(0.1)


def tasks_stub(d):
    """(channel, Tasks stub, tasks_pb2) on daemon d's socket."""
    import grpc

    from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc

    channel = grpc.insecure_channel("unix:" + d.address)
    return channel, tasks_pb2_grpc.TasksStub(channel), tasks_pb2
