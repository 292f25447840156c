"""Issue 9's reliability section, end to end: pycontainerd as a subprocess,
the real ctr and pyctr, the real containerd-shim-runc-v2 and runc, the
busybox-static image.

- 100 `ctr run --rm` in a row leave nothing on the host;
- the daemon SIGKILLed with tasks running (and one exited) comes back
  knowing every one of them; SIGKILLed while shims start, it comes back
  and cleans up the shims that never got their task;
- a SIGKILLed shim means an exit event and a task that is cleaned up, also
  under an attached `run --rm`;
- bad input gets containerd's own message (a real containerd answers the
  same commands beside it) and leaves nothing;
- what reaches runc is the client's spec, untouched; a read-only bind
  mount stays read-only; bundles, FIFO directories and sockets are as
  closed as containerd makes them.

Each test uses container ids of its own (runc's cgroups are global), finds
shims by the daemon's address on their command line, and removes what a
failure left by pid and by path."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import stat
import subprocess
import time
import uuid

import pytest

import container_support as cs
from container_support import ctr_rows as _rows, ctr_tasks as _tasks, tasks_stub as _tasks_stub, wait_task_status as _wait_status
from busybox_image import NAME, write_busybox_layout
from e2e_support import (CONTAINERD, CTR, PYCONTAINERD, PYCTR, DaemonFactory, clean_env, plugin_rows, short_dir,
                         start_containerd)

pytestmark = pytest.mark.e2e

DEADLINE = 30.0  # how long a state change the kernel decides may take to be reported
NS = (("containerd-namespace", "default"),)


def _need_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("running containers needs root")
    for path in (CTR, "/usr/bin/containerd-shim-runc-v2", "/bin/busybox"):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is not installed")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")


def _runtime_ok(d) -> bool:
    rows = plugin_rows(d.ctr("plugins", "ls").stdout)
    return ("io.containerd.runtime.v2", "task", "ok") in {(r[0], r[1], r[3]) for r in rows}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class World:
    """One test's daemon (replaced on a restart: same root, state and
    socket), the ids it used and the shims that ran before it."""

    def __init__(self, factory: DaemonFactory):
        self.factory = factory
        self.ids: list[str] = []
        self.shims_before: set[int] = set()
        self.d = factory()
        if not _runtime_ok(self.d):
            pytest.skip("the plugin io.containerd.runtime.v2.task is not loaded ok in this daemon")
        self.shims_before = cs.shim_pids(self.d.address)
        self.d.ctr("images", "import", write_busybox_layout(os.path.join(self.d.dir, "busybox.tar")))

    def id(self, prefix: str) -> str:
        cid = _unique(prefix)
        self.ids.append(cid)
        return cid

    def restart(self) -> None:
        """A new daemon on the killed one's root, state and socket."""
        old = self.d
        assert not old.running
        self.d = self.factory(config={"root": old.root, "state": old.state, "grpc": {"address": old.address}})
        # the factory's directory of the old daemon (root and state) stays
        # until the end of the test: the factory removes every one at close

    def residue(self, ids: list[str] | None = None, fifo_root: str = "/run/containerd/fifo") -> dict:
        return cs.residue(self.d, self.ids if ids is None else ids, self.shims_before, fifo_root)

    def settled_residue(self, ids: list[str] | None = None, **kwargs) -> dict:
        """residue(), waited for while only unreferenced snapshots remain
        (a client's lease ends with its command; the collector follows)."""
        deadline = time.monotonic() + DEADLINE
        while (left := self.residue(ids, **kwargs)) and set(left) == {"snapshots"} and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def close(self) -> None:
        if self.d.running:
            cs.force_cleanup(self.d, self.ids, self.shims_before)


@pytest.fixture
def world(daemon):
    _need_root_and_tools()
    w = World(daemon)
    try:
        yield w
    finally:
        w.close()


# -- 1. run --rm, a hundred times --------------------------------------------------------


def test_a_hundred_ctr_run_rm_leave_nothing_behind(world):
    d = world.d
    for i in range(100):
        cid = world.id(f"rm{i}")
        out = d.ctr("run", "--rm", NAME, cid, "/bin/true", check=False, stdin=subprocess.DEVNULL, timeout=60)
        assert (out.returncode, out.stdout, out.stderr) == (0, b"", b""), (i, out.stderr)
    assert world.residue() == {}
    assert d.ctr("containers", "ls", "-q").stdout == b""
    assert d.ctr("tasks", "ls", "-q").stdout == b""


