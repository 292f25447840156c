"""Issue 10's fault proof, end to end: the daemon SIGKILLed at 20 random
points of a scripted workload, and what an operator checks after each.

The workload is what a machine's daemon sees, done by the real ctr and
pyctr (and, for a blob written under an expiring lease, the gRPC API)
against one real pycontainerd, with Debian's docker-registry on
127.0.0.1, the real containerd-shim-runc-v2 and runc. Each round: pull
the image, write a blob under a lease that expires in a second, `run -d`
a container, exec in it, kill it, delete its task and the container,
ingest a blob and `content rm` it (a deletion: the collector runs and
takes the expired lease's blob too), remove the image (the collector takes
its content and snapshots). A first round, uncut, times each step; then
three rounds are 30 steps, of which the seed picks 20 and, for each, how
far into it the daemon is SIGKILLed (a fraction of the time that step
last took whole: some points fall inside a command, some just after it).
A container started before the first crash (the keeper) runs through all
of them.

After each kill, as an operator would:
- `pycontainerd fsck` on the dead daemon's root reports clean (garbage
  the collector takes is listed but is no finding), or findings that
  `fsck --repair` repairs, and then a second fsck is clean;
- the daemon restarts on the same root, state and socket; images,
  content, ingests, snapshots, leases and containers are listed; the
  keeper's task is RUNNING with the same pid; every task is RUNNING (its process
  alive), STOPPED (with its exit status recorded) or CREATED;
- the interrupted step is done again and succeeds (what the crash left
  is removed with the ordinary commands first, which must work), and the
  workload goes on.
At the end the keeper is killed, waited for (137) and deleted, and
nothing of the test's containers is left on the host.

The seed is printed and can be given in $PCD_CRASH_SEED to replay a
failure's crash points (the kill lands on the same step, after the same
delay). Ids carry the prefix `ld-`; everything is stopped by pid.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import threading
import time
import uuid

import grpc
import pytest

import container_support as cs
from busybox_image import write_busybox_layout
from e2e_support import CTR, PYCONTAINERD, PYCTR, clean_env, plugin_rows
from pycontainerd.api.services.content.v1 import content_pb2 as cpb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as cpb_grpc
from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from pycontainerd.client.remotes import Options, Registry
from pycontainerd.pkg.oci.descriptor import Descriptor

from registry_support import REGISTRY, RegistryProcess

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not os.access(REGISTRY, os.X_OK), reason="docker-registry is not installed")]

SEED_ENV = "PCD_CRASH_SEED"
CRASHES = 20
ROUNDS = 3
DEADLINE = 30.0  # for a state change the kernel or a shim reports
NS = (("containerd-namespace", "default"),)


class Crashed(Exception):
    """The daemon was killed under this step: nothing more is sent."""


def _need_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("running containers needs root")
    for path in (CTR, "/usr/bin/containerd-shim-runc-v2", "/bin/busybox"):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is not installed")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")


def _push_busybox(registry: RegistryProcess, ref: str, directory: str) -> None:
    """The busybox-static image into the registry, from its OCI layout tar."""
    members = {}
    with tarfile.open(write_busybox_layout(os.path.join(directory, "busybox.tar"))) as t:
        for m in t.getmembers():
            if m.isfile():
                members[m.name] = t.extractfile(m).read()
    entry = json.loads(members["index.json"])["manifests"][0]
    manifest = members["blobs/sha256/" + entry["digest"][7:]]
    parsed = json.loads(manifest)
    with Registry(Options(plain_http=True)) as client:
        for d in (parsed["config"], *parsed["layers"]):
            data = members["blobs/sha256/" + d["digest"][7:]]
            client.push_blob(ref, Descriptor(d["mediaType"], d["digest"], d["size"]), lambda data=data: io.BytesIO(data))
        client.push_manifest(ref, Descriptor(entry["mediaType"], entry["digest"], entry["size"]), manifest)


def _rows(out: bytes) -> list[list[str]]:
    return [line.split() for line in out.decode().splitlines()[1:] if line.strip()]


class Workload:
    """The daemon (replaced at each restart, same root, state and socket),
    the steps of the script and what the test has made."""

    def __init__(self, factory, registry: RegistryProcess):
        self.factory = factory
        self.tag = uuid.uuid4().hex[:6]
        self.d = factory()
        rows = plugin_rows(self.d.ctr("plugins", "ls").stdout)
        if ("io.containerd.runtime.v2", "task", "ok") not in {(r[0], r[1], r[3]) for r in rows}:
            pytest.skip("the plugin io.containerd.runtime.v2.task is not loaded ok in this daemon")
        self.ref = f"{registry.host}/ld/busybox:{self.tag}"
        _push_busybox(registry, self.ref, self.d.dir)
        self.fifo_dir = os.path.join(self.d.dir, "fifo")
        self.ids: list[str] = []
        self.shims_before = cs.shim_pids(self.d.address)
        self.crashed = False
        self.inflight: subprocess.Popen | None = None
        self.attempt = 0
        self.report: list[str] = []

    # -- talking to the daemon ------------------------------------------------------------

    def cmd(self, tool: str, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        if self.crashed:
            raise Crashed()
        argv = [tool, "--address", self.d.address, *args]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
        self.inflight = p
        try:
            out, err = p.communicate(input, timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            self.inflight = None
        if self.crashed:
            raise Crashed()
        r = subprocess.CompletedProcess(argv, p.returncode, out, err)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv[3:])} exited {r.returncode}: {err.decode(errors='replace')}")
        return r

    def ctr(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.cmd(CTR, *args, **kwargs)

    def tasks(self) -> dict[str, tuple[int, str]]:
        return {r[0]: (int(r[1]), r[2]) for r in _rows(self.ctr("tasks", "ls").stdout)}

    def containers(self) -> list[str]:
        return self.ctr("containers", "ls", "-q").stdout.decode().split()

    def tasks_stub(self) -> tuple[grpc.Channel, tasks_pb2_grpc.TasksStub]:
        channel = grpc.insecure_channel("unix:" + self.d.address)
        return channel, tasks_pb2_grpc.TasksStub(channel)

    def exit_status(self, cid: str) -> int:
        channel, stub = self.tasks_stub()
        with channel:
            return stub.Get(tasks_pb2.GetRequest(container_id=cid), metadata=NS, timeout=DEADLINE).process.exit_status

    def wait_stopped(self, cid: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while self.tasks().get(cid, (0, ""))[1] != "STOPPED":
            assert time.monotonic() < deadline, f"{cid} never STOPPED"
            time.sleep(0.1)

    # -- the script ---------------------------------------------------------------------------

    def cid(self, rnd: int) -> str:
        return f"ld-cr-{self.tag}-{rnd}"

    def pull(self, rnd: int) -> None:
        tool = PYCTR if rnd % 2 == 0 else CTR
        self.cmd(tool, "images", "pull", "--plain-http", self.ref)

    def leased_blob(self, rnd: int) -> None:
        """A blob written under a lease that expires in a second: garbage
        for the collector's next pass after that."""
        self.attempt += 1
        lease = f"ld-lease-{self.tag}-{rnd}-{self.attempt}"
        self.ctr("leases", "create", "--id", lease, "--expires", "1s")
        data = f"held for a second: {lease}\n".encode() * 64
        dgst = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.crashed:
            raise Crashed()
        with grpc.insecure_channel("unix:" + self.d.address) as channel:
            list(cpb_grpc.ContentStub(channel).Write(iter([cpb.WriteContentRequest(
                action=cpb.COMMIT, ref=lease, data=data, total=len(data), expected=dgst)]),
                metadata=NS + (("containerd-lease", lease),), timeout=DEADLINE))

    def run(self, rnd: int) -> None:
        cid = self.cid(rnd)
        if cid not in self.ids:
            self.ids.append(cid)
        status = self.tasks().get(cid, (0, ""))[1]
        if status == "RUNNING":  # the interrupted run had got that far
            return
        if status:  # created, never started: removed with the ordinary commands
            self.ctr("tasks", "rm", "-f", cid)
        if cid in self.containers():  # (and its snapshot with it)
            self.ctr("containers", "rm", cid)
        elif cid in [row[0] for row in _rows(self.ctr("snapshots", "ls").stdout)]:
            # prepared, and the container never made: ctr's lease (24 hours,
            # as containerd's client makes it) holds the snapshot, so a new
            # run with this id says it exists, as with containerd
            self.ctr("snapshots", "rm", cid)
        self.ctr("run", "-d", "--null-io", self.ref, cid, "/bin/sleep", "600")

    def exec(self, rnd: int) -> None:
        self.attempt += 1
        r = self.ctr("tasks", "exec", "--fifo-dir", self.fifo_dir, "--exec-id", f"x{self.attempt}", self.cid(rnd),
                     "/bin/sh", "-c", "exit 3", check=False)
        assert r.returncode == 3, r.stderr.decode()

    def kill(self, rnd: int) -> None:
        cid = self.cid(rnd)
        if self.tasks()[cid][1] == "RUNNING":
            self.ctr("tasks", "kill", "-s", "SIGKILL", cid)
        self.wait_stopped(cid)
        assert self.exit_status(cid) == 137

    def delete_task(self, rnd: int) -> None:
        if self.cid(rnd) in self.tasks():
            self.ctr("tasks", "rm", self.cid(rnd))

    def delete_container(self, rnd: int) -> None:
        if self.cid(rnd) in self.containers():
            self.ctr("containers", "rm", self.cid(rnd))

    def ingest(self, rnd: int) -> None:
        data = f"ingested in round {rnd} of {self.tag}\n".encode() * 64
        # a ref of its own each time: an ingest the kill cut after some
        # bytes is resumable, and ctr, reading a pipe, cannot seek to
        # resume it ("unable to resume write"), with containerd too
        self.attempt += 1
        self.ctr("content", "ingest", "--expected-digest", "sha256:" + hashlib.sha256(data).hexdigest(),
                 f"ld-ingest-{rnd}-{self.attempt}", input=data)

    def content_rm(self, rnd: int) -> None:
        dgst = "sha256:" + hashlib.sha256(f"ingested in round {rnd} of {self.tag}\n".encode() * 64).hexdigest()
        if dgst in self.ctr("content", "ls", "-q").stdout.decode().split():
            self.ctr("content", "rm", dgst)

    def image_rm(self, rnd: int) -> None:
        if self.ref in self.ctr("images", "ls", "-q").stdout.decode().split():
            self.ctr("images", "rm", *(["--sync"] if rnd % 2 else []), self.ref)

    STEPS = ("pull", "leased_blob", "run", "exec", "kill", "delete_task", "delete_container", "ingest",
             "content_rm", "image_rm")

    # -- a crash, and what the operator checks after it ------------------------------------------

    def crash_during(self, step, delay: float) -> str:
        """Run `step` in a thread and SIGKILL the daemon `delay` seconds
        after it began; returns how the step ended."""
        box: dict[str, object] = {}

        def body() -> None:
            try:
                step()
                box["end"] = "finished before the kill"
            except Crashed:
                box["end"] = "cut by the kill"
            except (AssertionError, grpc.RpcError, subprocess.TimeoutExpired) as exc:
                box["end"] = f"failed with the kill: {str(exc).splitlines()[0][:120]}"

        self.crashed = False
        t = threading.Thread(target=body)
        t.start()
        time.sleep(delay)
        self.crashed = True
        self.d.kill()  # SIGKILL, by pid
        t.join(DEADLINE)
        if t.is_alive() and self.inflight is not None:  # a client still dialling the dead socket
            self.inflight.kill()
            t.join(DEADLINE)
        assert not t.is_alive(), "the step never returned after the kill"
        self.crashed = False
        return str(box.get("end"))

    def fsck(self, *args: str) -> tuple[int, str, str]:
        p = subprocess.run([PYCONTAINERD, "fsck", "--config", self.d.config_path, *args], capture_output=True,
                           env=clean_env(), timeout=120)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def check_root(self) -> str:
        """fsck clean, or repaired and then clean; returns what it found."""
        rc, out, err = self.fsck()
        findings = [line.split("\t") for line in out.splitlines() if line and "\tleft for GC: " not in line]
        assert rc in (0, 1), f"fsck exited {rc}:\n{out}{err}"
        if rc == 0:
            assert findings == [], out
            garbage = len(out.splitlines())
            return f"clean ({garbage} left for GC)" if garbage else "clean"
        rc, out, err = self.fsck("--repair")
        assert rc == 1, f"fsck --repair exited {rc}:\n{out}{err}"
        results = [line.split("\t")[4] for line in out.splitlines() if "\tleft for GC: " not in line]
        assert all(r.startswith(("repaired: ", "quarantined: ")) for r in results), out
        rc, out2, err2 = self.fsck()
        assert rc == 0, f"fsck after --repair exited {rc}:\n{out2}{err2}"
        return "repaired " + ", ".join(sorted(f[0] for f in findings))

    def restart(self) -> None:
        old = self.d
        assert not old.running
        self.d = self.factory(config={"root": old.root, "state": old.state, "grpc": {"address": old.address}})

    def check_daemon(self, keeper: str, keeper_pid: int) -> None:
        """What an operator lists after a restart answers, and the tasks
        are as the shims say."""
        for listing in (("images", "ls"), ("content", "ls"), ("content", "active"), ("snapshots", "ls"),
                        ("leases", "ls"), ("containers", "ls")):
            self.ctr(*listing)
        tasks = self.tasks()
        assert tasks.get(keeper) == (keeper_pid, "RUNNING"), tasks
        for cid, (pid, status) in tasks.items():
            assert status in ("RUNNING", "STOPPED", "CREATED"), (cid, status)
            if status == "RUNNING":
                assert cs._alive(pid), f"{cid} RUNNING but its pid {pid} is gone"
            if status == "STOPPED":
                self.exit_status(cid)  # recorded: Get answers

    def close(self) -> None:
        if self.inflight is not None and self.inflight.poll() is None:
            self.inflight.kill()
        if self.d.running:
            cs.force_cleanup(self.d, self.ids, self.shims_before)
        else:
            for pid in cs.shim_pids(self.d.address) - self.shims_before:
                os.kill(pid, 9)


