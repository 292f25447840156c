"""The Tasks and Containers services under a hostile client and a careless
operator, with the real containerd-shim-runc-v2 and runc and busybox
containers (a bind-mounted busybox-static rootfs), through the daemon's
gRPC socket.

The bar, for every test: each answer is one of containerd's codes with a
bounded message and no Python internals; nothing of the user's is lost;
nothing is left behind (shims, bundles, mounts, runc state) once the test's
tasks are deleted; and other clients are answered meanwhile.

Trust model (as containerd's, see docs/architecture.md): whoever can reach
the gRPC socket is root. Stdio paths, runtime names that are paths and the
shim's file:// and binary:// schemes act as root, here as in containerd;
these tests check that a bad value fails cleanly, not that it is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2

from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from pycontainerd.api.types import mount_pb2
from pycontainerd.testing.daemon import InProcessDaemon, short_tempdir

SHIM = shutil.which("containerd-shim-runc-v2")
BUSYBOX = "/bin/busybox"
SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RUNTIME = "io.containerd.runc.v2"
MAX_DETAILS = 4096
STALL_BOUND = 2.5  # seconds another client may wait meanwhile (loaded 2-core CI)
TIMEOUT = 60

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(SHIM is None or shutil.which("runc") is None or not os.path.exists(BUSYBOX) or os.geteuid() != 0,
                       reason="needs root, runc, containerd-shim-runc-v2 and busybox-static"),
]


def process_json(args: list[str]) -> dict:
    return {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": args, "env": ["PATH=/bin"], "cwd": "/",
            "noNewPrivileges": True}


def spec_doc(ns: str, cid: str, args: list[str]) -> dict:
    return {
        "ociVersion": "1.0.2", "process": process_json(args), "root": {"path": "rootfs"}, "hostname": cid,
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
                  "cgroupsPath": f"/pcd-hx-{ns}-{cid}"},
    }


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def failure(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


class World:
    """One test's daemon (in this process), namespace, busybox rootfs, and
    the bookkeeping to prove nothing is left."""

    def __init__(self, config: dict | None = None) -> None:
        self.base = short_tempdir("pcd-hx-")
        self.rootfs = os.path.join(self.base, "rootfs")
        os.makedirs(os.path.join(self.rootfs, "bin"))
        for d in ("proc", "dev", "tmp", "etc"):
            os.mkdir(os.path.join(self.rootfs, d))
        shutil.copy2(BUSYBOX, os.path.join(self.rootfs, "bin", "busybox"))
        for applet in ("sh", "true", "sleep", "echo", "cat"):
            os.symlink("busybox", os.path.join(self.rootfs, "bin", applet))
        self.ns = "hx-" + uuid.uuid4().hex[:10]
        self.md = (("containerd-namespace", self.ns),)
        self.shim_pids: set[int] = set()
        self.ids: set[str] = set()
        self.extra_dirs: list[str] = []
        self.daemon = InProcessDaemon(config=config).start()
        self.dir = self.daemon.dir
        self.connect(self.daemon.address)

    def connect(self, address: str) -> None:
        # containerd's client takes answers up to 16 MiB (a container echoes its spec back)
        self.channel = grpc.insecure_channel("unix:" + address, options=[("grpc.max_receive_message_length", 16 << 20)])
        self.containers = containers_pb2_grpc.ContainersStub(self.channel)
        self.tasks = tasks_pb2_grpc.TasksStub(self.channel)
        self.namespaces = namespace_pb2_grpc.NamespacesStub(self.channel)

    @property
    def state(self) -> str:
        return os.path.join(self.dir, "state")

    @property
    def bundles(self) -> str:
        return os.path.join(self.state, "io.containerd.runtime.v2.task", self.ns)

    @property
    def runtime(self):
        return self.daemon.daemon.plugins.get("io.containerd.runtime.v2", "task")

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.daemon._loop).result(TIMEOUT)

    def container(self, cid: str, args: list[str] = ("sleep", "300"), spec: bytes | None = None,
                  runtime: str = RUNTIME, options: any_pb2.Any | None = None) -> None:
        self.ids.add(cid)
        c = containers_pb2.Container(id=cid)
        c.runtime.name = runtime
        if options is not None:
            c.runtime.options.CopyFrom(options)
        c.spec.CopyFrom(any_pb2.Any(type_url=SPEC_URL, value=spec if spec is not None
                                    else json.dumps(spec_doc(self.ns, cid, list(args))).encode()))
        self.containers.Create(containers_pb2.CreateContainerRequest(container=c), metadata=self.md, timeout=TIMEOUT)

    def create_request(self, cid: str, **kwargs) -> tasks_pb2.CreateTaskRequest:
        req = tasks_pb2.CreateTaskRequest(container_id=cid, **kwargs)
        req.rootfs.append(mount_pb2.Mount(type="bind", source=self.rootfs, options=["rbind", "rw"]))
        return req

    def create_task(self, cid: str, **kwargs) -> int:
        pid = self.tasks.Create(self.create_request(cid, **kwargs), metadata=self.md, timeout=TIMEOUT).pid
        self.note_shims()
        return pid

    def note_shims(self) -> None:
        for task in self.run(self.runtime.tasks(None, True)):
            try:
                self.shim_pids.add(self.run(task.connect()).shim_pid)
            except Exception:  # gone meanwhile
                pass

    def kill_and_delete(self, cid: str) -> None:
        try:
            self.tasks.Kill(tasks_pb2.KillRequest(container_id=cid, signal=signal.SIGKILL), metadata=self.md, timeout=TIMEOUT)
            self.tasks.Wait(tasks_pb2.WaitRequest(container_id=cid), metadata=self.md, timeout=TIMEOUT)
        except grpc.RpcError:
            pass
        self.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=cid), metadata=self.md, timeout=TIMEOUT)

    def assert_clean(self, err: grpc.RpcError) -> None:
        details = err.details() or ""
        assert len(details.encode()) <= MAX_DETAILS, len(details)
        for leak in ("Traceback", "<class", "Error(", "[Errno", "object at 0x"):
            assert leak not in details, details

    def still_served(self) -> None:
        started = time.monotonic()
        version_pb2_grpc.VersionStub(self.channel).Version(empty_pb2.Empty(), timeout=STALL_BOUND * 4)
        self.containers.List(containers_pb2.ListContainersRequest(), metadata=self.md, timeout=STALL_BOUND * 4)
        assert time.monotonic() - started < STALL_BOUND

    def nothing_left(self) -> list[str]:
        """What the test's tasks left behind (the test deleted them)."""
        problems = []
        listed = self.tasks.List(tasks_pb2.ListTasksRequest(), metadata=self.md, timeout=TIMEOUT).tasks
        if listed:
            problems.append(f"tasks left: {[t.id for t in listed]}")
        deadline = time.monotonic() + 20
        while any(alive(p) for p in self.shim_pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        problems += [f"shim {p} still running" for p in self.shim_pids if alive(p)]
        if os.path.isdir(self.bundles) and os.listdir(self.bundles):
            problems.append(f"bundles left: {os.listdir(self.bundles)}")
        runc_ns = os.path.join(self.state, "runc", self.ns)
        if os.path.isdir(runc_ns) and os.listdir(runc_ns):
            problems.append(f"runc state left: {os.listdir(runc_ns)}")
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if self.dir in line.split()[4]]
        if mounts:
            problems.append(f"mounts left: {mounts}")
        import glob

        for cg in glob.glob(f"/sys/fs/cgroup/pcd-hx-{self.ns}-*") + glob.glob(f"/sys/fs/cgroup/*/pcd-hx-{self.ns}-*"):
            try:
                with open(os.path.join(cg, "cgroup.procs")) as f:
                    if f.read().split():
                        problems.append(f"processes left in {cg}")  # a `runc init` waiting, say
            except OSError:
                pass
        return problems

    def close(self) -> None:
        """Stop the daemon, then remove by pid and path whatever a failure left."""
        try:
            self.note_shims()
        except Exception:
            pass
        self.channel.close()
        self._stop_keeping_dir()
        for pid in self.shim_pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        for cid in self.ids:
            subprocess.run(["runc", "--root", os.path.join(self.state, "runc", self.ns), "delete", "--force", cid],
                           capture_output=True)
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if self.dir in line.split()[4]]
        for target in reversed(mounts):
            subprocess.run(["umount", "-l", target], capture_output=True)
        import glob

        for cid in self.ids:
            for cg in glob.glob(f"/sys/fs/cgroup/*/pcd-hx-{self.ns}-{cid}") + glob.glob(f"/sys/fs/cgroup/pcd-hx-{self.ns}-{cid}"):
                try:
                    with open(os.path.join(cg, "cgroup.procs")) as f:
                        for pid in f.read().split():
                            os.kill(int(pid), signal.SIGKILL)
                    time.sleep(0.1)
                    os.rmdir(cg)
                except OSError:
                    pass
        for d in (self.dir, self.base, *self.extra_dirs):
            shutil.rmtree(d, ignore_errors=True)

    def _stop_keeping_dir(self) -> None:
        d = self.daemon
        if d._thread is not None and d._thread.is_alive():
            d._loop.call_soon_threadsafe(d._stop.set)
            d._thread.join(30)
        d._thread = None


