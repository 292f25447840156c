"""A hypothesis fuzz of every gRPC service the daemon serves, through the
real gRPC socket of a real daemon.

Two kinds of request: bytes that do not decode as the method's request
(random, truncated or mis-tagged protobuf, sent through a channel with
identity serializers so they reach the server), and well-typed requests
whose fields hold hostile values (huge strings, control characters,
negative numbers, bad digests, unknown enum values, many labels, paths
into a canary directory). Whatever comes in, each call must end within its
deadline with one of containerd's codes, a short message free of Python
internals and of the daemon's own paths; and the daemon must still answer.

The daemon is seeded first (a container with a running busybox task, one
with no task, an image, a lease holding an active snapshot), and their
names are among the hostile values, so the fuzz reaches past "not found"
into the Tasks service's runtime and the real shim. Every task the fuzz
may make is deleted afterwards and every shim of the daemon is checked
gone (and killed, by pid, if one is not).

What may be written: a request that does not decode writes nothing, so
the daemon's root and state (files, directories, database rows) are the
same before and after those; a hostile well-typed request may write what
it asks for inside root and state, but nothing elsewhere: the canary
directory (the daemon's working directory, named in hostile paths) and the
daemon's own directory stay as they were.

CI runs 300 examples of each; a soak sets PCD_FUZZ_EXAMPLES (more) and
PCD_FUZZ_ONLY (services, e.g. "Tasks,Containers") in the environment.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
import uuid

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import any_pb2, empty_pb2, message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from container_support import mounts_under, shim_pids
from e2e_support import DaemonFactory
from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
from pycontainerd.api.services.content.v1 import content_pb2
from pycontainerd.api.services.diff.v1 import diff_pb2
from pycontainerd.api.services.events.v1 import events_pb2
from pycontainerd.api.services.images.v1 import images_pb2, images_pb2_grpc
from pycontainerd.api.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc
from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2, version_pb2_grpc
from pycontainerd.api.types import mount_pb2
from pycontainerd.api.types.task import task_pb2

pytestmark = pytest.mark.e2e

# the gRPC plugins the daemon reports (introspection) -> the service each serves
GRPC_PLUGINS = {
    "version": version_pb2.DESCRIPTOR.services_by_name["Version"],
    "introspection": introspection_pb2.DESCRIPTOR.services_by_name["Introspection"],
    "namespaces": namespace_pb2.DESCRIPTOR.services_by_name["Namespaces"],
    "leases": leases_pb2.DESCRIPTOR.services_by_name["Leases"],
    "images": images_pb2.DESCRIPTOR.services_by_name["Images"],
    "containers": containers_pb2.DESCRIPTOR.services_by_name["Containers"],
    "tasks": tasks_pb2.DESCRIPTOR.services_by_name["Tasks"],
    "content": content_pb2.DESCRIPTOR.services_by_name["Content"],
    "snapshots": snapshots_pb2.DESCRIPTOR.services_by_name["Snapshots"],
    "diff": diff_pb2.DESCRIPTOR.services_by_name["Diff"],
    "events": events_pb2.DESCRIPTOR.services_by_name["Events"],
    "healthcheck": health_pb2.DESCRIPTOR.services_by_name["Health"],
}
# the ttrpc plugins -> where their fuzz lives
TTRPC_PLUGINS = {"events": "tests/e2e/test_e2e_ttrpc_fuzz.py (containerd.services.events.ttrpc.v1.Events)"}
SERVICES = list(GRPC_PLUGINS.values())
METHODS = [m for s in SERVICES for m in s.methods]
BY_NAME = {m.full_name: m for m in METHODS}
# streams that only end when the client goes, and a Wait on a live
# process: their deadline is their end
ENDLESS = {"containerd.services.events.v1.Events.Subscribe", "grpc.health.v1.Health.Watch",
           "containerd.services.tasks.v1.Tasks.Wait"}

# -- the seeded objects, and the canary, named in hostile values ------------------------

RUN = uuid.uuid4().hex[:8]  # ids unique to this run: cgroups and runc state are host-wide
SEED_RUNNING = f"fz-{RUN}-run"  # a container whose busybox task sleeps
SEED_IDLE = f"fz-{RUN}-idle"  # a container with no task (Tasks.Create starts a shim; runc fails: no rootfs)
SEED_IMAGE = f"docker.io/fuzz/{RUN}:seed"
SEED_LEASE = f"fz-{RUN}-lease"
SEED_SNAPSHOT = f"fz-{RUN}-snap"
SEED_EXEC = "fz-exec"
CANARY = f"/tmp/pcd-fz-{RUN}"  # the daemon's working directory; hostile paths point into it
ROOTFS = f"/tmp/pcd-fz-{RUN}-rootfs"  # busybox: the seeded task runs on it, hostile mounts may name it
SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
CGROUP_PREFIX = f"pcd-fz-{RUN}"


def spec_json(cid: str, args: list[str], daemon_tag: str = "any") -> bytes:
    """A busybox spec; its cgroup is this run's, and the daemon's (the two
    daemons' seeded tasks must not share one: one paused freezes both)."""
    return json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"}, "hostname": "fuzz",
        "process": {"args": args, "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "noNewPrivileges": True},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
                  "cgroupsPath": f"/{CGROUP_PREFIX}-{daemon_tag}-{cid}"},
    }).encode()