# -- 2. the daemon SIGKILLed under running tasks --------------------------------------------


def test_daemon_sigkill_then_restart_knows_every_task(world):
    d = world.d
    running = [world.id(f"live{i}") for i in range(5)]
    for cid in running:
        d.ctr("run", "-d", "--null-io", NAME, cid, "/bin/sleep", "300")
    exited = world.id("exit7")
    d.ctr("run", "-d", "--null-io", NAME, exited, "/bin/sh", "-c", "exit 7")
    _wait_status(d, exited, "STOPPED")
    # one more that will die while no daemon runs, and one whose shim will
    dies, orphan = world.id("dies"), world.id("orphan")
    for cid in (dies, orphan):
        d.ctr("run", "-d", "--null-io", NAME, cid, "/bin/sleep", "300")
    # an exec'd process outlives the daemon too (its FIFOs in this test's directory)
    d.ctr("tasks", "exec", "-d", "--fifo-dir", os.path.join(d.dir, "fifo"), "--exec-id", "x1", running[0],
          "/bin/sleep", "300")
    before = _tasks(d)
    shims = {cid: cs.shim_pid_of(d.address, cid) for cid in [*running, exited, dies]}
    orphan_shim = cs.shim_pid_of(d.address, orphan)

    d.kill()  # SIGKILL, by pid
    assert all(cs._alive(pid) for pid in [*shims.values(), orphan_shim]), "a shim died with the daemon"
    os.kill(before[dies][0], signal.SIGKILL)
    os.kill(orphan_shim, signal.SIGKILL)
    world.restart()
    d = world.d

    after = _tasks(d)
    # the orphan's shim was found dead: cleaned up (container killed,
    # bundle and mounts gone), its container left for the user to remove
    assert orphan not in after and not cs._alive(before[orphan][0])
    assert cs.bundle_dirs(d.root, d.state, orphan) == []
    d.ctr("containers", "rm", orphan)
    assert {cid: after[cid] for cid in running} == {cid: (before[cid][0], "RUNNING") for cid in running}
    assert after[exited] == (before[exited][0], "STOPPED")
    assert len(_rows(d.ctr("tasks", "ps", running[0]).stdout)) == 2  # init and the exec
    _wait_status(d, dies, "STOPPED")
    channel, stub, pb = _tasks_stub(d)
    with channel:
        for cid, status in ((exited, 7), (dies, 137)):
            process = stub.Get(pb.GetRequest(container_id=cid), metadata=NS, timeout=DEADLINE).process
            assert (process.exit_status, process.pid) == (status, before[cid][0])
            assert stub.Wait(pb.WaitRequest(container_id=cid), metadata=NS, timeout=DEADLINE).exit_status == status
        waits = {cid: stub.Wait.future(pb.WaitRequest(container_id=cid), metadata=NS, timeout=DEADLINE)
                 for cid in running}
        events = Events(d)  # the shims' events reach the new daemon
        try:
            for cid in running:
                d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
            assert {cid: w.result().exit_status for cid, w in waits.items()} == {cid: 137 for cid in running}
            exits = {cid: events.wait_for("/tasks/exit", cid) for cid in running}
        finally:
            events.close()
        assert {cid: (e["pid"], e["exit_status"]) for cid, e in exits.items()} == \
            {cid: (before[cid][0], 137) for cid in running}
    for cid in [*running, exited, dies]:
        d.ctr("tasks", "rm", cid)
        d.ctr("containers", "rm", cid)
    for pid in shims.values():
        deadline = time.monotonic() + DEADLINE
        while cs._alive(pid):
            assert time.monotonic() < deadline, f"shim {pid} outlived its task"
            time.sleep(0.05)
    assert world.residue() == {}