@pytest.fixture
def world():
    w = World()
    yield w
    w.close()


# -- hostile requests ----------------------------------------------------------------


def test_100_concurrent_creates_of_one_task_make_exactly_one_shim(world):
    world.container("dup")
    with ThreadPoolExecutor(100) as pool:
        def create(_):
            try:
                return world.tasks.Create(world.create_request("dup"), metadata=world.md, timeout=TIMEOUT).pid
            except grpc.RpcError as exc:
                return exc

        results = list(pool.map(create, range(100)))
    pids = [r for r in results if isinstance(r, int)]
    errors = [r for r in results if not isinstance(r, int)]
    assert len(pids) == 1, [e.details() for e in errors][:3]
    for e in errors:
        assert e.code() == grpc.StatusCode.ALREADY_EXISTS, e.details()
        assert e.details() == "task dup: already exists"
    world.note_shims()
    assert len(world.shim_pids) == 1
    world.kill_and_delete("dup")
    assert not world.nothing_left()


def test_a_spec_that_is_not_json_fails_the_create_and_leaves_nothing(world):
    world.container("notjson", spec=b"this is { not json")
    err = failure(world.tasks.Create, world.create_request("notjson"), metadata=world.md, timeout=TIMEOUT)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    world.assert_clean(err)
    assert not world.nothing_left()
    assert world.containers.Get(containers_pb2.GetContainerRequest(id="notjson"), metadata=world.md,
                                timeout=TIMEOUT).container.id == "notjson"  # the user's record is kept