# containerd's errdefs codes, plus what its servers answer themselves:
# OutOfRange and DataLoss (content Read/Write), Internal (a request that
# does not decode, grpc-go's answer), Unknown (an error of no class)
ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DATA_LOSS, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
}
CALL_TIMEOUT = 20.0
ENDLESS_TIMEOUT = 0.3
MAX_DETAILS = 4096
GENERIC = "internal error: see the daemon's log"
LEAKS = ("Traceback", "<class", "Error(", "[Errno", "File \"")


BUSYBOX = "/bin/busybox"
TIMEOUT = 60
MAX_RESEEDS = 8


def can_run_tasks() -> bool:
    return (os.geteuid() == 0 and os.access(BUSYBOX, os.X_OK) and shutil.which("runc") is not None
            and shutil.which("containerd-shim-runc-v2") is not None)


class Fuzzed:
    """A daemon whose working directory is the canary, seeded with what the
    hostile values name; `close()` deletes every task of every namespace,
    checks that no shim of the daemon outlives them, and removes by pid and
    path whatever a failure left."""

    def __init__(self, factory: DaemonFactory, canary: str):
        self.factory = factory
        self.d = factory(cwd=canary)
        self.channel = grpc.insecure_channel("unix:" + self.d.address,
                                             options=[("grpc.max_receive_message_length", 16 << 20)])
        self.tasks = tasks_pb2_grpc.TasksStub(self.channel)
        self.runs_tasks = can_run_tasks()
        self.reseeds = 0
        self.tag = uuid.uuid4().hex[:6]

    def seed(self) -> None:
        md = (("containerd-namespace", "default"),)
        leases_pb2_grpc.LeasesStub(self.channel).Create(leases_pb2.CreateRequest(id=SEED_LEASE), metadata=md,
                                                        timeout=TIMEOUT)
        snapshots_pb2_grpc.SnapshotsStub(self.channel).Prepare(
            snapshots_pb2.PrepareSnapshotRequest(snapshotter="overlayfs", key=SEED_SNAPSHOT),
            metadata=md + (("containerd-lease", SEED_LEASE),), timeout=TIMEOUT)
        image = images_pb2.Image(name=SEED_IMAGE)
        image.target.media_type = "application/vnd.oci.image.manifest.v1+json"
        image.target.digest, image.target.size = "sha256:" + "1" * 64, 2
        images_pb2_grpc.ImagesStub(self.channel).Create(images_pb2.CreateImageRequest(image=image), metadata=md,
                                                        timeout=TIMEOUT)
        containers = containers_pb2_grpc.ContainersStub(self.channel)
        for cid in (SEED_IDLE, SEED_RUNNING):
            c = containers_pb2.Container(id=cid)
            c.runtime.name = "io.containerd.runc.v2"
            c.spec.CopyFrom(any_pb2.Any(type_url=SPEC_URL, value=spec_json(cid, ["/bin/sleep", "600"], self.tag)))
            containers.Create(containers_pb2.CreateContainerRequest(container=c), metadata=md, timeout=TIMEOUT)
        if self.runs_tasks:
            self.start_running()

    def start_running(self) -> None:
        md = (("containerd-namespace", "default"),)
        req = tasks_pb2.CreateTaskRequest(container_id=SEED_RUNNING)
        req.rootfs.append(mount_pb2.Mount(type="bind", source=ROOTFS, options=["rbind", "rw"]))
        self.tasks.Create(req, metadata=md, timeout=TIMEOUT)
        self.tasks.Start(tasks_pb2.StartRequest(container_id=SEED_RUNNING), metadata=md, timeout=TIMEOUT)

    def reseed(self) -> None:
        """Now and then, a running task again where the fuzz stopped,
        paused or deleted it, or crashed its shim (a few times per test:
        each is a real shim and runc)."""
        if not self.runs_tasks or self.reseeds >= MAX_RESEEDS:
            return
        md = (("containerd-namespace", "default"),)
        try:
            got = self.tasks.Get(tasks_pb2.GetRequest(container_id=SEED_RUNNING), metadata=md, timeout=TIMEOUT)
            if got.process.status == task_pb2.RUNNING:
                return
        except grpc.RpcError:
            pass  # gone, or its init deleted in the shim (DeleteProcess with no exec id): Delete below
        self.reseeds += 1
        for name, req, timeout in (("Resume", tasks_pb2.ResumeTaskRequest(container_id=SEED_RUNNING), TIMEOUT),
                                   ("Kill", tasks_pb2.KillRequest(container_id=SEED_RUNNING, signal=9, all=True), TIMEOUT),
                                   ("Wait", tasks_pb2.WaitRequest(container_id=SEED_RUNNING), 10),
                                   ("Delete", tasks_pb2.DeleteTaskRequest(container_id=SEED_RUNNING), TIMEOUT)):
            try:
                getattr(self.tasks, name)(req, metadata=md, timeout=timeout)
            except grpc.RpcError as err:  # not paused, not running, already gone: each step fits one state
                if name != "Wait" or err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    check(self.d, BY_NAME[f"containerd.services.tasks.v1.Tasks.{name}"], err)
        try:
            self.start_running()
        except grpc.RpcError as err:  # the fuzz deleted the container, or gave it a spec that does not run
            check(self.d, BY_NAME["containerd.services.tasks.v1.Tasks.Create"], err)

    def delete_every_task(self) -> list[str]:
        problems = []
        names = namespace_pb2_grpc.NamespacesStub(self.channel).List(namespace_pb2.ListNamespacesRequest(),
                                                                      timeout=TIMEOUT).namespaces
        for ns in names:
            md = (("containerd-namespace", ns.name),)
            for task in self.tasks.List(tasks_pb2.ListTasksRequest(), metadata=md, timeout=TIMEOUT).tasks:
                try:
                    self.tasks.Kill(tasks_pb2.KillRequest(container_id=task.id, signal=signal.SIGKILL, all=True),
                                    metadata=md, timeout=TIMEOUT)
                except grpc.RpcError:
                    pass  # already stopped, or never started
                try:
                    self.tasks.Wait(tasks_pb2.WaitRequest(container_id=task.id), metadata=md, timeout=TIMEOUT)
                    self.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=task.id), metadata=md, timeout=TIMEOUT)
                except grpc.RpcError as err:
                    problems.append(f"task {ns.name}/{task.id}: {err.code()} {err.details()}")
        return problems

    def close(self) -> None:
        problems = []
        try:
            if self.d.running:
                problems += self.delete_every_task()
                deadline = time.monotonic() + 20
                while shim_pids(self.d.address) and time.monotonic() < deadline:
                    time.sleep(0.1)
                problems += [f"shim {pid} outlived its task" for pid in shim_pids(self.d.address)]
                problems += [f"mount left: {m}" for m in mounts_under(self.d.root, self.d.state)]
                problems += [f"bundle left: {b}" for b in bundles(self.d)]
        finally:
            self.channel.close()
            self._force_cleanup()
        if problems:
            pytest.fail("after the fuzz: " + "; ".join(problems), pytrace=False)

    def _force_cleanup(self) -> None:
        """By pid and path: shims, runc's containers, mounts, the run's cgroups."""
        for pid in shim_pids(self.d.address):
            os.kill(pid, signal.SIGKILL)
        for runc_ns in glob.glob(os.path.join(self.d.state, "runc", "*")):
            for cid in os.listdir(runc_ns):
                subprocess.run(["runc", "--root", runc_ns, "delete", "--force", cid], capture_output=True, timeout=60)
        for point in reversed(mounts_under(self.d.root, self.d.state)):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=60)
        for cg in glob.glob(f"/sys/fs/cgroup/{CGROUP_PREFIX}-*") + glob.glob(f"/sys/fs/cgroup/*/{CGROUP_PREFIX}-*"):
            try:
                with open(os.path.join(cg, "cgroup.procs")) as procs:
                    for pid in procs.read().split():  # what runc started in this run's cgroups
                        os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.2)
                os.rmdir(cg)
            except OSError:
                pass