def test_restart_cleans_up_a_shim_left_before_its_task_was_created(world):
    """A daemon that dies between starting a shim and its Create leaves a
    shim serving no task, blocked opening the bundle's log FIFO for
    writing. Made here as that daemon would have (bundle, log FIFO, the
    shim's own `start` action), with no daemon running: the next daemon
    lets the shim serve (it holds the log FIFO open before calling it),
    finds it has no task, and shuts it down and removes its bundle."""
    d = world.d
    d.stop()
    cid = world.id("leaked")
    bundle = os.path.join(d.state, cs.RUNTIME_DIR, "default", cid)
    work = os.path.join(d.root, cs.RUNTIME_DIR, "default", cid)
    for path in (os.path.dirname(bundle), os.path.dirname(work)):
        os.makedirs(path, 0o711, exist_ok=True)
    os.mkdir(bundle, 0o700)
    os.mkdir(os.path.join(bundle, "rootfs"), 0o711)
    os.mkdir(work, 0o711)
    os.symlink(work, os.path.join(bundle, "work"))
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["/bin/true"], "cwd": "/"},
                   "linux": {"cgroupsPath": f"/default/{cid}"}}, f)
    shim = "/usr/bin/containerd-shim-runc-v2"
    with open(os.path.join(bundle, "shim-binary-path"), "w") as f:
        f.write(shim)
    os.mkfifo(os.path.join(bundle, "log"), 0o700)
    started = subprocess.run([shim, "-namespace", "default", "-address", d.address, "-publish-binary",
                              PYCONTAINERD, "-id", cid, "start"], cwd=bundle, capture_output=True, timeout=DEADLINE,
                             env=clean_env({"TTRPC_ADDRESS": d.address + ".ttrpc"}), stdin=subprocess.DEVNULL)
    assert started.returncode == 0, started.stderr
    shim_socket = started.stdout.decode().strip().removeprefix("unix://")
    pid = cs.shim_pid_of(d.address, cid)

    world.restart()
    deadline = time.monotonic() + DEADLINE
    while cs._alive(pid):
        assert time.monotonic() < deadline, "the leaked shim still runs"
        time.sleep(0.05)
    assert cid not in _tasks(world.d)
    assert not os.path.exists(shim_socket)
    assert world.residue() == {}


def test_daemon_sigkill_as_shims_start_leaves_nothing_once_cleaned_up(world):
    """The daemon SIGKILLed as soon as the first of a burst of `run --rm`
    has its shim: whatever each run had reached (a snapshot, a container,
    a shim with no task yet, a task), the next daemon and ctr clean it
    all up."""
    d = world.d
    ids = [world.id(f"burst{i}") for i in range(8)]
    clients = [subprocess.Popen([CTR, "--address", d.address, "run", "--rm", "--null-io", NAME, cid,
                                 "/bin/sleep", "300"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=clean_env()) for cid in ids]
    try:
        deadline = time.monotonic() + DEADLINE
        while not cs.shim_pids(d.address) - world.shims_before:
            assert time.monotonic() < deadline, "no shim started"
        d.kill()
        for client in clients:
            client.wait(DEADLINE)
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    world.restart()
    d = world.d
    for cid in d.ctr("containers", "ls", "-q").stdout.decode().split():
        d.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        d.ctr("tasks", "rm", "-f", cid, check=False)
        d.ctr("containers", "rm", cid)
    # snapshots ctr prepared under its leases stay with them (containerd's
    # rule): the killed clients could not end their leases, so we do
    leases = [line.split()[0] for line in d.ctr("leases", "ls").stdout.decode().splitlines()[1:] if line.strip()]
    if leases:
        d.ctr("leases", "rm", *leases)
    assert world.settled_residue() == {}


# -- 3. a shim SIGKILLed --------------------------------------------------------------------


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

    def wait_for(self, topic: str, cid: str) -> dict:
        deadline = time.monotonic() + DEADLINE
        while True:
            for line in self.out.decode().splitlines():
                parts = line.split(" ", 6)
                if len(parts) == 7 and parts[5] == topic:
                    event = json.loads(parts[6])
                    # the init process's: an exec's exit has its own id
                    if event.get("container_id") == cid and event.get("id", cid) == cid:
                        return event
            assert time.monotonic() < deadline, f"no {topic} of {cid} in:\n{self.out.decode()}"
            self._read(0.2)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def test_shim_sigkill_gives_an_exit_event_and_rm_cleans_up(world):
    d = world.d
    cid = world.id("victim")
    events = Events(d)
    try:
        d.ctr("run", "-d", "--null-io", NAME, cid, "/bin/sleep", "300")
        pid = _tasks(d)[cid][0]
        os.kill(cs.shim_pid_of(d.address, cid), signal.SIGKILL)
        exit_ = events.wait_for("/tasks/exit", cid)
        deleted = events.wait_for("/tasks/delete", cid)
    finally:
        events.close()
    # the shim's cleanup action took the container down with SIGKILL
    assert (exit_["id"], exit_["pid"], exit_["exit_status"]) == (cid, pid, 137)
    assert (deleted["pid"], deleted["exit_status"]) == (pid, 137)
    assert not cs._alive(pid)
    # as in containerd 1.6, the dead shim's task left the runtime's list
    # with those events: it is no longer there to be stopped or deleted
    assert cid not in _tasks(d)
    out = d.ctr("tasks", "rm", cid, check=False)
    assert out.returncode == 1
    assert out.stderr.endswith(f"ctr: no running task found: task {cid} not found: not found\n".encode())
    d.ctr("containers", "rm", cid)
    assert world.residue() == {}


@pytest.mark.parametrize("tool", ["ctr", "pyctr"])
def test_shim_sigkill_under_an_attached_run_rm(world, tool):
    """The client waiting on the task learns it is gone and fails; --rm
    still removes the container. pyctr also removes its FIFO directory
    (ctr leaves its own behind on this path, against containerd too)."""
    d = world.d
    cid = world.id(f"attached-{tool}")
    fifo_root = os.path.join(d.dir, "fifo-" + tool)
    argv = [CTR if tool == "ctr" else PYCTR, "--address", d.address, "run", "--rm", "--fifo-dir", fifo_root,
            NAME, cid, "/bin/sleep", "300"]
    client = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=clean_env())
    try:
        _wait_status(d, cid, "RUNNING")
        os.kill(cs.shim_pid_of(d.address, cid), signal.SIGKILL)
        out, err = client.communicate(timeout=DEADLINE)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 1 and out == b""
    # which error the client sees depends on whether the daemon had already
    # cleaned up the dead shim's task (not found) or was still waiting on it
    # when its ttrpc connection dropped (closed): both end the same way below
    assert err in (f"{tool}: task {cid} not found: not found\n".encode(),
                   f"{tool}: ttrpc: closed: unavailable\n".encode()), err
    if tool == "pyctr":
        assert os.listdir(fifo_root) == []
    assert world.residue(fifo_root=fifo_root if tool == "pyctr" else "/run/containerd/fifo") == {}