def test_a_4_mib_spec_runs_or_fails_cleanly(world):
    doc = spec_doc(world.ns, "big", ["true"])
    doc["annotations"] = {"padding": "p" * (4 << 20)}
    world.container("big", spec=json.dumps(doc).encode())
    world.create_task("big")
    world.tasks.Start(tasks_pb2.StartRequest(container_id="big"), metadata=world.md, timeout=TIMEOUT)
    world.kill_and_delete("big")
    assert not world.nothing_left()


def test_runtime_options_with_a_bogus_type_fail_cleanly(world):
    world.container("bogus", options=any_pb2.Any(type_url="example.com/not.a.Type", value=b"\x01\x02garbage"))
    err = failure(world.tasks.Create, world.create_request("bogus"), metadata=world.md, timeout=TIMEOUT)
    world.assert_clean(err)
    assert err.code() != grpc.StatusCode.OK
    err = failure(world.tasks.Create, world.create_request(
        "bogus", options=any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"\xff\xff")),
        metadata=world.md, timeout=TIMEOUT)
    assert (err.code(), err.details()) == (grpc.StatusCode.UNKNOWN, f"invalid task create option for {RUNTIME}")
    assert not world.nothing_left()


@pytest.mark.parametrize("what", ["huge", "missing", "directory", "regular"])
def test_stdio_paths_that_are_not_fifos(world, what):
    """The shim opens stdio paths (as root, as containerd's does): a path
    that does not exist is not created, a directory fails, a huge one fails
    with a bounded message, and a regular file the client names is written
    to (containerd's behaviour: socket access is root)."""
    target = {"huge": "/" + "x" * 65536, "missing": os.path.join(world.base, "missing", "out"),
              "directory": world.base, "regular": os.path.join(world.base, "regular")}[what]
    if what == "regular":
        with open(target, "w") as f:
            f.write("")
    world.container("io", args=["echo", "hello"])
    try:
        world.create_task("io", stdout=target, stderr=target)
    except grpc.RpcError as err:
        assert what != "regular", err.details()
        world.assert_clean(err)
    else:
        assert what == "regular"
        world.tasks.Start(tasks_pb2.StartRequest(container_id="io"), metadata=world.md, timeout=TIMEOUT)
        world.tasks.Wait(tasks_pb2.WaitRequest(container_id="io"), metadata=world.md, timeout=TIMEOUT)
        world.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id="io"), metadata=world.md, timeout=TIMEOUT)
        with open(target) as f:
            assert f.read() == "hello\n"
    assert not os.path.exists(os.path.join(world.base, "missing"))
    assert not world.nothing_left()