@pytest.fixture(scope="module")
def registry():
    reg = RegistryProcess()
    yield reg
    reg.stop()


@pytest.fixture
def workload(daemon, registry):
    _need_root_and_tools()
    w = Workload(daemon, registry)
    try:
        yield w
    finally:
        w.close()


def test_the_daemon_killed_at_twenty_random_points_recovers_every_time(workload):
    w = workload
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1 << 32))
    print(f"\ncrash points: {SEED_ENV}={seed}")
    rng = random.Random(seed)
    script = [(rnd, name) for rnd in range(1, ROUNDS + 1) for name in Workload.STEPS]
    # 20 of the 30 steps, and for each how far into it (a fraction of the
    # time the same step took when it last ran whole) the kill lands
    points = {i: rng.uniform(0, 1.0) for i in sorted(rng.sample(range(len(script)), CRASHES))}
    took: dict[str, float] = {}

    def timed(rnd: int, name: str) -> None:
        start = time.monotonic()
        getattr(w, name)(rnd)
        took[name] = time.monotonic() - start

    for name in Workload.STEPS:  # round 0, uncut: how long each step takes on this machine now
        timed(0, name)
    w.pull(0)
    keeper = "ld-keeper-" + w.tag
    w.ids.append(keeper)
    w.ctr("run", "-d", "--null-io", w.ref, keeper, "/bin/sleep", "600")
    keeper_pid = w.tasks()[keeper][0]

    for i, (rnd, name) in enumerate(script):
        if i not in points:
            timed(rnd, name)
            continue
        delay = points[i] * took[name]
        where = f"crash {sorted(points).index(i) + 1}/{CRASHES} [{SEED_ENV}={seed}]: round {rnd} {name} " \
                f"at {points[i]:.0%} (+{delay * 1000:.0f}ms)"
        try:
            ended = w.crash_during(lambda: getattr(w, name)(rnd), delay)
            found = w.check_root()
            w.restart()
            w.check_daemon(keeper, keeper_pid)
            timed(rnd, name)  # again, on what the crash left
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}\n--- daemon log ---\n{w.d.log()[-3000:]}") from None
        w.report.append(f"{where}: step {ended}; fsck {found}")
    print("\n".join(w.report))

    # the keeper survived every kill, and is still managed: kill, wait, delete
    channel, stub = w.tasks_stub()
    with channel:
        waiting = stub.Wait.future(tasks_pb2.WaitRequest(container_id=keeper), metadata=NS, timeout=DEADLINE)
        w.ctr("tasks", "kill", "-s", "SIGKILL", keeper)
        assert waiting.result().exit_status == 137
    w.ctr("tasks", "rm", keeper)
    w.ctr("containers", "rm", keeper)
    assert w.ctr("containers", "ls", "-q").stdout == b"" and w.ctr("tasks", "ls", "-q").stdout == b""
    deadline = time.monotonic() + DEADLINE
    while (left := cs.residue(w.d, w.ids, w.shims_before)) and set(left) == {"snapshots"} \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == {}
    assert w.d.stop() == 0
    rc, out, err = w.fsck()
    assert rc == 0, out + err