def bundles(d) -> list[str]:
    """Task directories of the runtime (bundles in state, work dirs in root),
    dot-named ones (a delete half done) included."""
    return sorted(glob.glob(os.path.join(d.state, "io.containerd.runtime.v2.task", "*", "*"))
                  + glob.glob(os.path.join(d.state, "io.containerd.runtime.v2.task", "*", ".*"))
                  + glob.glob(os.path.join(d.root, "io.containerd.runtime.v2.task", "*", "*"))
                  + glob.glob(os.path.join(d.root, "io.containerd.runtime.v2.task", "*", ".*")))


@pytest.fixture(scope="module")
def canary():
    """A directory with a file and a subdirectory in it, which the daemons
    run in and hostile paths name; and the busybox rootfs (removed once
    the daemons are gone: their fixtures need this one)."""
    os.makedirs(os.path.join(CANARY, "sub"))
    with open(os.path.join(CANARY, "sub", "keep"), "w") as f:
        f.write("canary\n")
    if can_run_tasks():
        os.makedirs(os.path.join(ROOTFS, "bin"))
        for sub in ("proc", "dev", "tmp", "etc"):
            os.mkdir(os.path.join(ROOTFS, sub))
        shutil.copy2(BUSYBOX, os.path.join(ROOTFS, "bin", "busybox"))
        for applet in ("sh", "true", "sleep"):
            os.symlink("busybox", os.path.join(ROOTFS, "bin", applet))
    yield CANARY
    shutil.rmtree(CANARY, ignore_errors=True)
    if not mounts_under(ROOTFS):  # never through a mount a failed run left
        shutil.rmtree(ROOTFS, ignore_errors=True)


