"""pyctr's containers, tasks, run and events against a real containerd
(and against pycontainerd once its io.containerd.runtime.v2.task plugin
loads), with the real runc and containerd-shim-runc-v2, and the real
ctr as the reference: the same flags must give the same container record
and the same spec bytes, the same tables, the same exit codes.
"""

from __future__ import annotations

import os
import pty
import re
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import fcntl
import time

import pytest

import container_support as cs
from e2e_support import CONTAINERD, CTR, PYCTR, REPO, DaemonFactory, clean_env, run_ctr, short_dir, start_containerd

pytestmark = pytest.mark.e2e
RUNTIME_PLUGIN = "io.containerd.runtime.v2.task"


def _need(path: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is not installed")


@pytest.fixture(scope="module", params=["containerd", "pycontainerd"])
def target(request):
    """A daemon holding the test image: a real containerd, or pycontainerd
    (skipped until its runtime v2 plugin is loaded ok)."""
    _need(CONTAINERD)
    _need(CTR)
    _need("/usr/bin/containerd-shim-runc-v2")
    factory = None
    if request.param == "containerd":
        d = start_containerd()
    else:
        factory = DaemonFactory()
        d = factory()
        rows = [line.split() for line in d.ctr("plugins", "ls").stdout.decode().splitlines()[1:]]
        status = {f"{r[0]}.{r[1]}": r[-1] for r in rows if len(r) >= 4}
        if status.get(RUNTIME_PLUGIN) != "ok":
            factory.close()
            pytest.skip(f"pycontainerd's {RUNTIME_PLUGIN} plugin is not loaded ok "
                        f"({status.get(RUNTIME_PLUGIN, 'absent')}): nothing can run containers there yet")
    d.kind = request.param
    try:
        cs.import_image(d, d.dir)
        yield d
    finally:
        if factory is not None:
            factory.close()
        else:
            d.stop()
            shutil.rmtree(d.dir, ignore_errors=True)


def unique(base: str) -> str:
    """A container id no other test on this host uses: cgroups (/<ns>/<id>)
    and a real containerd's runc state (/run/containerd/runc/<ns>) are
    host-wide, and xdist runs parametrisations of one test side by side."""
    return f"{base}-{secrets.token_hex(3)}"


def pyctr(d, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return d.pyctr(*args, check=check, **kwargs)


def ctr(d, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return d.ctr(*args, check=check, **kwargs)


def assert_nothing_left(d, container_id: str) -> None:
    """No records, and no FIFO directory of `container_id` in the shared
    FIFO root (which also holds other tests' directories: ids are unique
    per daemon, so only this test's count)."""
    assert cs.leftovers(d) == {"containers": [], "tasks": [], "snapshots": []}
    assert cs.fifos_of(container_id) == []


def wait_status(d, container_id: str, status: str, timeout: float = 30) -> None:
    """Poll `tasks ls` until the task shows `status` (the kernel decides
    when a signal lands; this is waiting, not timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [line.split() for line in pyctr(d, "tasks", "ls").stdout.decode().splitlines()[1:]]
        if [container_id, status] in [[r[0], r[2]] for r in rows if len(r) == 3]:
            return
        time.sleep(0.05)
    raise AssertionError(f"{container_id} never became {status}: {rows}")


# -- pyctr run ----------------------------------------------------------------------

def test_run_rm_prints_the_output_and_exits_with_the_containers_code(target):
    cid = f"c1-{target.kind}"
    out = pyctr(target, "run", "--rm", cs.IMAGE, cid, "/bin/sh", "-c", "echo hi; echo oops >&2; exit 3",
                check=False)
    assert (out.returncode, out.stdout, out.stderr) == (3, b"hi\n", b"oops\n")
    assert_nothing_left(target, cid)


def test_run_without_a_command_runs_the_images_cmd(target):
    out = pyctr(target, "run", "--rm", cs.IMAGE, unique("c-default"))
    assert out.stdout == b"hello from the image\n"


def test_run_passes_stdin_through_and_closes_it(target):
    out = pyctr(target, "run", "--rm", cs.IMAGE, unique("c-stdin"), "/bin/sh", "-c", "cat; echo done",
                stdin=None, input=b"line one\nline two\n")
    assert out.stdout == b"line one\nline two\ndone\n"


def test_env_env_file_cwd_user_and_a_read_only_mount(target):
    d = target
    host = short_dir("pcd-mnt-")
    os.chmod(host, 0o755)  # the container's user 1000 reads it
    try:
        with open(os.path.join(host, "file"), "w") as f:
            f.write("from the host\n")
        env_file = os.path.join(host, "env")
        with open(env_file, "w") as f:
            f.write("B=2\nIMAGE_VAR=overridden\n")
        script = "id; echo A=$A B=$B IMAGE_VAR=$IMAGE_VAR; pwd; cat /host/file; touch /host/new && echo WROTE"
        out = pyctr(d, "run", "--rm", "--env", "A=1", "--env-file", env_file, "--cwd", "/tmp",
                    "--user", "1000:1000", "--mount", f"type=bind,src={host},dst=/host,options=rbind:ro",
                    cs.IMAGE, unique("c-env"), "/bin/sh", "-c", script, check=False)
        lines = out.stdout.decode().splitlines()
        assert lines[0].startswith("uid=1000(app) gid=1000(app)"), lines
        assert lines[1:4] == ["A=1 B=2 IMAGE_VAR=overridden", "/tmp", "from the host"]
        assert b"Read-only file system" in out.stderr and b"WROTE" not in out.stdout
        assert out.returncode == 1
        assert not os.path.exists(os.path.join(host, "new"))
    finally:
        shutil.rmtree(host)


def test_user_by_name_is_looked_up_in_the_image(target):
    """As containerd's WithUser: uid and gid from the image's /etc/passwd;
    the supplementary groups only come with the image config's own user."""
    out = pyctr(target, "run", "--rm", "--user", "app", cs.IMAGE, unique("c-user"), "/bin/id")
    assert out.stdout == b"uid=1000(app) gid=1000(app) groups=1000(app)\n"
    out = pyctr(target, "run", "--rm", "--user", "nobody", cs.IMAGE, unique("c-user"), "/bin/id", check=False)
    assert (out.returncode, out.stderr) == (1, b"pyctr: no users found\n")
    assert cs.leftovers(target)["containers"] == []


def test_read_only_rootfs_memory_and_cpus_reach_the_container(target):
    out = pyctr(target, "run", "--rm", "--read-only", "--memory-limit", "67108864", "--cpus", "0.5",
                cs.IMAGE, unique("c-limits"), "/bin/sh", "-c", "touch /x || echo RO", check=False)
    assert out.stdout == b"RO\n"


def test_privileged_container_gets_every_capability_and_the_hosts_devices(target):
    out = pyctr(target, "run", "--rm", "--privileged", cs.IMAGE, unique("c-priv"), "/bin/sh", "-c",
                "grep CapEff /proc/self/status; ls /dev/null /dev/zero && echo DEVS")
    with open("/proc/self/status") as f:
        ours = [line for line in f if line.startswith("CapEff")][0]
    assert out.stdout.decode().splitlines()[0] == ours.strip()
    assert out.stdout.endswith(b"DEVS\n")
    plain = pyctr(target, "run", "--rm", cs.IMAGE, unique("c-plain"), "/bin/sh", "-c", "grep CapEff /proc/self/status")
    assert plain.stdout.strip() == b"CapEff:\t00000000a80425fb"  # containerd's default set


def test_net_host_shares_the_hosts_network(target):
    out = pyctr(target, "run", "--rm", "--net-host", cs.IMAGE, unique("c-net"), "/bin/sh", "-c",
                "cat /etc/hosts; echo HOSTNAME=$HOSTNAME")
    with open("/etc/hosts", "rb") as f:
        hosts = f.read()
    assert out.stdout.startswith(hosts)
    assert out.stdout.endswith(f"HOSTNAME={os.uname().nodename}\n".encode())


def test_refusals(target):
    d = target
    out = pyctr(d, "run", "--rm", "--cni", cs.IMAGE, unique("c-cni"), "/bin/true", check=False)
    assert out.returncode == 1 and b"--cni is not supported" in out.stderr
    out = pyctr(d, "run", "--rm", "-d", cs.IMAGE, unique("c-x"), check=False)
    assert out.stderr == b"pyctr: flags --detach and --rm cannot be specified together\n"
    out = pyctr(d, "run", "--rm", "docker.io/library/nope:1", unique("c-x"), check=False)
    assert out.returncode == 1 and b"not found" in out.stderr
    out = pyctr(d, "run", "--rm", cs.IMAGE, unique("c-nocmd"), "/bin/does-not-exist", check=False)
    assert out.returncode != 0 and b"does-not-exist" in out.stderr
    assert cs.leftovers(d)["containers"] == []


def test_twenty_runs_leave_nothing_behind(target):
    # FIFOs in a directory of this test's own: the shared one also holds
    # those of tests running beside it
    fifo_root = os.path.join(target.dir, "fifo")
    os.makedirs(fifo_root)
    shims = cs.shim_pids(target.address)
    ids = [unique(f"loop-{target.kind}-{i}") for i in range(20)]
    for i, cid in enumerate(ids):
        out = pyctr(target, "run", "--rm", "--fifo-dir", fifo_root, cs.IMAGE, cid, "/bin/echo", str(i))
        assert out.stdout == f"{i}\n".encode()
    assert cs.leftovers(target) == {"containers": [], "tasks": [], "snapshots": []}
    assert cs.fifo_dirs(fifo_root) == []
    # and on the host: mounts, shims, bundles, cgroups
    assert cs.residue(target, ids, shims, fifo_root) == {}


# -- detached: tasks ls/ps/exec/pause/resume/kill/rm ----------------------------------

def test_detached_task_through_its_life(target):
    d = target
    cid = unique(f"c2-{d.kind}")
    pyctr(d, "run", "-d", cs.IMAGE, cid, "/bin/sleep", "300")
    try:
        wait_status(d, cid, "RUNNING")
        assert pyctr(d, "tasks", "ls").stdout == ctr(d, "tasks", "ls").stdout
        assert pyctr(d, "tasks", "ps", cid).stdout == ctr(d, "tasks", "ps", cid).stdout
        out = pyctr(d, "tasks", "exec", "--exec-id", "e1", cid, "/bin/sh", "-c", "echo $$; exit 4", check=False)
        assert out.returncode == 4 and out.stdout.strip().isdigit()
        out = pyctr(d, "tasks", "exec", "--exec-id", "e2", "--user", "app", "--cwd", "/tmp", cid,
                    "/bin/sh", "-c", "id -u; pwd")
        assert out.stdout == b"1000\n/tmp\n"
        pyctr(d, "tasks", "pause", cid)
        wait_status(d, cid, "PAUSED")
        pyctr(d, "tasks", "resume", cid)
        wait_status(d, cid, "RUNNING")
        metrics = pyctr(d, "tasks", "metrics", cid).stdout.decode()
        assert metrics.split()[:2] == ["ID", "TIMESTAMP"] and "METRIC" in metrics
        out = pyctr(d, "tasks", "rm", cid, check=False)
        assert out.returncode == 1 and b"task must be stopped before deletion: running" in out.stderr
        out = pyctr(d, "containers", "rm", cid, check=False)
        assert b"cannot delete a non stopped container" in out.stderr
        pyctr(d, "tasks", "kill", "-s", "SIGKILL", cid)
        wait_status(d, cid, "STOPPED")
        pyctr(d, "tasks", "rm", cid)
        pyctr(d, "containers", "rm", cid)
    finally:
        pyctr(d, "tasks", "kill", "-s", "KILL", cid, check=False)
        pyctr(d, "tasks", "rm", "-f", cid, check=False)
        pyctr(d, "containers", "rm", cid, check=False)
    assert_nothing_left(d, cid)


def test_containers_create_then_tasks_start(target):
    d = target
    c7 = unique("c7")
    pyctr(d, "containers", "create", "--label", "a=b", cs.IMAGE, c7, "/bin/sh", "-c", "echo started; exit 2")
    try:
        assert pyctr(d, "containers", "ls").stdout == ctr(d, "containers", "ls").stdout
        labels = pyctr(d, "containers", "label", c7, "x=y").stdout.decode().strip().split(",")
        assert {"a=b", "x=y"} <= set(labels)
        assert ctr(d, "containers", "info", c7).stdout == pyctr(d, "containers", "info", c7).stdout
        assert ctr(d, "containers", "info", "--spec", c7).stdout == \
            pyctr(d, "containers", "info", "--spec", c7).stdout
        out = pyctr(d, "tasks", "start", c7, check=False)
        assert (out.returncode, out.stdout) == (2, b"started\n")
    finally:
        pyctr(d, "containers", "rm", c7, check=False)
    assert cs.leftovers(d)["containers"] == []


# -- the same container as ctr's ----------------------------------------------------

def _record(d, container_id: str) -> dict:
    """The container as stored: its record's fields and the spec's bytes."""
    from pycontainerd.client.client import Client
    from pycontainerd.client.containers import Containers

    with Client(d.address) as client:
        c = Containers(client).get(container_id)
    return {"labels": c.labels, "image": c.image, "runtime": c.runtime,
            "options": (c.runtime_options.type_url, c.runtime_options.value) if c.runtime_options else None,
            "spec_type": c.spec.type_url, "spec": c.spec.value.replace(container_id.encode(), b"<ID>"),
            "snapshotter": c.snapshotter, "snapshot_key": c.snapshot_key.replace(container_id, "<ID>")}


FLAG_SETS = {
    "defaults": [],
    "env-cwd": ["--env", "A=1", "--env", "PATH=/x", "--env-file", "{envfile}", "--cwd", "/tmp"],
    "mount-readonly-memory": ["--mount", "type=bind,src=/srv,dst=/host,options=rbind:ro", "--read-only",
                              "--memory-limit", "67108864"],
    "net-host": ["--net-host"],
    "tty": ["-t"],
    "privileged": ["--privileged"],
    "labels-native": ["--label", "a=b", "--label", "c", "--snapshotter", "native"],
}


@pytest.mark.parametrize("flags", FLAG_SETS.values(), ids=FLAG_SETS.keys())
def test_containers_create_makes_ctrs_container(target, flags, tmp_path):
    d = target
    envfile = tmp_path / "env"
    envfile.write_text("E=from-file\n\nF=<&>\n")
    flags = [f.replace("{envfile}", str(envfile)) for f in flags]
    command = ["/bin/echo", "$A"]  # ctr would read a `-c` after the id as its own --config
    ref_ctr, ref_py = unique("ref-ctr"), unique("ref-py")
    ctr(d, "containers", "create", *flags, cs.IMAGE, ref_ctr, *command)
    try:
        pyctr(d, "containers", "create", *flags, cs.IMAGE, ref_py, *command)
        try:
            assert _record(d, ref_py) == _record(d, ref_ctr)
        finally:
            pyctr(d, "containers", "rm", ref_py)
    finally:
        ctr(d, "containers", "rm", ref_ctr)


RUN_FLAG_SETS = {
    "defaults": [],
    "cpus-runc-binary": ["--cpus", "0.5", "--runc-binary", "/usr/sbin/runc"],
    "cpu-shares-memory": ["--cpu-shares", "512", "--memory-limit", "33554432"],
}


@pytest.mark.parametrize("flags", RUN_FLAG_SETS.values(), ids=RUN_FLAG_SETS.keys())
def test_run_makes_ctrs_container(target, flags):
    """`run -d` with run-only flags, then the records compared; the tasks
    exit on their own and are removed."""
    d = target
    run_ctr_id, run_py_id = unique("run-ctr"), unique("run-py")
    ctr(d, "run", "-d", *flags, cs.IMAGE, run_ctr_id, "/bin/true")
    pyctr(d, "run", "-d", *flags, cs.IMAGE, run_py_id, "/bin/true")
    try:
        assert _record(d, run_py_id) == _record(d, run_ctr_id)
    finally:
        for cid in (run_ctr_id, run_py_id):
            wait_status(d, cid, "STOPPED")
            pyctr(d, "tasks", "rm", cid)
            pyctr(d, "containers", "rm", cid)


# -- events ---------------------------------------------------------------------------

def test_events_are_printed_as_ctr_prints_them(target):
    d = target
    events_id = unique("c-events")
    procs = [subprocess.Popen([tool, "--address", d.address, "events"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=clean_env()) for tool in (CTR, PYCTR)]
    try:
        time.sleep(0.1)
        from e2e_support import PROBE_TOPIC, publish_probe
        # both subscriptions are in place once both have printed a probe
        seen = [b"", b""]
        deadline = time.monotonic() + 30
        while not all(PROBE_TOPIC.encode() in s for s in seen):
            assert time.monotonic() < deadline, seen
            publish_probe(d.address)
            for i, p in enumerate(procs):
                while select.select([p.stdout], [], [], 0.05)[0]:
                    seen[i] += os.read(p.stdout.fileno(), 65536)
                    if PROBE_TOPIC.encode() in seen[i]:
                        break
        pyctr(d, "run", "--rm", cs.IMAGE, events_id, "/bin/true")
        publish_probe(d.address)
        outs = [b"", b""]
        for i, p in enumerate(procs):
            while outs[i].count(PROBE_TOPIC.encode()) < 1:
                assert select.select([p.stdout], [], [], 30)[0], outs
                outs[i] += os.read(p.stdout.fileno(), 65536)
    finally:
        for p in procs:
            p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()

    def lines(out: bytes) -> list[str]:
        # the envelope's time is the daemon's; the rest must be the same bytes
        return [" ".join(line.split(" ")[4:]) for line in out.decode().splitlines() if events_id in line]
    theirs, ours = lines(outs[0]), lines(outs[1])
    topics = [line.split(" ")[1] for line in ours]
    assert topics == ["/containers/create", "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete",
                      "/containers/delete"] or "/snapshot/prepare" in topics[0]
    assert ours == theirs


# -- a terminal -------------------------------------------------------------------------

def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, pattern: bytes, timeout: float = 30) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while pattern not in out:
        left = deadline - time.monotonic()
        assert left > 0, out
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def _until_size(fd: int, size: bytes, timeout: float = 30) -> bytes:
    """Ask the container's shell for its terminal size until it answers
    `size` (each question has its own marker); what it printed."""
    deadline = time.monotonic() + timeout
    for n in range(1000):
        # never block on a terminal nobody reads any more: the deadline holds
        assert select.select([], [fd], [], max(deadline - time.monotonic(), 0))[1], "the terminal stopped reading"
        os.write(fd, b"stty size; tty; echo M$((%d+1))x\n" % n)
        out = _read_until(fd, b"M%dx" % (n + 1))
        if size in out or time.monotonic() > deadline:
            return out
    return out


def test_run_t_gives_a_terminal_that_follows_resizes(target):
    d = target
    cid = unique("c-tty")
    pid, fd = pty.fork()
    if pid == 0:  # the child: pyctr on a fresh terminal
        os.execve(PYCTR, [PYCTR, "--address", d.address, "run", "-t", "--rm", cs.IMAGE, cid, "/bin/sh"],
                  clean_env({"TERM": "xterm"}))
    try:
        _set_size(fd, 30, 100)
        # pyctr sends its size after Start: ask until the shell sees it
        out = _until_size(fd, b"30 100")
        assert b"/dev/pts/" in out
        _set_size(fd, 40, 120)  # the kernel sends pyctr SIGWINCH; it resizes the container's pty
        assert b"40 120" in _until_size(fd, b"40 120")
        os.write(fd, b"exit 5\n")
        _read_until(fd, b"\xff", timeout=30)  # until pyctr closes the terminal
    finally:
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:  # a failure above left it running: stop it and its container
            os.kill(pid, signal.SIGKILL)
            done = os.waitpid(pid, 0)
            pyctr(d, "tasks", "kill", "-s", "KILL", cid, check=False)
            pyctr(d, "tasks", "rm", "-f", cid, check=False)
            pyctr(d, "containers", "rm", cid, check=False)
        os.close(fd)
    assert os.waitstatus_to_exitcode(done[1]) == 5
    assert cs.leftovers(d)["containers"] == []


def test_oci_spec_is_ctrs(target):
    assert pyctr(target, "oci", "spec").stdout == run_ctr(target.address, "oci", "spec").stdout


# -- the README's Python example ----------------------------------------------------------------

def test_readme_python_example_runs_a_container(target):
    text = (REPO / "README.md").read_text()
    code = re.search(r"<!-- readme-python-run:begin -->\n```python\n(.*?)```\n", text, re.S).group(1)
    code = code.replace("/run/containerd/containerd.sock", target.address) \
               .replace("docker.io/library/busybox:latest", cs.IMAGE).replace('"hello"', f'"{unique("hello")}"')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, env=clean_env(),
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr.decode()
    assert re.fullmatch(rb"hello from \S+\nexit code: 7\n", out.stdout), out.stdout
    assert cs.leftovers(target)["containers"] == []


def test_rootfs_directory_as_ctr_uses_it(target):
    """--rootfs: the container runs on a host directory (no image, no
    snapshot); the record and spec are ctr's."""
    d = target
    root = short_dir("pcd-rootfs-")
    try:
        layer = cs._layer()
        import io
        import tarfile
        with tarfile.open(fileobj=io.BytesIO(layer)) as t:
            t.extractall(root)  # our own layer, built above
        ctr(d, "containers", "create", "--rootfs", root, "rootfs-ctr", "/bin/echo", "on", "a", "rootfs")
        pyctr(d, "containers", "create", "--rootfs", root, "rootfs-py", "/bin/echo", "on", "a", "rootfs")
        try:
            assert _record(d, "rootfs-py") == _record(d, "rootfs-ctr")
        finally:
            ctr(d, "containers", "rm", "rootfs-ctr", "rootfs-py")
        out = pyctr(d, "run", "--rm", "--rootfs", root, "rootfs-run", "/bin/echo", "on", "a", "rootfs")
        assert out.stdout == b"on a rootfs\n"
    finally:
        shutil.rmtree(root)
