"""The daemon's UNIX socket: its permissions, and one daemon per socket."""

from __future__ import annotations

import os
import stat

import pytest

from e2e_support import answers, run_pycontainerd

pytestmark = pytest.mark.e2e


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_socket_and_its_directory_permissions(daemon, umask):
    d = daemon(umask=umask)
    sock_dir = os.path.dirname(d.address)  # did not exist: the daemon made it
    assert stat.S_ISSOCK(os.stat(d.address).st_mode)
    assert _mode(d.address) == 0o660
    assert _mode(sock_dir) == 0o711
    assert d.stop() == 0
    assert not os.path.exists(d.address)


def test_existing_socket_directory_is_left_alone(daemon):
    mine = os.path.join(daemon.tempdir(), "mine")
    os.mkdir(mine, 0o750)
    os.chmod(mine, 0o750)
    d2 = daemon(config={"grpc": {"address": os.path.join(mine, "p.sock")}})
    assert _mode(d2.address) == 0o660
    assert _mode(mine) == 0o750


def test_second_daemon_on_the_same_socket_refuses_to_start(daemon):
    first = daemon()
    second = daemon(config={"grpc": {"address": first.address}}, wait=False)
    assert second.wait_exit() != 0
    log = second.log()
    assert first.address in log or "lock" in log, log
    assert "Traceback" not in log, log
    # the first daemon still owns and serves its socket
    assert os.path.exists(first.address)
    assert answers(first.address)
    assert b"Server:" in first.ctr("version").stdout
    assert first.stop() == 0
    assert not os.path.exists(first.address)


def test_stale_socket_from_a_killed_daemon_is_replaced(daemon):
    first = daemon()
    first.kill()  # SIGKILL: no cleanup, the socket file stays
    assert os.path.exists(first.address) and not answers(first.address)
    again = daemon(config={"grpc": {"address": first.address}, "root": first.root, "state": first.state})
    assert answers(again.address)
    assert again.stop() == 0
    assert not os.path.exists(again.address)


def test_socket_path_too_long_is_a_clear_error(daemon):
    base = daemon.tempdir()
    config = os.path.join(base, "config.toml")
    with open(config, "w") as f:
        f.write(f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n')
    long_dir = os.path.join(base, "x" * 60, "y" * 60)
    proc = run_pycontainerd("--config", config, "--address", os.path.join(long_dir, "p.sock"))
    assert proc.returncode == 1, proc.stderr
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    assert b"p.sock" in proc.stderr and b"too long" in proc.stderr, proc.stderr.decode()
    assert not os.path.exists(os.path.join(base, "root"))  # refused before doing anything