def test_a_thousand_execs_are_served_and_cleaned(world):
    world.container("execs")
    world.create_task("execs")
    world.tasks.Start(tasks_pb2.StartRequest(container_id="execs"), metadata=world.md, timeout=TIMEOUT)
    spec = any_pb2.Any(type_url=PROCESS_URL, value=json.dumps(process_json(["true"])).encode())

    def exec_(i):
        world.tasks.Exec(tasks_pb2.ExecProcessRequest(container_id="execs", exec_id=f"e{i}", spec=spec),
                         metadata=world.md, timeout=TIMEOUT)

    with ThreadPoolExecutor(50) as pool:
        list(pool.map(exec_, range(1000)))
        world.still_served()
    err = failure(exec_, 7)
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
    world.assert_clean(err)
    for i in range(0, 1000, 100):  # a few of them run
        world.tasks.Start(tasks_pb2.StartRequest(container_id="execs", exec_id=f"e{i}"), metadata=world.md, timeout=TIMEOUT)
        w = world.tasks.Wait(tasks_pb2.WaitRequest(container_id="execs", exec_id=f"e{i}"), metadata=world.md, timeout=TIMEOUT)
        assert w.exit_status == 0

    def delete(i):
        world.tasks.DeleteProcess(tasks_pb2.DeleteProcessRequest(container_id="execs", exec_id=f"e{i}"),
                                  metadata=world.md, timeout=TIMEOUT)

    with ThreadPoolExecutor(50) as pool:
        list(pool.map(delete, range(1000)))
    world.kill_and_delete("execs")
    assert not world.nothing_left()


def test_100_waits_pending_hold_nobody_else(world):
    ids = [f"w{i}" for i in range(5)]
    for cid in ids:
        world.container(cid)
        world.create_task(cid)
        world.tasks.Start(tasks_pb2.StartRequest(container_id=cid), metadata=world.md, timeout=TIMEOUT)
    waits = [world.tasks.Wait.future(tasks_pb2.WaitRequest(container_id=ids[i % 5]), metadata=world.md, timeout=TIMEOUT)
             for i in range(100)]
    time.sleep(0.5)
    world.still_served()
    assert not any(w.done() for w in waits)
    for cid in ids:
        world.tasks.Kill(tasks_pb2.KillRequest(container_id=cid, signal=signal.SIGKILL), metadata=world.md, timeout=TIMEOUT)
    assert {w.result(TIMEOUT).exit_status for w in waits} == {128 + signal.SIGKILL}
    for cid in ids:
        world.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=cid), metadata=world.md, timeout=TIMEOUT)
    assert not world.nothing_left()


