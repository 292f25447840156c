"""io.containerd.runtime.v2.task with the real containerd-shim-runc-v2 and
the real runc, inside a running (in-process) pycontainerd: busybox
containers created, started, waited for, paused, exec'd into, killed and
deleted through the runtime plugin's own object, with the shims' events
arriving over the daemon's ttrpc socket and read back over gRPC.

Every test uses its own namespace, records the shim pids it saw and, at the
end, checks nothing is left (shim processes, bundles, mounts) and kills
by pid whatever a failure left behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest
from google.protobuf import any_pb2

from pycontainerd.pkg import errdefs
from pycontainerd.pkg.mount import Mount
from pycontainerd.pkg.runtime import IO, CreateOpts, ExecOpts, Status
from pycontainerd.testing.daemon import InProcessDaemon, short_tempdir

SHIM = shutil.which("containerd-shim-runc-v2")
BUSYBOX = "/bin/busybox"
SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(SHIM is None or shutil.which("runc") is None or not os.path.exists(BUSYBOX) or os.geteuid() != 0,
                       reason="needs root, runc, containerd-shim-runc-v2 and busybox-static"),
]


def process_json(args: list[str]) -> dict:
    return {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": args,
            "env": ["PATH=/bin"], "cwd": "/", "noNewPrivileges": True}


def cgroup_of(namespace: str, task_id: str) -> str:
    return f"/pcd-rt-test-{namespace}-{task_id}"


def spec_any(namespace: str, task_id: str, args: list[str]) -> any_pb2.Any:
    """A minimal OCI runtime spec: busybox as root, own pid/ipc/uts/mount
    namespaces, /proc and /dev, a cgroup of its own."""
    spec = {
        "ociVersion": "1.0.2",
        "process": process_json(args),
        "root": {"path": "rootfs"},
        "hostname": task_id,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "cgroupsPath": cgroup_of(namespace, task_id),
        },
    }
    return any_pb2.Any(type_url=SPEC_URL, value=json.dumps(spec).encode())


def busybox_rootfs(where: str) -> str:
    rootfs = os.path.join(where, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    for d in ("proc", "dev", "tmp", "etc"):
        os.mkdir(os.path.join(rootfs, d))
    shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
    for applet in ("sh", "true", "sleep", "echo", "cat"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    return rootfs


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Env:
    """One test's world: its own root/state/socket (kept across daemon
    restarts), namespace, rootfs, and the daemon running now."""

    def __init__(self) -> None:
        self.dir = short_tempdir("pcd-rt-")
        self.namespace = "rt-" + uuid.uuid4().hex[:10]
        self.rootfs = busybox_rootfs(self.dir)
        self.shim_pids: set[int] = set()
        self.shim_sockets: set[str] = set()
        self.task_ids: set[str] = set()
        self.daemon: InProcessDaemon | None = None

    @property
    def address(self) -> str:
        return os.path.join(self.dir, "pcd.sock")

    @property
    def state(self) -> str:
        return os.path.join(self.dir, "state", "io.containerd.runtime.v2.task")

    @property
    def runc_root(self) -> str:
        """Where the shim keeps runc's state, per namespace: this daemon's own."""
        return os.path.join(self.dir, "state", "runc")

    def start(self, **config) -> InProcessDaemon:
        self.daemon = InProcessDaemon(config={
            **config,
            "root": os.path.join(self.dir, "root"),
            "state": os.path.join(self.dir, "state"),
            "grpc": {"address": self.address},
        }).start()
        return self.daemon

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    @property
    def runtime(self):
        return self.daemon.daemon.plugins.get("io.containerd.runtime.v2", "task")

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.daemon._loop).result(timeout)

    def create(self, task_id: str, args: list[str], stdout: str = "", runtime: str = "io.containerd.runc.v2"):
        self.task_ids.add(task_id)
        opts = CreateOpts(spec=spec_any(self.namespace, task_id, args), runtime=runtime,
                          rootfs=[Mount(type="bind", source=self.rootfs, options=["rbind", "rw"])],
                          io=IO(stdout=stdout, stderr=stdout))  # the shim's file:// copier wants both
        task = self.run(self.runtime.create(self.namespace, task_id, opts))
        self.shim_pids.add(self.run(task.connect()).shim_pid)
        with open(os.path.join(self.state, self.namespace, task_id, "address")) as f:
            self.shim_sockets.add(f.read().removeprefix("unix://"))
        return task

    def subscribe(self, topic: str) -> tuple[list, threading.Event]:
        """Envelopes on `topic` in our namespace, read over gRPC."""
        from e2e_support import PROBE_FILTER, PROBE_TOPIC, until_subscribed

        from pycontainerd.client.client import Client

        client = Client(address=self.address, namespace=self.namespace)
        stream = client.subscribe(f'topic=="{topic}",namespace=="{self.namespace}"', PROBE_FILTER)
        got: list = []
        probed, first = threading.Event(), threading.Event()

        def collect():
            try:
                for env in stream:
                    if env.topic == PROBE_TOPIC:
                        probed.set()
                    else:
                        got.append(env)
                        first.set()
            except Exception:
                pass

        threading.Thread(target=collect, daemon=True).start()
        until_subscribed(self.address, probed.is_set)
        self._streams = getattr(self, "_streams", []) + [(stream, client)]
        return got, first

    def cleanup(self) -> list[str]:
        """Stop the daemon, kill by pid what is left, report what was."""
        problems = []
        for stream, client in getattr(self, "_streams", []):
            client.close()  # ends the stream its reader thread is iterating
        self.stop()
        for pid in self.shim_pids:
            if alive(pid):
                problems.append(f"shim {pid} still running")
                os.kill(pid, signal.SIGKILL)
        for task_id in self.task_ids:
            subprocess.run(["runc", "--root", os.path.join(self.runc_root, self.namespace), "delete", "--force", task_id],
                           capture_output=True)
        shutil.rmtree(os.path.join(self.runc_root, self.namespace), ignore_errors=True)
        import glob

        for task_id in self.task_ids:
            for cg in glob.glob("/sys/fs/cgroup/*" + cgroup_of(self.namespace, task_id)):
                with open(os.path.join(cg, "cgroup.procs")) as f:
                    pids = [int(p) for p in f.read().split()]
                for pid in pids:
                    problems.append(f"process {pid} left in {cg}")
                    os.kill(pid, signal.SIGKILL)
                if pids:
                    time.sleep(0.2)
                try:
                    os.rmdir(cg)
                    problems.append(f"cgroup left: {cg}")
                except OSError:
                    pass
        ns_state = os.path.join(self.state, self.namespace)
        if os.path.isdir(ns_state) and os.listdir(ns_state):
            problems.append(f"bundles left: {os.listdir(ns_state)}")
        with open("/proc/self/mountinfo") as f:
            left = [line.split()[4] for line in f if self.dir in line.split()[4]]
        for target in reversed(left):
            subprocess.run(["umount", "-l", target], capture_output=True)
        if left:
            problems.append(f"mounts left: {left}")
        for address in self.shim_sockets:
            if os.path.exists(address):
                problems.append(f"shim socket left: {address}")
                os.unlink(address)
        shutil.rmtree(self.dir, ignore_errors=True)
        return problems


@pytest.fixture
def env():
    e = Env()
    e.start()
    yield e
    problems = e.cleanup()
    assert not problems, problems


def test_task_runs_to_its_exit_code(env):
    exits, seen = env.subscribe("/tasks/exit")
    out = os.path.join(env.dir, "out.txt")
    task = env.create("exit3", ["/bin/sh", "-c", "echo hello from busybox; exit 3"], stdout="file://" + out)
    bundle = os.path.join(env.state, env.namespace, "exit3")
    assert os.path.isfile(os.path.join(bundle, "config.json"))
    assert os.readlink(os.path.join(bundle, "work")) == os.path.join(env.dir, "root", "io.containerd.runtime.v2.task", env.namespace, "exit3")
    assert env.run(task.state()).status == Status.CREATED
    env.run(task.start())
    exit_ = env.run(task.wait())
    assert exit_.status == 3 and exit_.pid > 0 and exit_.exited_at > 0
    with open(out) as f:
        assert f.read() == "hello from busybox\n"
    assert seen.wait(10), "no /tasks/exit event reached a gRPC subscriber"
    from pycontainerd.api.events import task_pb2

    ev = task_pb2.TaskExit.FromString(exits[0].event.value)
    assert (ev.container_id, ev.id, ev.exit_status) == ("exit3", "exit3", 3)
    state = env.run(task.state())
    assert (state.status, state.exit_status) == (Status.STOPPED, 3)
    recorded = env.runtime.exit_of(env.namespace, "exit3")
    assert recorded is not None and recorded.status == 3
    deleted = env.run(env.runtime.delete(env.namespace, "exit3"))
    assert deleted.status == 3
    assert not os.path.exists(bundle)
    for pid in env.shim_pids:
        assert wait_gone(pid), f"shim {pid} did not exit after Delete"
    with pytest.raises(errdefs.NotFound):
        env.run(env.runtime.get(env.namespace, "exit3"))


def test_long_running_task_pause_exec_kill(env):
    task = env.create("sleeper", ["/bin/sh", "-c", "trap 'exit 143' TERM; while :; do sleep 1; done"])
    env.run(task.start())
    pid = env.run(task.pid())
    assert pid in [p.pid for p in env.run(task.pids())]
    assert [t.id for t in env.run(env.runtime.tasks(env.namespace))] == ["sleeper"]
    env.run(task.pause())
    assert env.run(task.state()).status == Status.PAUSED
    env.run(task.resume())
    assert env.run(task.state()).status == Status.RUNNING

    out = os.path.join(env.dir, "exec.txt")
    spec = any_pb2.Any(type_url=PROCESS_URL, value=json.dumps(process_json(["/bin/sh", "-c", "echo exec-out; exit 7"])).encode())
    proc = env.run(task.exec("e1", ExecOpts(spec=spec, io=IO(stdout="file://" + out, stderr="file://" + out))))
    with pytest.raises(errdefs.AlreadyExists):
        env.run(task.exec("e1", ExecOpts(spec=spec)))
    env.run(proc.start())
    assert env.run(proc.wait()).status == 7
    with open(out) as f:
        assert f.read() == "exec-out\n"
    assert env.run(env.run(task.process("e1")).delete()).status == 7
    with pytest.raises(errdefs.NotFound):
        env.run(task.process("e1"))

    env.run(task.kill(signal.SIGTERM))
    assert env.run(task.wait()).status == 143
    with pytest.raises(errdefs.NotFound):
        env.run(task.kill(signal.SIGTERM))  # runc: the process is gone
    env.run(env.runtime.delete(env.namespace, "sleeper"))
    for shim in env.shim_pids:
        assert wait_gone(shim)


def test_killed_shim_means_a_stopped_task_with_an_exit_event(env):
    exits, seen = env.subscribe("/tasks/exit")
    deletes, deleted = env.subscribe("/tasks/delete")
    task = env.create("victim", ["/bin/sleep", "300"])
    env.run(task.start())
    waiter = asyncio.run_coroutine_threadsafe(task.wait(), env.daemon._loop)
    (shim_pid,) = env.shim_pids
    os.kill(shim_pid, signal.SIGKILL)
    exit_ = waiter.result(30)
    assert exit_.status != 0
    assert seen.wait(20) and deleted.wait(20)
    with pytest.raises(errdefs.NotFound):
        env.run(env.runtime.get(env.namespace, "victim"))
    assert not os.path.exists(os.path.join(env.state, env.namespace, "victim"))
    # the shim's delete action took the container down with it
    assert subprocess.run(["runc", "--root", os.path.join(env.runc_root, env.namespace), "state", "victim"],
                          capture_output=True).returncode != 0


def test_daemon_restart_reconnects_to_running_shims(env):
    task = env.create("survivor", ["/bin/sleep", "300"])
    env.run(task.start())
    pid = env.run(task.pid())
    env.stop()  # the shim keeps running without us
    (shim_pid,) = env.shim_pids
    assert alive(shim_pid)
    env.start()
    again = env.run(env.runtime.get(env.namespace, "survivor"))
    assert again.runtime == "io.containerd.runc.v2"
    state = env.run(again.state())
    assert (state.status, state.pid) == (Status.RUNNING, pid)
    env.run(again.kill(signal.SIGKILL))
    assert env.run(again.wait()).status == 137
    env.run(env.runtime.delete(env.namespace, "survivor"))
    assert wait_gone(shim_pid)


def test_restart_cleans_up_after_a_shim_that_died_meanwhile(env):
    task = env.create("orphan", ["/bin/sleep", "300"])
    env.run(task.start())
    env.stop()
    (shim_pid,) = env.shim_pids
    os.kill(shim_pid, signal.SIGKILL)
    assert wait_gone(shim_pid)
    env.start()
    with pytest.raises(errdefs.NotFound):
        env.run(env.runtime.get(env.namespace, "orphan"))
    assert not os.path.exists(os.path.join(env.state, env.namespace, "orphan"))
    assert not os.path.exists(os.path.join(env.dir, "root", "io.containerd.runtime.v2.task", env.namespace, "orphan"))


def test_unknown_runtime_names_the_missing_binary(env):
    with pytest.raises(errdefs.ContainerdError) as exc:
        env.run(env.runtime.create(env.namespace, "nope", CreateOpts(spec=spec_any(env.namespace, "nope", ["/bin/true"]),
                                                                   runtime="io.containerd.nosuch.v2")))
    assert 'binary not installed "containerd-shim-nosuch-v2"' in str(exc.value)
    assert str(exc.value).startswith("failed to start shim: failed to resolve runtime path:")
    assert not os.path.exists(os.path.join(env.state, env.namespace, "nope"))


def test_a_command_missing_from_the_image_surfaces_runcs_error_and_leaves_nothing(env):
    opts = CreateOpts(spec=spec_any(env.namespace, "missing", ["/bin/not-there"]), runtime="io.containerd.runc.v2",
                      rootfs=[Mount(type="bind", source=env.rootfs, options=["rbind", "rw"])])
    env.task_ids.add("missing")
    with pytest.raises(errdefs.ContainerdError) as exc:
        env.run(env.runtime.create(env.namespace, "missing", opts))
    assert "failed to create shim task" in str(exc.value) and "not-there" in str(exc.value)
    assert not os.path.exists(os.path.join(env.state, env.namespace, "missing"))
    assert env.run(env.runtime.tasks(env.namespace)) == []


def test_timeouts_come_from_the_config(env):
    env.stop()
    env.start(timeouts={"io.containerd.timeout.task.state": "750ms", "io.containerd.timeout.shim.load": "1m"})
    assert env.runtime.timeouts == {"load": 60.0, "shutdown": 3.0, "cleanup": 5.0, "state": 0.75}
