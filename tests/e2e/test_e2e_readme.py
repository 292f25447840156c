"""The README's command blocks, run as a reader would run them, against
real daemons: the stop command, the content and snapshot walk-throughs
(pointed at a test daemon through CONTAINERD_ADDRESS), the throwaway
containerd, and the outputs it shows, which must be what the commands print.

Each block runs in bash from a scratch directory holding a `.venv` link to
the venv under test, so `.venv/bin/pyctr` means what it means in the README.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from e2e_support import BIN, CONTAINERD, CTR, REPO, clean_env, run_pyctr, short_dir

pytestmark = pytest.mark.e2e


def _block(name: str) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- {name}:begin -->\n```\w*\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    assert match, f"README has no {name} block"
    return match.group(1)


@pytest.fixture
def reader_dir():
    """Where the reader's shell runs: `.venv` points at the venv under test;
    TMPDIR is here too, so `mktemp -d` scratch directories are found and
    unmounted even when a block fails half-way."""
    d = short_dir("readme-")
    os.symlink(BIN.parent, os.path.join(d, ".venv"))
    yield d
    for line in reversed(open("/proc/self/mounts").read().splitlines()):
        target = line.split()[1]
        if target.startswith(d + "/"):
            subprocess.run(["umount", target], check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", d], check=False)


def _bash(script: str, cwd: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, capture_output=True,
                          env=clean_env({"TMPDIR": cwd, **env}), timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout.decode()}\n{proc.stderr.decode()}"
    return proc.stdout.decode()


@pytest.mark.parametrize("how", ["readme", signal.SIGINT], ids=["kill -TERM from the lock file", "SIGINT"])
def test_the_stop_command_stops_the_daemon(daemon, reader_dir, how):
    d = daemon()
    if how == "readme":
        command = _block("readme-stop").replace("/run/pycontainerd/pycontainerd.sock", d.address)
        _ok(_bash(command, reader_dir, {}))
    else:  # what Ctrl-C in make run's terminal sends
        d.send_signal(how)
    assert d.proc.wait(15) == 0, d.log()
    assert not os.path.exists(d.address)


def _expected_output(name: str) -> tuple[list[str], str]:
    """A `$ command` block: the command's argv after `.venv/bin/pyctr`, and
    the output shown under it."""
    first, _, output = _block(name).partition("\n")
    words = first.removeprefix("$ ").split()
    assert words[0] == ".venv/bin/pyctr"
    return words[1:], output


def test_snapshotter_rows_are_what_pyctr_prints(daemon):
    argv, shown = _expected_output("readme-snapshotters")
    assert run_pyctr(daemon().address, *argv).stdout.decode() == shown


def test_plugin_rows_with_the_example_plugin_are_what_pyctr_prints(daemon, example_plugin_site):
    argv, shown = _expected_output("readme-plugin-rows")
    d = daemon(env={"PYTHONPATH": example_plugin_site})
    assert run_pyctr(d.address, *argv).stdout.decode() == shown


def test_using_it_commands_run(daemon, reader_dir):
    d = daemon()
    out = _ok(_bash(_block("readme-using"), reader_dir, {"CONTAINERD_ADDRESS": d.address}))
    assert "Server:" in out and "io.containerd.grpc.v1.version" in out
    assert "NAME LABELS \ndev  team=a \n" in out  # namespaces ls
    assert re.search(r"(?m)^l1 +\S+ +containerd\.io/gc\.expire=\S+ +$", out), out  # leases ls


def test_content_walk_through_runs(daemon, reader_dir):
    d = daemon()
    out = _ok(_bash(_block("readme-content"), reader_dir, {"CONTAINERD_ADDRESS": d.address}))
    digest = "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"  # of "hello\n"
    assert digest in out and "containerd.io/gc.root=keep" in out
    assert "hello\n" in out  # content get
    assert out.endswith(digest + "\n")  # content rm prints what it removed
    assert not os.path.exists(os.path.join(reader_dir, "file"))


def test_snapshot_walk_through_mounts_and_unmounts_a_scratch_directory(daemon, ctr, reader_dir):
    d = daemon()
    out = _ok(_bash(_block("readme-snapshots"), reader_dir, {"CONTAINERD_ADDRESS": d.address}))
    assert re.search(r"(?m)^c1 +Committed +$", out) and re.search(r"(?m)^k2 +c1 +Active +$", out), out
    assert " c1\n  \\_ k2\n" in out  # the tree
    assert "team=a" in out
    assert reader_dir not in open("/proc/self/mounts").read()  # unmounted, as the README says to
    assert [e for e in os.listdir(reader_dir) if e != ".venv"] == []  # and the scratch directory removed
    assert ctr(d.address, "snapshots", "--snapshotter", "overlayfs", "ls").stdout.split() == [b"KEY", b"PARENT",
                                                                                               b"KIND"]


def test_throwaway_containerd_block_runs(reader_dir):
    for need in (CONTAINERD, CTR):
        if not os.access(need, os.X_OK):
            pytest.skip(f"{need} is not installed")
    # should the block fail half-way, stop its containerd (by the pid it
    # recorded) and remove its directory
    guard = ('trap \'s=$?; if [ -n "${pid:-}" ]; then kill -TERM "$pid" 2>/dev/null || true; fi; '
             'if [ -n "${d:-}" ]; then rm -rf "$d"; fi; exit $s\' EXIT\n')
    check = '\nif kill -0 "$pid" 2>/dev/null || [ -e "$d" ]; then echo LEFT-BEHIND; fi\n'
    out = _ok(_bash(guard + _block("readme-containerd") + check, reader_dir, {}))
    assert re.search(r"Server:\n  Version:  1\.6\.", out), out
    assert re.search(r"(?m)^k1 +Active +$", out), out  # no --snapshotter: overlayfs, as ctr
    assert "LEFT-BEHIND" not in out  # the block stopped its containerd and removed its directory