@pytest.fixture(scope="module")
def hostile(canary):
    """The daemon the well-typed hostile requests go to."""
    factory = DaemonFactory()
    try:
        f = Fuzzed(factory, canary)
        try:
            f.seed()
            yield f
        finally:
            f.close()
    finally:
        factory.close()


@pytest.fixture(scope="module")
def malformed(canary):
    """A daemon of its own for undecodable requests: no collection or task
    exit a hostile request started may still be writing during them."""
    factory = DaemonFactory()
    try:
        f = Fuzzed(factory, canary)
        try:
            f.seed()
            yield f
        finally:
            f.close()
    finally:
        factory.close()


# -- what was written ---------------------------------------------------------------------


def _entry(path: str) -> tuple:
    st_ = os.lstat(path)
    entry: tuple = (st_.st_mode, st_.st_uid, st_.st_gid, st_.st_size, st_.st_mtime_ns)
    if stat.S_ISREG(st_.st_mode):
        with open(path, "rb") as f:
            entry += (hashlib.sha256(f.read()).hexdigest(),)
    elif stat.S_ISLNK(st_.st_mode):
        entry += (os.readlink(path),)
    return entry


def tree(top: str, skip=lambda path: False) -> dict[str, tuple]:
    """Every entry under `top` (itself included): mode, owner, size, mtime,
    and a file's content digest or a link's target. Access times are left
    out: reading is not writing."""
    found = {top: _entry(top)}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [n for n in dirnames if not skip(os.path.join(dirpath, n))]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not skip(path):
                found[path] = _entry(path)
    return found


