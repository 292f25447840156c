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


# -- one daemon per root (and per state directory) -----------------------------------------


@pytest.mark.parametrize("shared", ["root", "state"])
def test_second_daemon_on_the_same_root_or_state_refuses_to_start(daemon, shared):
    first = daemon()
    # its own socket (and, for the root case, its own state), the first's root or state
    second = daemon(config={shared: getattr(first, shared)}, wait=False)
    assert second.wait_exit() != 0
    log = second.log()
    assert "Traceback" not in log, log
    lock = os.path.join(getattr(first, shared), "pycontainerd.lock")
    assert log.strip().splitlines()[-1] == (
        f"pycontainerd: another daemon (pid {first.pid}) uses the {shared} directory {getattr(first, shared)}; "
        f"refusing to start (lock {lock} is held)"
    ), log
    # the second never served, and left no socket, socket directory or lock of its own
    assert not os.path.exists(os.path.dirname(second.address))
    other = second.state if shared == "root" else second.root
    assert not os.path.exists(os.path.join(other, "pycontainerd.lock"))
    # the first still serves, and its lock is intact
    assert answers(first.address)
    with open(lock) as f:
        assert f.read() == str(first.pid)
    assert first.stop() == 0
    # a clean stop leaves no lock files behind
    assert not os.path.exists(lock)
    assert not os.path.exists(first.address + ".lock")


def test_the_root_is_free_again_after_a_stop_or_a_kill(daemon):
    first = daemon()
    root, state = first.root, first.state
    first.kill()  # SIGKILL: the lock files stay, but nobody holds them
    assert os.path.exists(os.path.join(root, "pycontainerd.lock"))
    again = daemon(config={"root": root, "state": state})
    assert answers(again.address)
    with open(os.path.join(root, "pycontainerd.lock")) as f:
        assert f.read() == str(again.pid)


# -- nothing of the user's is deleted ------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
def test_something_else_at_the_socket_path_is_kept_and_refused(daemon, kind):
    d = daemon.tempdir()
    sock_dir = os.path.join(d, "run")
    os.mkdir(sock_dir)
    address = os.path.join(sock_dir, "pcd.sock")
    if kind == "file":
        with open(address, "w") as f:
            f.write("precious\n")
    elif kind == "directory":
        os.mkdir(address)
        with open(os.path.join(address, "inside"), "w") as f:
            f.write("precious\n")
    else:
        os.symlink("/etc/hostname", address)
    config = os.path.join(d, "config.toml")
    with open(config, "w") as f:
        f.write(f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n[grpc]\naddress = "{address}"\n')
    proc = run_pycontainerd("--config", config)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    what = {"file": "a regular file", "directory": "a directory"}.get(kind, "a symbolic link")
    assert err.strip() == f"pycontainerd: socket path {address} is not a socket ({what}); refusing to start (it is left as it is)"
    if kind == "file":
        with open(address) as f:
            assert f.read() == "precious\n"
    elif kind == "directory":
        with open(os.path.join(address, "inside")) as f:
            assert f.read() == "precious\n"
    else:
        assert os.readlink(address) == "/etc/hostname"
    # refused before anything was created
    assert sorted(os.listdir(d)) == ["config.toml", "run"]
    assert os.listdir(sock_dir) == ["pcd.sock"]
