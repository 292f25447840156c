"""The real `ctr run` and `ctr tasks` against pycontainerd, end to end:
the Tasks service, the runtime v2 plugin, the real containerd-shim-runc-v2
and runc, on a busybox-static image imported with `ctr images import`.

Runs only where the daemon loads io.containerd.runtime.v2.task (status
ok); elsewhere each test is skipped saying so."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from busybox_image import NAME, write_busybox_layout
from e2e_support import CTR, plugin_rows

pytestmark = pytest.mark.e2e

STOP_DEADLINE = 30.0  # how long a killed task may take to be reported stopped


def _rows(out: bytes) -> list[list[str]]:
    return [line.split() for line in out.decode().splitlines()[1:] if line.strip()]


@pytest.fixture
def d(daemon):
    if os.geteuid() != 0:
        pytest.skip("running containers needs root")
    proc = daemon()
    rows = plugin_rows(proc.ctr("plugins", "ls").stdout)
    if ("io.containerd.runtime.v2", "task") not in {(r[0], r[1]) for r in rows if r[3] == "ok"}:
        pytest.skip("the plugin io.containerd.runtime.v2.task is not loaded ok in this daemon")
    proc.ctr("images", "import", write_busybox_layout(os.path.join(proc.dir, "busybox.tar")))
    yield proc
    # whatever a failed test left running goes with its container
    for cid in proc.ctr("containers", "ls", "-q", check=False).stdout.decode().split():
        proc.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        proc.ctr("tasks", "rm", "-f", cid, check=False)
        proc.ctr("containers", "rm", cid, check=False)


def _status(d, cid: str) -> str:
    return {r[0]: r[2] for r in _rows(d.ctr("tasks", "ls").stdout)}.get(cid, "")


def test_ctr_run_rm_prints_the_output_and_exits_with_the_containers_code(d):
    out = d.ctr("run", "--rm", NAME, "c1", "/bin/sh", "-c", "echo hi; exit 3", check=False)
    assert out.stdout == b"hi\n", out.stderr
    assert out.returncode == 3
    assert d.ctr("containers", "ls", "-q").stdout == b""
    assert _rows(d.ctr("tasks", "ls").stdout) == []


def test_ctr_run_detached_then_tasks_ls_ps_exec_kill_rm(d):
    # pid 1 of a pid namespace ignores a signal it has no handler for (the
    # kernel's rule, the same under containerd): the shell traps SIGTERM
    d.ctr("run", "-d", NAME, "c2", "/bin/sh", "-c", "trap 'exit 143' TERM; sleep 300 & wait")
    rows = {r[0]: r for r in _rows(d.ctr("tasks", "ls").stdout)}
    assert rows["c2"][2] == "RUNNING"
    pid = int(rows["c2"][1])
    assert pid > 0
    # runc's state is this daemon's own (<state>/runc), not /run/containerd/runc
    # that a containerd on this host shares with every other daemon
    runc_state = os.path.join(d.config["state"], "runc", "default", "c2", "state.json")
    assert os.path.exists(runc_state)
    ps = _rows(d.ctr("tasks", "ps", "c2").stdout)
    assert pid in [int(r[0]) for r in ps] and len(ps) == 2  # the shell and its sleep

    out = d.ctr("tasks", "exec", "--exec-id", "e1", "c2", "/bin/sh", "-c", "echo $$")
    assert int(out.stdout.decode().strip()) > 0  # its pid inside the container's pid namespace

    # an exec's row carries runc's ProcessDetails, printed by pyctr as ctr prints it
    d.ctr("tasks", "exec", "-d", "--exec-id", "e2", "c2", "/bin/sleep", "300")
    ps = d.ctr("tasks", "ps", "c2").stdout
    assert b"&ProcessDetails{ExecID:e2,XXX_unrecognized:[],}" in ps
    assert d.pyctr("tasks", "ps", "c2").stdout == ps

    # checkpoint needs CRIU: refused clearly, and the task runs on
    out = d.ctr("tasks", "checkpoint", "c2", check=False)
    assert out.returncode != 0 and b"CRIU" in out.stderr
    assert _status(d, "c2") == "RUNNING"

    d.ctr("tasks", "kill", "-s", "SIGTERM", "c2")
    deadline = time.monotonic() + STOP_DEADLINE
    while _status(d, "c2") != "STOPPED":
        assert time.monotonic() < deadline, "c2 was not reported stopped after SIGTERM"
        time.sleep(0.1)
    assert {r[0]: r for r in _rows(d.ctr("tasks", "ls").stdout)}["c2"][2] == "STOPPED"
    d.ctr("tasks", "rm", "c2")
    assert _status(d, "c2") == ""
    d.ctr("containers", "rm", "c2")
    assert d.ctr("containers", "ls", "-q").stdout == b""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _container_samples(url: str, cid: str) -> dict[str, float]:
    """The scrape's samples of one container, by metric name."""
    with urllib.request.urlopen(url, timeout=30) as r:
        text = r.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.labels.get("container_id") == cid and s.labels.get("namespace") == "default"}