def database_rows(path: str) -> list[str]:
    """A SQLite database's schema and rows (read-only, as SQL)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def daemon_state(d) -> dict[str, object]:
    """What the daemon keeps: root and state, every SQLite database's rows.

    Left out: SQLite's `-shm` files. They are the WAL's index in shared
    memory, and every read transaction records its read mark there, so a
    read (an answer to a request) changes them; what they index is in the
    `-wal` file and the database, which are compared byte for byte. The
    daemon's log is outside root and state (the test's directory), so it
    needs no exclusion."""
    skip = lambda path: path.endswith("-shm")  # noqa: E731
    found: dict[str, object] = {**tree(d.root, skip), **tree(d.state, skip)}
    for db in glob.glob(os.path.join(d.root, "**", "*.db"), recursive=True):
        found["rows of " + db] = database_rows(db)
    return found


def outside_state(d, canary: str) -> dict[str, object]:
    """What the daemon may not write: the canary, and its own directory but
    for root, state and its log (which grows with every refusal)."""
    inside = (d.root, d.state)
    found: dict[str, object] = dict(tree(canary))
    mine = tree(d.dir, skip=lambda path: path in inside or path == d.log_path)
    mine.pop(d.dir)  # its mtime follows root/state being made, not writes
    found.update(mine)
    return found


def differences(before: dict, after: dict) -> list[str]:
    return [f"{k}: {before.get(k)!r:.200} -> {after.get(k)!r:.200}"
            for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]


def settled(d) -> dict[str, object]:
    """The daemon's state once its own start-up work (the first collection,
    the seeded task's start) has stopped changing it."""
    last = daemon_state(d)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1)
        now = daemon_state(d)
        if now == last:
            return now
        last = now
    raise AssertionError("the daemon's state kept changing with no request: " + "; ".join(differences(last, daemon_state(d))))


# -- hostile values, by field type -------------------------------------------------------

HOSTILE_STRINGS = st.one_of(
    st.sampled_from([
        "", "default", "a b", "x" * 77, "a" * 300_000, "\x00\x01\x1b[2J\x7f", "../../../etc/passwd", "/",
        "sha256:" + "0" * 64, "sha256:zz", "sha512:" + "f" * 128, "md5:abc", "sha256:" + "A" * 64,
        "labels.x~=^(a+)+$", "name~=[", 'a==b,"c', "/tasks/exit", "k8s.io", "overlayfs", "native", "walking",
        "-1", "\u202e\ufeff\U0010ffff", "é" * 5000, "labels.a", "labels", "containerd.io/gc.ref.content",
        "io.containerd.runc.v2", "io.containerd.runc.v1", "io.containerd.runtime.v1.linux", SPEC_URL, PROCESS_URL,
        "containerd.runc.v1.Options", "containerd.linux.runc.CreateOptions",
    ]),
    # the seeded objects, so requests get past "not found" (more often than the rest)
    st.sampled_from([SEED_RUNNING, SEED_IDLE, SEED_IMAGE, SEED_LEASE, SEED_SNAPSHOT, SEED_EXEC]),
    st.sampled_from([SEED_RUNNING, SEED_IDLE]),
    # paths into the canary (the daemon's working directory): nothing may appear there
    st.sampled_from([CANARY, CANARY + "/made-by-fuzz", "made-by-fuzz", "./made-by-fuzz/x",
                     "../../../../.." + CANARY + "/made-by-fuzz", "fifo://" + CANARY + "/made-by-fuzz"]),
    # answers quote names: never a marker `check` looks for (hypothesis draws
    # string constants it finds in the source; a quoted one is the client's)
    st.text(max_size=40).filter(lambda t: not any(leak in t for leak in LEAKS)),
)
SIGNED = st.one_of(st.sampled_from([0, -1, -(2 ** 63), 2 ** 63 - 1, 2 ** 31, -(2 ** 31)]), st.integers(-10, 10 ** 6))
UNSIGNED = st.one_of(st.sampled_from([0, 2 ** 64 - 1, 2 ** 32]), st.integers(0, 10 ** 6))
BYTES = st.one_of(st.sampled_from([
    b"", b"\x00" * 65536, b"\x1f\x8b\x08\x00garbage", b"{}", b"null", b"[]", b'{"args": 5}', b'{"linux": {"resources": 1}}',
    # JSON a spec or process Any may carry: a real one (an exec of /bin/true), or close to one
    json.dumps({"args": ["/bin/true"], "cwd": "/", "env": ["PATH=/bin"]}).encode(),
    json.dumps({"args": [], "cwd": "relative", "terminal": True}).encode(),
    spec_json(SEED_IDLE, ["/bin/true"]),
]), st.binary(max_size=512))
# mounts name no real directory but the seeded rootfs (ours): the differ
# walks what it is given, and a task runs on it
MOUNT_SOURCES = st.sampled_from(["", "/nonexistent-fuzz", "relative/none", "\x00bad", "x" * 5000, "overlay", ROOTFS])
MOUNT_OPTIONS = st.lists(st.sampled_from([
    "rbind", "ro", "rw", "remount", "loop", "lowerdir=/nonexistent-fuzz", "upperdir=/nonexistent-fuzz",
    "workdir=", "x" * 5000, "\x00", "lowerdir=" + ":".join(["/nonexistent-fuzz"] * 400),
]), max_size=4)