# -- 4. bad input ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    """pycontainerd and a real containerd, both holding the image, for
    commands whose messages must be the same."""
    _need_root_and_tools()
    if not os.access(CONTAINERD, os.X_OK):
        pytest.skip(f"{CONTAINERD} is not installed")
    factory = DaemonFactory()
    containerd = None
    try:
        w = World(factory)
        containerd = start_containerd()
        containerd.ctr("images", "import", write_busybox_layout(os.path.join(containerd.dir, "busybox.tar")))
        yield w, containerd
        w.close()
        for cid in w.ids:
            containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
            containerd.ctr("tasks", "rm", "-f", cid, check=False)
            containerd.ctr("containers", "rm", cid, check=False)
    finally:
        if containerd is not None:
            containerd.stop()
            shutil.rmtree(containerd.dir, ignore_errors=True)
        factory.close()


def both(pair, *args: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The same ctr command against pycontainerd, then containerd."""
    w, containerd = pair
    return (w.d.ctr(*args, check=False, stdin=subprocess.DEVNULL),
            containerd.ctr(*args, check=False, stdin=subprocess.DEVNULL))


def same_error(pair, *args: str) -> str:
    """Run `args` with ctr on both daemons, then with pyctr on pycontainerd:
    all three fail with the same message (pyctr's named `pyctr:`); that
    message."""
    ours, theirs = both(pair, *args)
    assert ours.returncode == theirs.returncode == 1, (ours, theirs)
    assert ours.stdout == theirs.stdout == b""
    assert ours.stderr == theirs.stderr
    py = pair[0].d.pyctr(*args, check=False, stdin=subprocess.DEVNULL)
    assert (py.returncode, py.stdout, py.stderr) == (1, b"", b"py" + ours.stderr)
    return ours.stderr.decode()


def test_unknown_image(pair):
    w, _ = pair
    cid = w.id("noimg")
    assert same_error(pair, "run", "--rm", "docker.io/library/nope:1", cid, "/bin/true") == \
        'ctr: image "docker.io/library/nope:1": not found\n'
    assert w.settled_residue([cid]) == {}


def test_unknown_runtime_names_the_missing_shim_binary(pair):
    w, _ = pair
    cid = w.id("noshim")
    assert same_error(pair, "run", "--rm", "--runtime", "io.containerd.nosuch.v2", NAME, cid, "/bin/true") == (
        'ctr: failed to start shim: failed to resolve runtime path: runtime "io.containerd.nosuch.v2" binary '
        'not installed "containerd-shim-nosuch-v2": file does not exist: unknown\n')
    assert w.settled_residue([cid]) == {}


