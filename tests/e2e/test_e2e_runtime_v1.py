"""Runtime v1 (`io.containerd.runtime.v1.linux`) end to end: pycontainerd
as a subprocess, the real ctr and pyctr, Debian's real `containerd-shim`
(shim v1) and runc, the busybox-static image.

- `ctr run --rm --runtime io.containerd.runtime.v1.linux` prints the
  output, exits with the container's code, and a loop of them leaves
  nothing on the host (mounts, shims, bundles, sockets, cgroups);
- a detached v1 task goes through the tasks command set: ls, ps, exec,
  pause/resume, metrics, kill, rm; with pyctr too;
- the shim's events (exits, sent by running `pycontainerd publish`) and
  the daemon's (create, start, exec-started, delete) reach `ctr events`;
- the daemon SIGKILLed with a running and an exited v1 task comes back
  knowing both (the exited one with its exit status), and both are
  killable, waitable and deletable; a shim SIGKILLed while no daemon ran
  is cleaned up at the restart, and so is a shim whose daemon died before
  its Create;
- a shim SIGKILLed under a running daemon gives /tasks/exit 137 and a
  task that is gone;
- a missing shim binary is named in the error, a command that does not
  exist gets runc's error, and neither leaves anything; `no_shim` is
  refused; `shim_debug` brings the shim's output to the daemon's log;
- the shim is started as containerd starts it (command line, cwd, its
  socket as fd 3, environment, OOM score);
- `--runtime io.containerd.runc.v1` (the v2 API's runc v1 shim) runs too.

Container ids start with `v1-` and are unique per run (runc's cgroups are
host-wide); shims are found by the daemon's address on their command line
and killed by pid if a test fails."""

from __future__ import annotations

import glob
import json
import os
import select
import shutil
import signal
import subprocess
import time
import uuid

import pytest

import container_support as cs
from container_support import ctr_rows as _rows, ctr_tasks as _tasks, tasks_stub as _tasks_stub, wait_task_status as _wait_status
from busybox_image import NAME, write_busybox_layout
from e2e_support import CTR, PYCTR, DaemonFactory, clean_env, plugin_rows

pytestmark = pytest.mark.e2e

V1 = "io.containerd.runtime.v1.linux"
PLUGIN_DIR = V1
SHIM = "/usr/bin/containerd-shim"
DEADLINE = 30.0  # how long a state change the kernel decides may take to be reported
NS = (("containerd-namespace", "default"),)


def _need_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("running containers needs root")
    for path in (CTR, SHIM, "/bin/busybox"):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is not installed")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")


def bundle_dirs(d, cid: str, namespace: str = "default") -> list[str]:
    """The v1 task's bundle (state) and work dir (root), still there."""
    paths = (os.path.join(d.state, PLUGIN_DIR, namespace, cid), os.path.join(d.root, PLUGIN_DIR, namespace, cid))
    return [p for p in paths if os.path.lexists(p)]


def shim_socket(d, cid: str, namespace: str = "default") -> str:
    """Where the v1 shim of `cid` listens: containerd's /run/containerd/s/<sha256>."""
    import hashlib

    key = os.path.normpath(os.path.join(d.address, namespace, cid))
    return "/run/containerd/s/" + hashlib.sha256(key.encode()).hexdigest()


def shim_pid(d, cid: str, namespace: str = "default") -> int:
    with open(os.path.join(d.state, PLUGIN_DIR, namespace, cid, "shim.pid")) as f:
        return int(f.read())