_SIGNED_TYPES = {pb_descriptor.FieldDescriptor.TYPE_INT32, pb_descriptor.FieldDescriptor.TYPE_INT64,
                 pb_descriptor.FieldDescriptor.TYPE_SINT32, pb_descriptor.FieldDescriptor.TYPE_SINT64,
                 pb_descriptor.FieldDescriptor.TYPE_SFIXED32, pb_descriptor.FieldDescriptor.TYPE_SFIXED64}
_UNSIGNED_TYPES = {pb_descriptor.FieldDescriptor.TYPE_UINT32, pb_descriptor.FieldDescriptor.TYPE_UINT64,
                   pb_descriptor.FieldDescriptor.TYPE_FIXED32, pb_descriptor.FieldDescriptor.TYPE_FIXED64}


def _fits(value: int, field: pb_descriptor.FieldDescriptor) -> int:
    bits = 32 if field.type in (pb_descriptor.FieldDescriptor.TYPE_INT32, pb_descriptor.FieldDescriptor.TYPE_SINT32,
                                pb_descriptor.FieldDescriptor.TYPE_SFIXED32, pb_descriptor.FieldDescriptor.TYPE_UINT32,
                                pb_descriptor.FieldDescriptor.TYPE_FIXED32) else 64
    if field.type in _UNSIGNED_TYPES:
        return value % (1 << bits)
    return (value + (1 << (bits - 1))) % (1 << bits) - (1 << (bits - 1))


# fields that name the seeded objects: half the time they do, so requests
# reach past "not found"
SEEDED = {
    "container_id": st.sampled_from([SEED_RUNNING, SEED_IDLE]),
    "id": st.sampled_from([SEED_RUNNING, SEED_IDLE, SEED_LEASE]),
    "exec_id": st.sampled_from(["", SEED_EXEC, SEED_EXEC + "2"]),
    "name": st.sampled_from([SEED_IMAGE, "default"]),
    "key": st.sampled_from([SEED_SNAPSHOT, SEED_SNAPSHOT + "-2"]),
    "parent": st.sampled_from([SEED_SNAPSHOT]),
    "snapshotter": st.sampled_from(["overlayfs", "native"]),
    "type_url": st.sampled_from([SPEC_URL, PROCESS_URL]),
    "type": st.sampled_from(["bind"]),  # a mount's, with ROOTFS: a task that runs
}
SIGNALS = st.sampled_from([0, 1, 9, 15, 18, 19, 64, 65, 2 ** 31, 2 ** 32 - 1])


def _scalar(draw, field: pb_descriptor.FieldDescriptor, in_mount: bool):
    t = field.type
    if t == pb_descriptor.FieldDescriptor.TYPE_STRING:
        if in_mount and field.name in ("source", "target"):
            return draw(MOUNT_SOURCES)
        if field.name in SEEDED and draw(st.booleans()):
            return draw(SEEDED[field.name])
        return draw(HOSTILE_STRINGS)
    if field.name == "signal" and t == pb_descriptor.FieldDescriptor.TYPE_UINT32:
        return draw(SIGNALS)
    if t == pb_descriptor.FieldDescriptor.TYPE_BYTES:
        return draw(BYTES)
    if t == pb_descriptor.FieldDescriptor.TYPE_BOOL:
        return draw(st.booleans())
    if t == pb_descriptor.FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return draw(st.one_of(st.sampled_from(known), st.sampled_from([-1, 7, 99, 2 ** 31 - 1])))
    if t in _SIGNED_TYPES:
        return _fits(draw(SIGNED), field)
    if t in _UNSIGNED_TYPES:
        return _fits(draw(UNSIGNED), field)
    return draw(st.floats(allow_nan=True))