def test_a_command_missing_from_the_image_surfaces_runcs_message(pair):
    w, _ = pair
    cid = w.id("nocmd")
    assert same_error(pair, "run", "--rm", NAME, cid, "/bin/not-there") == (
        'ctr: failed to create shim task: OCI runtime create failed: runc create failed: unable to start '
        'container process: exec: "/bin/not-there": stat /bin/not-there: no such file or directory: unknown\n')
    assert w.settled_residue([cid]) == {}


def test_a_mount_source_that_does_not_exist(pair):
    w, _ = pair
    cid = w.id("nosrc")
    missing = "/nonexistent-" + uuid.uuid4().hex
    assert same_error(pair, "run", "--rm", "--mount", f"type=bind,src={missing},dst=/h,options=rbind:ro",
                      NAME, cid, "/bin/true") == (
        'ctr: failed to create shim task: OCI runtime create failed: runc create failed: unable to start '
        f'container process: error during container init: error mounting "{missing}" to rootfs at "/h": '
        f'stat {missing}: no such file or directory: unknown\n')
    assert w.settled_residue([cid]) == {}


def test_a_container_id_that_is_not_an_identifier(pair):
    w, _ = pair
    cid = _unique("bad") + "/id"
    assert same_error(pair, "run", "--rm", NAME, cid, "/bin/true") == (
        f'ctr: create container failed validation: container.ID: identifier "{cid}" must match '
        '^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument\n')
    # ctr prepared the snapshot under its lease before the refusal: the
    # lease ends with ctr, and the collector takes the snapshot
    assert w.settled_residue([cid]) == {}


def test_duplicates_and_a_stopped_tasks_kill(pair):
    w, containerd = pair
    cid = w.id("dup")
    for d in (w.d, containerd):
        d.ctr("run", "-d", "--null-io", NAME, cid, "/bin/sleep", "300")
    # a second container with the id: ctr's snapshot of that name is refused first
    assert same_error(pair, "run", "-d", NAME, cid, "/bin/true") == f'ctr: snapshot "{cid}": already exists\n'
    # with another snapshotter the snapshot is made, and the container refused
    assert same_error(pair, "containers", "create", "--snapshotter", "native", NAME, cid, "/bin/true") == \
        f'ctr: container "{cid}": already exists\n'
    # an exec id in use
    for d in (w.d, containerd):
        # a detached exec's FIFOs stay with ctr: in a directory of this test's
        d.ctr("tasks", "exec", "-d", "--fifo-dir", os.path.join(d.dir, "fifo"), "--exec-id", "e1", cid,
              "/bin/sleep", "300")
    assert same_error(pair, "tasks", "exec", "--exec-id", "e1", cid, "/bin/true") == "ctr: id e1: already exists\n"
    # a task that has stopped cannot be killed
    for d in (w.d, containerd):
        d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
        _wait_status(d, cid, "STOPPED")
    for sig in ("SIGTERM", "SIGKILL"):
        assert same_error(pair, "tasks", "kill", "-s", sig, cid) == "ctr: process already finished: not found\n"
    ours, theirs = both(pair, "tasks", "rm", cid)
    assert ours.returncode == theirs.returncode == 0
    ours, theirs = both(pair, "containers", "rm", cid)
    assert ours.returncode == theirs.returncode == 0
    assert w.settled_residue([cid]) == {}
    # the refused container's native snapshot went with ctr's lease
    deadline = time.monotonic() + DEADLINE
    while cid in w.d.ctr("snapshots", "--snapshotter", "native", "ls").stdout.decode().split():
        assert time.monotonic() < deadline, "the refused container's native snapshot stayed"
        time.sleep(0.2)


# -- 5. security --------------------------------------------------------------------------


def _spec_of(d, cid: str) -> bytes:
    from pycontainerd.client.client import Client
    from pycontainerd.client.containers import Containers

    with Client(d.address) as client:
        return Containers(client).get(cid).spec.value


