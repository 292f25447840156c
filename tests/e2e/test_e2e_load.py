"""Issue 10's load proof for containers, end to end: one real
pycontainerd daemon, the real ctr and pyctr as separate client processes,
the real containerd-shim-runc-v2 and runc.

- 50 containers started at once from 10 client processes (5 of them the
  real ctr, 5 pyctr; each starts its 5 containers in parallel): every one
  runs, is killed and exits 137, and is deleted; afterwards nothing of them
  is left on the host (records, shims, mounts, cgroups, bundles) and the
  daemon's open file descriptors are back to where they were before the
  load, its resident memory within 1.5x of it.

(The other load proof, 8 pulls of one image at once with each blob
fetched once, is test_e2e_pull_faults.py's concurrent pulls test, "eight".)

Bounded: fixed counts, every wait has a deadline; ids carry this module's
prefix `ld-` and a random part (cgroups and runc state are host-wide);
everything started is stopped by pid, and a failure's leftovers are
removed by pid and by path."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import uuid

import grpc
import pytest

import container_support as cs
from busybox_image import NAME, write_busybox_layout
from e2e_support import CTR, PYCTR, clean_env, plugin_rows

pytestmark = pytest.mark.e2e

CLIENTS = 10
PER_CLIENT = 5
DEADLINE = 120.0  # for a state the whole load must reach (2 busy cores, 50 shims)
SETTLE = 30.0  # for the daemon to let go of what the load used
NS = (("containerd-namespace", "default"),)


def _need_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("running containers needs root")
    for path in (CTR, "/usr/bin/containerd-shim-runc-v2", "/bin/busybox"):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is not installed")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fds(pid: int) -> list[str]:
    """What the daemon's descriptors point at (for a failure's message)."""
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return out


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _clients(argvs: list[list[str]]) -> list[tuple[list[str], subprocess.CompletedProcess]]:
    """Run each argv list as one client process (a shell that starts its
    commands in parallel and waits for them); all clients at once."""
    procs = []
    for argv in argvs:
        # `wait` alone loses the exit codes: each command reports its own failure
        script = " ".join(f"( {shlex.join(a)} || echo 'FAILED:' {shlex.quote(shlex.join(a[3:]))} >&2 ) &"
                          for a in argv) + " wait"
        procs.append((argv, subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())))
    results = []
    for argv, p in procs:
        out, err = p.communicate(timeout=DEADLINE * 2)
        results.append((argv, subprocess.CompletedProcess(argv, p.returncode, out, err)))
    return results


def _tasks(d) -> dict[str, tuple[int, str]]:
    rows = [line.split() for line in d.ctr("tasks", "ls").stdout.decode().splitlines()[1:] if line.strip()]
    return {r[0]: (int(r[1]), r[2]) for r in rows}


def _wait_until(what: str, check, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    while not (result := check()):
        assert time.monotonic() < end, f"{what}: not reached within {deadline}s"
        time.sleep(0.2)
    return result


@pytest.fixture
def loaded(daemon):
    """A daemon with the busybox image, the ids this test uses, and a
    cleanup of whatever they left if the test fails."""
    _need_root_and_tools()
    d = daemon()
    rows = plugin_rows(d.ctr("plugins", "ls").stdout)
    if ("io.containerd.runtime.v2", "task", "ok") not in {(r[0], r[1], r[3]) for r in rows}:
        pytest.skip("the plugin io.containerd.runtime.v2.task is not loaded ok in this daemon")
    d.ctr("images", "import", write_busybox_layout(os.path.join(d.dir, "busybox.tar")))
    shims_before = cs.shim_pids(d.address)
    ids: list[str] = []
    try:
        yield d, ids, shims_before
    finally:
        if d.running:
            cs.force_cleanup(d, ids, shims_before)


def test_fifty_containers_from_ten_clients_all_run_exit_and_leave_nothing(loaded):
    d, ids, shims_before = loaded
    tag = uuid.uuid4().hex[:6]
    # one container run and removed first: what the daemon opens once and
    # keeps (its ttrpc listener's clients, the cgroup monitor's files) is
    # in the baseline, not counted as a leak
    warm = f"ld-warm-{tag}"
    ids.append(warm)
    d.ctr("run", "--rm", NAME, warm, "/bin/true", stdin=subprocess.DEVNULL, timeout=60)
    time.sleep(1.0)  # the collector's pass after the removal
    fd_start, rss_start = fd_count(d.pid), rss_bytes(d.pid)

    clients = []  # (binary, [ids])
    for c in range(CLIENTS):
        tool = CTR if c % 2 == 0 else PYCTR
        mine = [f"ld-{tag}-c{c}-{i}" for i in range(PER_CLIENT)]
        ids.extend(mine)
        clients.append((tool, mine))
    everyone = [cid for _, mine in clients for cid in mine]

    def phase(*args: str) -> None:
        argvs = [[[tool, "--address", d.address, *([a.replace("{}", cid) for a in args] if "{}" in args
                                                    else [*args, cid])] for cid in mine]
                 for tool, mine in clients]
        failed = [(argv[0][0], r.returncode, r.stderr.decode()) for argv, r in _clients(argvs)
                  if r.returncode != 0 or b"FAILED:" in r.stderr]
        assert failed == [], failed

    # 1. all 50 start at once, and run
    phase("run", "-d", "--null-io", NAME, "{}", "/bin/sleep", "600")
    running = _tasks(d)
    assert {cid: running.get(cid, (0, "absent"))[1] for cid in everyone} == {cid: "RUNNING" for cid in everyone}
    pids = {cid: running[cid][0] for cid in everyone}
    assert len(set(pids.values())) == 50 and all(cs._alive(p) for p in pids.values())
    assert len(cs.shim_pids(d.address) - shims_before) == 50

    # 2. all 50 are killed at once, and each exits 137
    phase("tasks", "kill", "-s", "SIGKILL")
    _wait_until("every task stopped", lambda: all(_tasks(d).get(cid, (0, ""))[1] == "STOPPED" for cid in everyone))
    from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc

    with grpc.insecure_channel("unix:" + d.address) as channel:
        stub = tasks_pb2_grpc.TasksStub(channel)
        statuses = {cid: stub.Get(tasks_pb2.GetRequest(container_id=cid), metadata=NS, timeout=30).process.exit_status
                    for cid in everyone}
    assert statuses == {cid: 137 for cid in everyone}
    assert not any(cs._alive(p) for p in pids.values())

    # 3. all 50 deleted at once: tasks, then containers
    phase("tasks", "rm")
    phase("containers", "rm")
    assert d.ctr("tasks", "ls", "-q").stdout == b""
    assert d.ctr("containers", "ls", "-q").stdout == b""

    # 4. and 50 more at once, each `run --rm` attached to its FIFOs: runs /bin/true, exits 0, is removed
    for tool, mine in clients:
        mine[:] = [cid.replace(f"ld-{tag}-", f"ld-{tag}-rm-") for cid in mine]
        ids.extend(mine)
    everyone += [cid for _, mine in clients for cid in mine]
    phase("run", "--rm", NAME, "{}", "/bin/true")
    assert d.ctr("tasks", "ls", "-q").stdout == b""
    assert d.ctr("containers", "ls", "-q").stdout == b""

    # nothing left on the host; the snapshots go with the collector's next pass
    end = time.monotonic() + SETTLE
    while (left := cs.residue(d, everyone, shims_before)) and set(left) <= {"snapshots", "shims"} \
            and time.monotonic() < end:
        time.sleep(0.2)
    assert left == {}

    # the daemon let go of what the load used: descriptors back to the start
    end = time.monotonic() + SETTLE
    while fd_count(d.pid) > fd_start and time.monotonic() < end:
        time.sleep(0.2)
    assert fd_count(d.pid) <= fd_start, "\n".join(fds(d.pid))
    rss_end = rss_bytes(d.pid)
    print(f"daemon fds {fd_start} -> {fd_count(d.pid)}; RSS {rss_start >> 20} MiB -> {rss_end >> 20} MiB "
          f"({rss_end / rss_start:.2f}x)")
    assert rss_end <= 1.5 * rss_start, (rss_start, rss_end)
    # and it still serves: one more container runs and goes
    again = f"ld-again-{tag}"
    ids.append(again)
    out = d.ctr("run", "--rm", NAME, again, "/bin/true", stdin=subprocess.DEVNULL, timeout=60)
    assert (out.returncode, out.stderr) == (0, b"")