class World:
    """One test's daemon (replaced on a restart: same root, state and
    socket), the ids it used and the shims that ran before it."""

    def __init__(self, factory: DaemonFactory, config: dict | None = None):
        self.factory = factory
        self.config = config or {}
        self.ids: list[str] = []
        self.d = factory(config=self.config)
        rows = plugin_rows(self.d.ctr("plugins", "ls").stdout)
        if ("io.containerd.runtime.v1", "linux", "ok") not in {(r[0], r[1], r[3]) for r in rows}:
            pytest.skip(f"the plugin {V1} is not loaded ok in this daemon")
        self.shims_before = cs.shim_pids(self.d.address)
        self.d.ctr("images", "import", write_busybox_layout(os.path.join(self.d.dir, "busybox.tar")))

    def id(self, prefix: str) -> str:
        cid = f"v1-{prefix}-{uuid.uuid4().hex[:8]}"
        self.ids.append(cid)
        return cid

    def restart(self) -> None:
        old = self.d
        assert not old.running
        self.d = self.factory(config={**self.config, "root": old.root, "state": old.state,
                                      "grpc": {"address": old.address}})

    def residue(self) -> dict:
        """What the ids left: containers, tasks, mounts, shims, FIFOs,
        cgroups, v2 bundles and runc's state: container_support's list)
        and v1 bundles and shim sockets."""
        left = cs.residue(self.d, self.ids, self.shims_before)
        bundles = [b for cid in self.ids for b in bundle_dirs(self.d, cid)]
        sockets = [s for cid in self.ids if os.path.exists(s := shim_socket(self.d, cid))]
        return {**left, **({"v1 bundles": bundles} if bundles else {}), **({"sockets": sockets} if sockets else {})}

    def settled_residue(self) -> dict:
        """residue(), waited for while only unreferenced snapshots remain
        (a client's lease ends with its command; the collector follows)."""
        deadline = time.monotonic() + DEADLINE
        while (left := self.residue()) and set(left) == {"snapshots"} and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def close(self) -> None:
        if not self.d.running:
            return
        for cid in self.ids:
            self.d.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False, timeout=30)
        for cid in self.ids:
            self.d.ctr("tasks", "rm", "-f", cid, check=False, timeout=30)
            self.d.ctr("containers", "rm", cid, check=False, timeout=30)
        for pid in cs.shim_pids(self.d.address) - set(self.shims_before):
            os.kill(pid, signal.SIGKILL)
        for cid in self.ids:
            cs.run(["runc", "--root", os.path.join(self.d.state, "runc", "default"), "delete", "--force", cid])
        for point in reversed(cs.mounts_under(self.d.root, self.d.state)):
            cs.run(["umount", "-l", point])


@pytest.fixture
def world(daemon):
    _need_root_and_tools()
    w = World(daemon)
    try:
        yield w
    finally:
        w.close()