def test_the_clients_spec_reaches_runc_untouched(world):
    d = world.d
    cid = world.id("spec")
    d.ctr("run", "-d", "--null-io", NAME, cid, "/bin/sh", "-c",
          "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; wc -c < /proc/kcore; "
          "touch /proc/sys/kernel/x 2>&1; sleep 300")
    _wait_status(d, cid, "RUNNING")
    bundle = os.path.join(d.state, cs.RUNTIME_DIR, "default", cid)
    with open(os.path.join(bundle, "config.json"), "rb") as f:
        config = f.read()
    assert config == _spec_of(d, cid)  # the bytes ctr sent
    info = json.loads(d.ctr("containers", "info", cid).stdout)
    assert info["Spec"] == json.loads(config)
    spec = json.loads(config)
    # containerd's defaults, as ctr built them
    assert spec["process"]["noNewPrivileges"] is True
    assert "/proc/kcore" in spec["linux"]["maskedPaths"] and "/proc/sys" in spec["linux"]["readonlyPaths"]
    assert spec["linux"]["cgroupsPath"] == f"/default/{cid}"
    assert "CAP_SYS_ADMIN" not in spec["process"]["capabilities"]["bounding"]
    d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
    _wait_status(d, cid, "STOPPED")
    d.ctr("tasks", "rm", cid)
    d.ctr("containers", "rm", cid)
    assert world.residue() == {}


def test_a_read_only_mount_cannot_be_written(world):
    d = world.d
    cid = world.id("romount")
    host = short_dir("pcd-ro-")
    try:
        with open(os.path.join(host, "file"), "w") as f:
            f.write("kept\n")
        script = ("echo x > /host/file; touch /host/new; mkdir /host/dir; mount -o remount,rw /host; "
                  "echo y > /host/file; cat /host/file")
        out = d.ctr("run", "--rm", "--mount", f"type=bind,src={host},dst=/host,options=rbind:ro", NAME, cid,
                    "/bin/sh", "-c", script, check=False, stdin=subprocess.DEVNULL)
        assert out.stdout == b"kept\n"
        assert out.stderr.count(b"Read-only file system") == 4, out.stderr
        assert b"mount: permission denied" in out.stderr, out.stderr
        assert sorted(os.listdir(host)) == ["file"]
        with open(os.path.join(host, "file")) as f:
            assert f.read() == "kept\n"
    finally:
        shutil.rmtree(host)
    assert world.residue() == {}


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_bundles_fifos_and_sockets_are_closed_to_other_users(world):
    """containerd's modes (runtime/v2/bundle.go, cio's NewFIFOSetInDir,
    the shim's NewSocket, sys.GetLocalListener)."""
    d = world.d
    cid = world.id("modes")
    fifo_root = os.path.join(d.dir, "fifo")
    d.pyctr("run", "-d", "--fifo-dir", fifo_root, NAME, cid, "/bin/sleep", "300", stdin=subprocess.DEVNULL)
    _wait_status(d, cid, "RUNNING")
    state = os.path.join(d.state, cs.RUNTIME_DIR)
    root = os.path.join(d.root, cs.RUNTIME_DIR)
    bundle = os.path.join(state, "default", cid)
    modes = {
        "state/<ns>": _mode(os.path.join(state, "default")),
        "bundle": _mode(bundle),
        "root/<ns>": _mode(os.path.join(root, "default")),
        "work": _mode(os.path.join(root, "default", cid)),
    }
    # (bundle/rootfs shows the container's root directory while mounted)
    assert modes == {"state/<ns>": 0o711, "bundle": 0o700, "root/<ns>": 0o711,
                     "work": 0o711}
    (fifo_dir,) = os.listdir(fifo_root)
    fifo_dir = os.path.join(fifo_root, fifo_dir)
    assert _mode(fifo_root) == 0o700 and _mode(fifo_dir) == 0o700
    for name in os.listdir(fifo_dir):
        path = os.path.join(fifo_dir, name)
        assert stat.S_ISFIFO(os.lstat(path).st_mode) and _mode(path) & 0o077 == 0, (name, oct(_mode(path)))
    with open(os.path.join(bundle, "address")) as f:
        shim_socket = f.read().strip().removeprefix("unix://")
    assert stat.S_ISSOCK(os.lstat(shim_socket).st_mode) and _mode(shim_socket) == 0o600
    for sock in (d.address, d.address + ".ttrpc"):
        assert stat.S_ISSOCK(os.lstat(sock).st_mode) and _mode(sock) == 0o660, sock
    d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
    _wait_status(d, cid, "STOPPED")
    d.ctr("tasks", "rm", cid)
    d.ctr("containers", "rm", cid)
    assert not os.path.exists(shim_socket)
    shutil.rmtree(fifo_root)  # a detached run's FIFOs stay with ctr and pyctr alike
    assert world.residue() == {}