def test_a_running_containers_cgroup_metrics_are_on_the_metrics_endpoint(daemon):
    """`[metrics] address` serves the task's cgroup statistics under
    containerd's names while it burns CPU and holds memory; they go when
    the task is deleted."""
    if os.geteuid() != 0:
        pytest.skip("running containers needs root")
    address = f"127.0.0.1:{_free_port()}"
    proc = daemon(config={"metrics": {"address": address}})
    url = f"http://{address}/v1/metrics"
    proc.ctr("images", "import", write_busybox_layout(os.path.join(proc.dir, "busybox.tar")))
    # 32 MiB held in a shell variable, then a busy loop
    script = "x=$(head -c 33554432 /dev/zero | tr '\\0' a); while :; do :; done"
    proc.ctr("run", "-d", NAME, "m1", "/bin/sh", "-c", script)
    try:
        deadline = time.monotonic() + STOP_DEADLINE
        first = _container_samples(url, "m1")
        while True:  # until the variable is filled and the CPU time has moved
            now = _container_samples(url, "m1")
            if (now.get("container_memory_usage_usage_bytes", 0) >= 32 << 20
                    and now["container_cpu_total_nanoseconds"] > first["container_cpu_total_nanoseconds"]):
                break
            assert time.monotonic() < deadline, f"metrics did not move: {first} -> {now}"
            time.sleep(0.2)
        assert now["container_pids_current"] >= 1
        assert now["container_cpu_user_nanoseconds"] > 0
    finally:
        proc.ctr("tasks", "kill", "-s", "SIGKILL", "m1", check=False)
        deadline = time.monotonic() + STOP_DEADLINE
        while _status(proc, "m1") not in ("STOPPED", "") and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.ctr("tasks", "rm", "m1", check=False)
        proc.ctr("containers", "rm", "m1", check=False)
    assert _container_samples(url, "m1") == {}  # no series for a deleted task


def test_another_oci_runtime_under_the_same_shim(d):
    """`--runc-binary /usr/bin/crun`: the runc shim drives crun instead
    (the runc options' BinaryName), as it does under containerd. crun 1.8
    refuses hosts that mix cgroup v1 controllers with a cgroup2 mount (this
    machine: the same refusal under a real containerd); its own message then
    shows it was crun that ran, and --rm leaves nothing."""
    out = d.ctr("run", "--rm", "--runc-binary", "/usr/bin/crun", NAME, "c5", "/bin/sh", "-c", "echo via crun; exit 5",
                check=False)
    if out.returncode != 5:
        assert b"cgroups in hybrid mode not supported" in out.stderr, out.stderr
    else:
        assert out.stdout == b"via crun\n"
    assert d.ctr("containers", "ls", "-q").stdout == b""
    assert _rows(d.ctr("tasks", "ls").stdout) == []


def test_ctr_tasks_attach_and_exec_with_a_terminal(d):
    """`ctr tasks attach` reconnects to a detached task's stdio, and `ctr
    tasks exec -t` gives its process a terminal, both through this daemon."""
    d.ctr("run", "-d", NAME, "c8", "/bin/sh", "-c", "read x; echo got $x; exit 6")
    out = d.ctr("tasks", "attach", "c8", input=b"hello\n", check=False)
    assert (out.returncode, out.stdout) == (6, b"got hello\n"), out.stderr
    assert _status(d, "c8") == ""  # ctr attach deletes the task it waited for
    d.ctr("run", "-d", NAME, "c9", "/bin/sleep", "300")
    try:
        # ctr puts its own terminal in raw mode: give it one
        out = subprocess.run(["script", "-qec", f"{CTR} --address {d.address} tasks exec -t --exec-id t1 c9 "
                              "/bin/sh -c 'tty; exit 4'", "/dev/null"],
                             capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        assert b"/dev/pts/" in out.stdout, out
        assert out.returncode == 4, out
    finally:
        d.ctr("tasks", "kill", "-s", "SIGKILL", "c9", check=False)
        deadline = time.monotonic() + STOP_DEADLINE
        while _status(d, "c9") not in ("STOPPED", "") and time.monotonic() < deadline:
            time.sleep(0.1)
        d.ctr("tasks", "rm", "c9", check=False)
        d.ctr("containers", "rm", "c8", "c9", check=False)