def _fill(draw, msg, depth: int) -> None:
    """Set a random subset of msg's fields to hostile values."""
    in_mount = msg.DESCRIPTOR.full_name == "containerd.types.Mount"
    for field in msg.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_f, value_f = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            target = getattr(msg, field.name)
            if value_f.message_type is None and draw(st.integers(0, 9)) == 0:  # now and then, very many labels
                for i in range(draw(st.sampled_from([5000, 100_000]))):
                    target[f"k{i}"] = "v"
                continue
            for _ in range(draw(st.integers(0, 3))):
                k = _scalar(draw, key_f, in_mount)
                if value_f.message_type is None:
                    target[k] = _scalar(draw, value_f, in_mount)
                elif depth > 0:
                    _fill(draw, target[k], depth - 1)
            continue
        if field.is_repeated:
            if field.name == "options" and in_mount:
                getattr(msg, field.name).extend(draw(MOUNT_OPTIONS))
                continue
            for _ in range(draw(st.integers(0, 3))):
                if field.message_type is None:
                    getattr(msg, field.name).append(_scalar(draw, field, in_mount))
                elif depth > 0:
                    _fill(draw, getattr(msg, field.name).add(), depth - 1)
            continue
        if field.message_type is not None:
            if depth > 0:
                _fill(draw, getattr(msg, field.name), depth - 1)
                getattr(msg, field.name).SetInParent()
            continue
        setattr(msg, field.name, _scalar(draw, field, in_mount))


@st.composite
def typed_request(draw, method: pb_descriptor.MethodDescriptor) -> bytes:
    msg = message_factory.GetMessageClass(method.input_type)()
    _fill(draw, msg, depth=3)
    return msg.SerializeToString()


def decodes(method: pb_descriptor.MethodDescriptor, data: bytes) -> bool:
    try:
        message_factory.GetMessageClass(method.input_type).FromString(data)
    except DecodeError:
        return False
    return True


@st.composite
def malformed_request(draw, method: pb_descriptor.MethodDescriptor) -> bytes:
    """Bytes that do not decode as `method`'s request (the daemon parses
    with the same protobuf runtime as this check)."""
    kind = draw(st.sampled_from(["random", "truncated", "tagged"]))
    if kind == "random":
        data = draw(st.binary(min_size=1, max_size=256))
    elif kind == "truncated":
        data = draw(typed_request(method))
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))] + draw(st.binary(max_size=8))
    else:  # a field tag with a wire type the field does not have, or a bad length
        data = draw(st.sampled_from([b"\x0a\xff\xff\xff\xff\x0f", b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80",
                                     b"\x0b", b"\x0d\x01", b"\x12\x05ab", b"\x0a\x02\x08"]))
    if decodes(method, data):  # a cut that fell on a field's end, say: spoil it with field number 0
        data += b"\x07"
    assert not decodes(method, data)
    return data


METADATA = st.sampled_from([
    (("containerd-namespace", "default"),),
    (("containerd-namespace", "default"),),
    (("containerd-namespace", "default"),),
    (("containerd-namespace", "fuzz"), ("containerd-lease", "no-such-lease")),
    (("containerd-namespace", "a b"),),
    (("containerd-namespace", "x" * 200),),
    (),
])


# -- the calls -------------------------------------------------------------------------------