class Events:
    """`ctr events` running, its lines collected."""

    def __init__(self, d):
        from e2e_support import PROBE_TOPIC, publish_probe

        self.proc = subprocess.Popen([CTR, "--address", d.address, "events"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=clean_env())
        self.out = b""
        deadline = time.monotonic() + DEADLINE
        while PROBE_TOPIC.encode() not in self.out:  # subscribed once a probe arrives
            assert time.monotonic() < deadline, "ctr events never printed a probe"
            publish_probe(d.address)
            self._read(0.1)

    def _read(self, timeout: float) -> None:
        if select.select([self.proc.stdout], [], [], timeout)[0]:
            self.out += os.read(self.proc.stdout.fileno(), 65536)

    def events(self) -> list[tuple[str, dict]]:
        out = []
        for line in self.out.decode().splitlines():
            parts = line.split(" ", 6)
            if len(parts) == 7 and parts[5].startswith("/tasks/"):
                out.append((parts[5], json.loads(parts[6])))
        return out

    def wait_for(self, topic: str, cid: str, process_id: str | None = None) -> dict:
        """The first `topic` event of `cid` (for /tasks/exit: of process
        `process_id`, the init process by default)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            for got, event in self.events():
                if got == topic and event.get("container_id") == cid and event.get("id", cid) == (process_id or cid):
                    return event
            assert time.monotonic() < deadline, f"no {topic} of {cid} in:\n{self.out.decode()}"
            self._read(0.2)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


# -- run --rm ---------------------------------------------------------------------------------


def test_ctr_run_rm_with_runtime_v1_prints_and_exits_with_the_containers_code(world):
    d = world.d
    cid = world.id("rm")
    out = d.ctr("run", "--runtime", V1, "--rm", NAME, cid, "/bin/sh", "-c", "echo hello from v1; exit 3",
                check=False, stdin=subprocess.DEVNULL, timeout=60)
    assert (out.returncode, out.stdout) == (3, b"hello from v1\n"), out.stderr
    assert world.settled_residue() == {}


def test_a_loop_of_run_rm_with_runtime_v1_leaves_nothing(world):
    d = world.d
    for i in range(10):
        cid = world.id(f"loop{i}")
        out = d.ctr("run", "--runtime", V1, "--rm", NAME, cid, "/bin/true", check=False,
                    stdin=subprocess.DEVNULL, timeout=60)
        assert (out.returncode, out.stdout) == (0, b""), (i, out.stderr)
    assert world.settled_residue() == {}
    assert cs.shim_pids(d.address) == set(world.shims_before)


# -- the tasks command set ------------------------------------------------------------------------


def test_a_detached_v1_task_through_ls_ps_exec_pause_resume_metrics_kill_rm(world):
    d = world.d
    cid = world.id("tasks")
    d.ctr("run", "-d", "--runtime", V1, NAME, cid, "/bin/sleep", "300")
    pid, status = _tasks(d)[cid]
    assert status == "RUNNING" and pid > 0
    info = d.ctr("containers", "info", cid).stdout
    assert json.loads(info)["Runtime"]["Name"] == V1
    # the shim runs as containerd starts it: containerd's command line, in
    # the bundle, its socket as fd 3, GOMAXPROCS=2, an OOM score one above ours
    shim = shim_pid(d, cid)
    bundle = os.path.join(d.state, PLUGIN_DIR, "default", cid)
    with open(f"/proc/{shim}/cmdline", "rb") as f:
        argv = f.read().decode().split("\0")[:-1]
    assert argv == [SHIM, "-namespace", "default", "-workdir", os.path.join(d.root, PLUGIN_DIR, "default", cid),
                    "-address", d.address, "-containerd-binary", os.path.join(os.path.dirname(PYCTR), "pycontainerd"),
                    "-runtime-root", os.path.join(d.state, "runc")]
    assert os.readlink(f"/proc/{shim}/cwd") == bundle
    assert os.readlink(f"/proc/{shim}/fd/3").startswith("socket:")
    with open(f"/proc/{shim}/environ", "rb") as f:
        assert b"GOMAXPROCS=2" in f.read().split(b"\0")
    with open(f"/proc/{d.pid}/oom_score_adj") as mine, open(f"/proc/{shim}/oom_score_adj") as theirs:
        assert int(theirs.read()) == min(int(mine.read()) + 1, 1000)
    with open(os.path.join(bundle, "address")) as f:
        assert f.read() == "unix://" + shim_socket(d, cid)
    assert sorted(os.listdir(bundle)) == ["address", "config.json", "init.pid", "log.json", "rootfs", "shim.pid"]

    out = d.ctr("tasks", "exec", "--exec-id", "e1", cid, "/bin/sh", "-c", "echo in exec; exit 5", check=False)
    assert (out.returncode, out.stdout) == (5, b"in exec\n"), out.stderr
    ps = _rows(d.ctr("tasks", "ps", cid).stdout)
    # the v1 shim describes each process with containerd.linux.runc.ProcessDetails, which ctr prints
    assert ps == [[str(pid), f"&ProcessDetails{{ExecID:{cid},XXX_unrecognized:[],}}"]]

    d.ctr("tasks", "pause", cid)
    assert _tasks(d)[cid] == (pid, "PAUSED")
    for state in glob.glob(f"/sys/fs/cgroup/freezer/default/{cid}/freezer.state"):  # cgroup v1 hosts
        with open(state) as f:
            assert f.read().strip() == "FROZEN"
    d.ctr("tasks", "resume", cid)
    assert _tasks(d)[cid] == (pid, "RUNNING")

    metrics = d.ctr("tasks", "metrics", cid).stdout.decode()
    assert "memory.usage_in_bytes" in metrics and "pids.current" in metrics

    d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
    _wait_status(d, cid, "STOPPED")
    channel, stub, pb = _tasks_stub(d)
    with channel:
        process = stub.Get(pb.GetRequest(container_id=cid), metadata=NS, timeout=DEADLINE).process
        assert (process.pid, process.exit_status) == (pid, 137)
        assert stub.Wait(pb.WaitRequest(container_id=cid), metadata=NS, timeout=DEADLINE).exit_status == 137
    d.ctr("tasks", "rm", cid)
    assert cid not in _tasks(d)
    assert not cs._alive(shim), "the shim outlived its task"
    d.ctr("containers", "rm", cid)
    assert world.settled_residue() == {}


def test_pyctr_runs_and_manages_a_v1_task(world):
    d = world.d
    cid = world.id("pyctr")
    out = d.pyctr("run", "--runtime", V1, "--rm", NAME, world.id("pyrm"), "/bin/sh", "-c", "echo via pyctr; exit 4",
                  check=False, stdin=subprocess.DEVNULL, timeout=60)
    assert (out.returncode, out.stdout) == (4, b"via pyctr\n"), out.stderr
    d.pyctr("run", "-d", "--runtime", V1, NAME, cid, "/bin/sleep", "300")
    rows = {r[0]: r for r in _rows(d.pyctr("tasks", "ls").stdout)}
    assert rows[cid][2] == "RUNNING"
    pid = int(rows[cid][1])
    out = d.pyctr("tasks", "exec", "--exec-id", "p1", cid, "/bin/echo", "pyctr exec", check=False)
    assert (out.returncode, out.stdout) == (0, b"pyctr exec\n"), out.stderr
    assert _rows(d.pyctr("tasks", "ps", cid).stdout) == [[str(pid), f"&ProcessDetails{{ExecID:{cid},XXX_unrecognized:[],}}"]]
    d.pyctr("tasks", "pause", cid)
    assert _tasks(d)[cid][1] == "PAUSED"
    d.pyctr("tasks", "resume", cid)
    assert "memory.usage_in_bytes" in d.pyctr("tasks", "metrics", cid).stdout.decode()
    d.pyctr("tasks", "kill", "-s", "SIGKILL", cid)
    _wait_status(d, cid, "STOPPED")
    d.pyctr("tasks", "rm", cid)
    d.pyctr("containers", "rm", cid)
    assert world.settled_residue() == {}


# -- events ---------------------------------------------------------------------------------------


def test_the_shims_and_the_daemons_events_reach_ctr_events(world):
    d = world.d
    cid = world.id("events")
    events = Events(d)
    try:
        d.ctr("run", "-d", "--runtime", V1, NAME, cid, "/bin/sleep", "300")
        pid = _tasks(d)[cid][0]
        d.ctr("tasks", "exec", "--exec-id", "e1", cid, "/bin/sh", "-c", "exit 6", check=False)
        d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
        _wait_status(d, cid, "STOPPED")
        d.ctr("tasks", "rm", cid)
        create = events.wait_for("/tasks/create", cid)
        assert create["pid"] == pid and create["bundle"] == os.path.join(d.state, PLUGIN_DIR, "default", cid)
        assert events.wait_for("/tasks/start", cid)["pid"] == pid
        assert events.wait_for("/tasks/exec-started", cid)["exec_id"] == "e1"
        # exits come from the shim, through `pycontainerd publish`
        assert events.wait_for("/tasks/exit", cid, "e1")["exit_status"] == 6
        exit_ = events.wait_for("/tasks/exit", cid)
        assert (exit_["pid"], exit_["exit_status"]) == (pid, 137)
        delete = events.wait_for("/tasks/delete", cid)
        assert (delete["pid"], delete["exit_status"]) == (pid, 137)
    finally:
        events.close()
    d.ctr("containers", "rm", cid)
    assert world.settled_residue() == {}


# -- restarts and dead shims -------------------------------------------------------------------------


def test_daemon_sigkill_then_restart_finds_running_and_exited_v1_tasks(world):
    d = world.d
    running, exited, dies = world.id("live"), world.id("exit7"), world.id("dies")
    d.ctr("run", "-d", "--null-io", "--runtime", V1, NAME, running, "/bin/sleep", "300")
    d.ctr("run", "-d", "--null-io", "--runtime", V1, NAME, exited, "/bin/sh", "-c", "exit 7")
    d.ctr("run", "-d", "--null-io", "--runtime", V1, NAME, dies, "/bin/sleep", "300")
    _wait_status(d, exited, "STOPPED")
    before = _tasks(d)
    shims = {cid: shim_pid(d, cid) for cid in (running, exited, dies)}

    d.kill()  # SIGKILL, by pid
    assert all(cs._alive(pid) for pid in shims.values()), "a shim died with the daemon"
    os.kill(shims[dies], signal.SIGKILL)  # its shim dies while no daemon runs
    deadline = time.monotonic() + DEADLINE
    while cs._alive(shims[dies]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    world.restart()
    d = world.d

    after = _tasks(d)
    assert after[running] == (before[running][0], "RUNNING")
    assert after[exited] == (before[exited][0], "STOPPED")
    # the dead shim's task was cleaned up at the restart: its container killed, its bundle gone
    assert dies not in after and not cs._alive(before[dies][0])
    assert bundle_dirs(d, dies) == [] and not os.path.exists(shim_socket(d, dies))
    d.ctr("containers", "rm", dies)

    out = d.ctr("tasks", "exec", "--exec-id", "again", running, "/bin/echo", "still here", check=False)
    assert (out.returncode, out.stdout) == (0, b"still here\n"), out.stderr
    channel, stub, pb = _tasks_stub(d)
    with channel:
        process = stub.Get(pb.GetRequest(container_id=exited), metadata=NS, timeout=DEADLINE).process
        assert (process.pid, process.exit_status) == (before[exited][0], 7)
        assert stub.Wait(pb.WaitRequest(container_id=exited), metadata=NS, timeout=DEADLINE).exit_status == 7
        wait = stub.Wait.future(pb.WaitRequest(container_id=running), metadata=NS, timeout=DEADLINE)
        events = Events(d)  # the reconnected shims' events reach the new daemon
        try:
            d.ctr("tasks", "kill", "-s", "SIGKILL", running)
            assert wait.result().exit_status == 137
            assert events.wait_for("/tasks/exit", running)["exit_status"] == 137
        finally:
            events.close()
    for cid in (running, exited):
        d.ctr("tasks", "rm", cid)
        d.ctr("containers", "rm", cid)
    for pid in shims.values():
        assert not cs._alive(pid), f"shim {pid} outlived its task"
    assert world.settled_residue() == {}


def test_a_shim_sigkilled_under_the_daemon_gives_exit_137_and_its_task_goes(world):
    d = world.d
    cid = world.id("victim")
    d.ctr("run", "-d", "--null-io", "--runtime", V1, NAME, cid, "/bin/sleep", "300")
    pid = _tasks(d)[cid][0]
    events = Events(d)
    try:
        os.kill(shim_pid(d, cid), signal.SIGKILL)
        exit_ = events.wait_for("/tasks/exit", cid)
        assert (exit_["pid"], exit_["exit_status"]) == (pid, 137)
        assert events.wait_for("/tasks/delete", cid)["exit_status"] == 137
    finally:
        events.close()
    assert cid not in _tasks(d)
    deadline = time.monotonic() + DEADLINE
    while cs._alive(pid):  # runc delete --force took the container with it
        assert time.monotonic() < deadline, "the container outlived its dead shim"
        time.sleep(0.05)
    d.ctr("containers", "rm", cid)
    assert world.settled_residue() == {}


def test_restart_cleans_up_a_shim_started_before_its_task_was_created(daemon):
    """A daemon SIGKILLed between starting a shim and its Create leaves a
    bundle and a shim that serves no task. Made here as that daemon would
    have (the bundle, the shim on its socket, `address` and `shim.pid`),
    with no daemon running: the next daemon kills the shim and removes the
    bundle, and lists no task."""
    _need_root_and_tools()
    from pycontainerd.plugins.runtimes.v1 import shim as shimmod
    from pycontainerd.plugins.runtimes.v1.bundle import Bundle

    w = World(daemon)
    try:
        d = w.d
        root, state, address = d.root, d.state, d.address
        d.stop()
        cid = w.id("leaked")
        bundle = Bundle.create(os.path.join(root, PLUGIN_DIR), os.path.join(state, PLUGIN_DIR), "default", cid, b"{}")
        sock = shimmod.listen(bundle.shim_address(address))
        args = shimmod.shim_args(bundle, address, os.path.join(state, "runc"), "", False, False)
        child = shimmod.spawn(SHIM, args, bundle, sock, subprocess.DEVNULL, subprocess.DEVNULL)
        sock.close()
        bundle.write("address", bundle.shim_address(address))
        bundle.write("shim.pid", str(child.pid))
        try:
            w.restart()
            child.wait(DEADLINE)  # killed by the new daemon (and reaped here: it is this test's child)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert cid not in _tasks(w.d)
        assert bundle_dirs(w.d, cid) == [] and not os.path.exists(shim_socket(w.d, cid))
    finally:
        w.close()


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shim, message", [
    ("containerd-shim-v1-missing",
     'failed to start shim: exec: "containerd-shim-v1-missing": executable file not found in $PATH'),
    ("/nonexistent/containerd-shim", "failed to start shim: fork/exec /nonexistent/containerd-shim: "
                                     "no such file or directory"),
])
def test_a_missing_shim_binary_is_named_and_nothing_is_left(daemon, shim, message):
    _need_root_and_tools()
    w = World(daemon, config={"plugins": {V1: {"shim": shim}}})
    try:
        cid = w.id("noshim")
        out = w.d.ctr("run", "--runtime", V1, "--rm", NAME, cid, "/bin/true", check=False,
                      stdin=subprocess.DEVNULL)
        assert out.returncode != 0
        assert f"ctr: {message}: unknown".encode() in out.stderr, out.stderr
        w.d.ctr("containers", "rm", cid, check=False)  # ctr leaves the container when the task fails
        assert w.settled_residue() == {}
    finally:
        w.close()


def test_a_command_that_does_not_exist_gets_runcs_error_and_leaves_nothing(world):
    cid = world.id("badcmd")
    out = world.d.ctr("run", "--runtime", V1, "--rm", NAME, cid, "/nonexistent", check=False,
                      stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert b'exec: "/nonexistent": stat /nonexistent: no such file or directory' in out.stderr, out.stderr
    world.d.ctr("containers", "rm", cid, check=False)
    assert world.settled_residue() == {}


def test_shim_debug_passes_debug_and_the_shims_output_reaches_our_log(daemon):
    _need_root_and_tools()
    w = World(daemon, config={"plugins": {V1: {"shim_debug": True}}})
    try:
        cid = w.id("debug")
        w.d.ctr("run", "-d", "--null-io", "--runtime", V1, NAME, cid, "/bin/sleep", "300")
        with open(f"/proc/{shim_pid(w.d, cid)}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[-2] == b"-debug"
        deadline = time.monotonic() + DEADLINE
        while "registering ttrpc server" not in w.d.log():  # the shim's first debug line, through its FIFO
            assert time.monotonic() < deadline, w.d.log()
            time.sleep(0.1)
        w.d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
        _wait_status(w.d, cid, "STOPPED")
        w.d.ctr("tasks", "rm", cid)
        w.d.ctr("containers", "rm", cid)
        assert w.settled_residue() == {}
    finally:
        w.close()


def test_no_shim_is_refused_with_its_reason(daemon):
    _need_root_and_tools()
    d = daemon(config={"plugins": {V1: {"no_shim": True}}})
    rows = {(r[0], r[1]): r[3] for r in plugin_rows(d.ctr("plugins", "ls").stdout)}
    assert rows[("io.containerd.runtime.v1", "linux")] == "error"
    assert "no_shim" in d.log()


# -- the v2 API's runc v1 shim ----------------------------------------------------------------------


def test_ctr_run_rm_with_the_runc_v1_shim(world):
    if not os.access("/usr/bin/containerd-shim-runc-v1", os.X_OK):
        pytest.skip("containerd-shim-runc-v1 is not installed")
    d = world.d
    cid = world.id("runcv1")
    out = d.ctr("run", "--runtime", "io.containerd.runc.v1", "--rm", NAME, cid, "/bin/sh", "-c",
                "echo runc v1; exit 2", check=False, stdin=subprocess.DEVNULL, timeout=60)
    assert (out.returncode, out.stdout) == (2, b"runc v1\n"), out.stderr
    detached = world.id("runcv1d")
    d.ctr("run", "-d", "--runtime", "io.containerd.runc.v1", NAME, detached, "/bin/sleep", "300")
    assert _tasks(d)[detached][1] == "RUNNING"
    assert glob.glob(os.path.join(d.state, "io.containerd.runtime.v2.task", "default", detached))
    d.ctr("tasks", "kill", "-s", "SIGKILL", detached)
    _wait_status(d, detached, "STOPPED")
    d.ctr("tasks", "rm", detached)
    d.ctr("containers", "rm", detached)
    left = world.settled_residue()
    assert left == {}, left