def test_deleting_a_container_whose_task_exists_is_refused(world):
    """containerd's server would drop the record and orphan the task (its
    client refuses first, with this wording); here the server refuses."""
    world.container("busy")
    world.create_task("busy")
    world.tasks.Start(tasks_pb2.StartRequest(container_id="busy"), metadata=world.md, timeout=TIMEOUT)
    err = failure(world.containers.Delete, containers_pb2.DeleteContainerRequest(id="busy"), metadata=world.md, timeout=TIMEOUT)
    assert (err.code(), err.details()) == (grpc.StatusCode.FAILED_PRECONDITION,
                                           "cannot delete running task busy: failed precondition")
    err = failure(world.tasks.Delete, tasks_pb2.DeleteTaskRequest(container_id="busy"), metadata=world.md, timeout=TIMEOUT)
    world.assert_clean(err)  # the shim refuses to delete a running process
    assert world.tasks.Get(tasks_pb2.GetRequest(container_id="busy"), metadata=world.md,
                           timeout=TIMEOUT).process.status == 2  # RUNNING: still there
    err = failure(world.namespaces.Delete, namespace_pb2.DeleteNamespaceRequest(name=world.ns), timeout=TIMEOUT)
    assert (err.code(), err.details()) == (grpc.StatusCode.FAILED_PRECONDITION,
                                           f'namespace "{world.ns}" must be empty, but it still has containers: '
                                           "failed precondition")
    world.kill_and_delete("busy")
    world.containers.Delete(containers_pb2.DeleteContainerRequest(id="busy"), metadata=world.md, timeout=TIMEOUT)
    assert not world.nothing_left()


# -- careless operator -----------------------------------------------------------------


def fake_shim(where: str, name: str, script: str, mode: int = 0o755) -> str:
    os.makedirs(where, exist_ok=True)
    path = os.path.join(where, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + script)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("kind", ["not-executable", "garbage-address", "own-ttrpc-socket", "fails"])
def test_a_bad_shim_binary_is_a_clear_error_and_leaves_nothing(world, kind):
    bin_dir = os.path.join(world.base, "bin")
    script = {
        "not-executable": "echo never\n",
        "garbage-address": 'if [ "$7" = start ] || [ "$9" = start ]; then echo "\\x00 garbage !!"; else echo junk; fi\n',
        "own-ttrpc-socket": f'echo "unix://{world.daemon.address}.ttrpc"\n',
        "fails": 'echo "shim says no" >&2; exit 3\n',
    }[kind]
    path = fake_shim(bin_dir, "containerd-shim-bad-v2", script, 0o644 if kind == "not-executable" else 0o755)
    world.container("bad", runtime=path)
    err = failure(world.tasks.Create, world.create_request("bad"), metadata=world.md, timeout=TIMEOUT)
    world.assert_clean(err)
    expected = {
        "not-executable": (grpc.StatusCode.UNKNOWN, f"failed to start shim: start failed: : fork/exec {path}: permission denied"),
        "garbage-address": (grpc.StatusCode.UNAVAILABLE, "failed to start shim: ttrpc: connect \\x00 garbage !!: "
                                                         "No such file or directory: unavailable"),
        "own-ttrpc-socket": (grpc.StatusCode.UNIMPLEMENTED, "failed to create shim task: service containerd.task.v2.Task: "
                                                            "not implemented"),
        "fails": (grpc.StatusCode.UNKNOWN, "failed to start shim: start failed: shim says no\n: exit status 3"),
    }[kind]
    assert (err.code(), err.details()) == expected
    assert err.code() not in (grpc.StatusCode.OK, grpc.StatusCode.INTERNAL), err.details()
    assert not world.nothing_left()
    assert os.path.exists(world.daemon.address + ".ttrpc")  # never taken for a shim's
    world.still_served()


@pytest.mark.parametrize("runtime", ["io.containerd.runc.v2/../../x", "../../../../io.containerd.nope.v2",
                                     "io..", "no-dots", "a/b/c.d/../e.f"])
def test_runtime_names_with_separators_or_dots(world, runtime):
    """containerd's resolution (the binary beside the name, on PATH, beside
    the daemon): these name nothing installed, so the create fails with
    containerd's wording and leaves nothing."""
    world.container("rt", runtime=runtime)
    err = failure(world.tasks.Create, world.create_request("rt"), metadata=world.md, timeout=TIMEOUT)
    world.assert_clean(err)
    assert err.details().startswith("failed to start shim: failed to resolve runtime path: "), err.details()
    assert not world.nothing_left()