def call(channel, method: pb_descriptor.MethodDescriptor, payloads: list[bytes], metadata) -> grpc.RpcError | None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    endless = method.full_name in ENDLESS
    timeout = ENDLESS_TIMEOUT if endless else CALL_TIMEOUT
    kw = dict(request_serializer=None, response_deserializer=None)
    try:
        if method.client_streaming and method.server_streaming:
            list(channel.stream_stream(path, **kw)(iter(payloads), metadata=metadata, timeout=timeout))
        elif method.client_streaming:
            channel.stream_unary(path, **kw)(iter(payloads), metadata=metadata, timeout=timeout)
        elif method.server_streaming:
            list(channel.unary_stream(path, **kw)(payloads[0], metadata=metadata, timeout=timeout))
        else:
            channel.unary_unary(path, **kw)(payloads[0], metadata=metadata, timeout=timeout)
    except grpc.RpcError as err:
        if endless and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return None
        return err
    return None


def check(daemon, method, err: grpc.RpcError | None) -> None:
    event(f"{method.containing_service.name}: {'OK' if err is None else err.code().name}")
    if err is None:
        return
    details = err.details() or ""
    where = f"{method.full_name}: {err.code()} {details[:300]!r}"
    assert err.code() in ALLOWED, where
    assert len(details.encode()) <= MAX_DETAILS, where
    for leak in (*LEAKS, daemon.root, daemon.state):
        assert leak not in details, where
    if err.code() == grpc.StatusCode.INTERNAL:
        assert details.startswith("grpc: "), where  # only grpc-go's own answers
    # the generic answer means a handler met an exception nobody expected:
    # a bug to fix, not an answer
    assert details != GENERIC, where


def alive(channel) -> None:
    version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=10)


FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("PCD_FUZZ_EXAMPLES", "300")), deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                           HealthCheck.function_scoped_fixture],
)


# PCD_FUZZ_ONLY=Tasks,Containers: only those services' methods (a soak of one area)
ONLY = {n for n in os.environ.get("PCD_FUZZ_ONLY", "").split(",") if n}
FUZZED = sorted(n for n in BY_NAME if not ONLY or BY_NAME[n].containing_service.name in ONLY)


def test_hostile_well_typed_requests(hostile, canary):
    d, channel = hostile.d, hostile.channel
    before = outside_state(d, canary)

    @FUZZ_SETTINGS
    @given(data=st.data())
    def examples(data):
        if data.draw(st.integers(0, 19), label="reseed") == 0:
            hostile.reseed()
        method = BY_NAME[data.draw(st.sampled_from(FUZZED), label="method")]
        count = data.draw(st.integers(1, 3)) if method.client_streaming else 1
        payloads = [data.draw(typed_request(method)) for _ in range(count)]
        check(d, method, call(channel, method, payloads, data.draw(METADATA, label="metadata")))
        alive(channel)

    examples()
    assert differences(before, outside_state(d, canary)) == []


def test_malformed_request_bytes_write_nothing(malformed, canary):
    d, channel = malformed.d, malformed.channel
    before = settled(d)
    outside = outside_state(d, canary)

    @FUZZ_SETTINGS
    @given(data=st.data())
    def examples(data):
        method = BY_NAME[data.draw(st.sampled_from(FUZZED), label="method")]
        count = data.draw(st.integers(1, 2)) if method.client_streaming else 1
        payloads = [data.draw(malformed_request(method)) for _ in range(count)]
        err = call(channel, method, payloads, data.draw(METADATA, label="metadata"))
        assert err is not None, f"{method.full_name} accepted bytes that do not decode"
        check(d, method, err)
        alive(channel)

    examples()
    assert differences(before, daemon_state(d)) == []
    assert differences(outside, outside_state(d, canary)) == []


def test_every_service_is_fuzzed(hostile):
    """What the daemon serves, as its introspection lists it: each gRPC
    plugin's service is in the fuzz, each ttrpc plugin has its fuzz."""
    plugins = introspection_pb2_grpc.IntrospectionStub(hostile.channel).Plugins(
        introspection_pb2.PluginsRequest(), timeout=TIMEOUT).plugins
    served = {(p.type, p.id) for p in plugins if p.init_err.code == 0}
    assert {i for t, i in served if t == "io.containerd.grpc.v1"} == set(GRPC_PLUGINS)
    assert {i for t, i in served if t == "io.containerd.ttrpc.v1"} == set(TTRPC_PLUGINS)
    assert {m.containing_service for m in METHODS} == set(GRPC_PLUGINS.values())