def test_a_second_daemon_on_the_same_state_is_refused_and_takes_nothing(world):
    world.container("keep")
    world.create_task("keep")
    world.tasks.Start(tasks_pb2.StartRequest(container_id="keep"), metadata=world.md, timeout=TIMEOUT)
    other = short_tempdir("pcd-hx2-")
    try:
        second = InProcessDaemon(config={"state": world.state, "root": os.path.join(other, "root"),
                                         "grpc": {"address": os.path.join(other, "pcd.sock")}})
        with pytest.raises(Exception) as info:
            second.start()
        assert "lock" in str(info.value) or "in use" in str(info.value), str(info.value)
        second.stop()
    finally:
        shutil.rmtree(other, ignore_errors=True)
    assert os.path.exists(world.daemon.address + ".ttrpc")
    assert os.listdir(world.bundles) == ["keep"]
    assert world.tasks.Get(tasks_pb2.GetRequest(container_id="keep"), metadata=world.md,
                           timeout=TIMEOUT).process.status == 2
    world.kill_and_delete("keep")
    assert not world.nothing_left()


def test_the_state_directory_removed_under_running_tasks(world):
    """An operator removes the daemon's state directory (the bundles, runc's
    state) while a task runs: the daemon keeps answering, and the task can
    still be killed and deleted through the API."""
    world.container("orphan")
    pid = world.create_task("orphan")
    world.tasks.Start(tasks_pb2.StartRequest(container_id="orphan"), metadata=world.md, timeout=TIMEOUT)
    with open("/proc/self/mountinfo") as f:
        mounted = {line.split()[4] for line in f}

    def skip_mounts(dirpath):
        return any(m.startswith(dirpath) and m != dirpath for m in mounted) or dirpath in mounted

    for dirpath, dirnames, filenames in os.walk(world.state, topdown=False):
        if skip_mounts(dirpath):
            continue
        for name in filenames:
            try:
                os.unlink(os.path.join(dirpath, name))
            except OSError:
                pass
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
    world.still_served()
    # runc's state went with it, so the shim cannot signal the container
    # (containerd's shim neither): a clean error, the process untouched
    try:
        world.tasks.Kill(tasks_pb2.KillRequest(container_id="orphan", signal=signal.SIGKILL), metadata=world.md, timeout=TIMEOUT)
    except grpc.RpcError as err:
        world.assert_clean(err)
    assert alive(pid)
    # the operator's way out: kill the pid `ctr tasks ls` shows; then the API finishes the job
    os.kill(pid, signal.SIGKILL)
    waited = world.tasks.Wait(tasks_pb2.WaitRequest(container_id="orphan"), metadata=world.md, timeout=TIMEOUT)
    assert waited.exit_status == 128 + signal.SIGKILL
    world.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id="orphan"), metadata=world.md, timeout=TIMEOUT)
    assert world.tasks.List(tasks_pb2.ListTasksRequest(), metadata=world.md, timeout=TIMEOUT).tasks == []
    world.containers.Delete(containers_pb2.DeleteContainerRequest(id="orphan"), metadata=world.md, timeout=TIMEOUT)
    world.still_served()
    assert not world.nothing_left()


def test_a_stale_bundle_left_by_a_crash_is_cleaned_at_start(world):
    """A bundle with no shim behind it (a crash between mkdir and start) is
    removed when the daemon starts, and the id can be used again."""
    world.container("stale")
    world._stop_keeping_dir()
    os.makedirs(os.path.join(world.bundles, "stale", "rootfs"))
    with open(os.path.join(world.bundles, "stale", "config.json"), "w") as f:
        f.write("{}")
    os.makedirs(os.path.join(world.dir, "root", "io.containerd.runtime.v2.task", world.ns, "stale"))
    restarted = InProcessDaemon(config={"root": os.path.join(world.dir, "root"), "state": world.state,
                                        "grpc": {"address": os.path.join(world.dir, "pcd.sock")}})
    world.extra_dirs.append(restarted.dir)  # only its config file: root and state are the first daemon's
    world.daemon = restarted.start()
    world.channel.close()
    world.connect(os.path.join(world.dir, "pcd.sock"))
    assert not os.path.exists(os.path.join(world.bundles, "stale"))
    world.create_task("stale")
    world.kill_and_delete("stale")
    assert not world.nothing_left()
