"""Helpers for the end-to-end tests: daemons as subprocesses, the real
ctr and pyctr, a real containerd, installed plugin distributions, and
parsers for what ctr prints. Fixtures built on them are in conftest.py."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import toml
from google.protobuf import empty_pb2

from pycontainerd.api.services.content.v1 import content_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def _bin_dir() -> Path:
    here = Path(sys.executable).parent  # the venv running pytest
    return here if (here / "pycontainerd").exists() else REPO / ".venv" / "bin"


BIN = _bin_dir()
PYCONTAINERD = str(BIN / "pycontainerd")
PYCTR = str(BIN / "pyctr")
CTR = "/usr/bin/ctr"
CONTAINERD = "/usr/bin/containerd"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
COMMAND_TIMEOUT = 30.0


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without anything that would point a client
    or a daemon somewhere else, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_") and k != "PYTHONPATH"}
    env.update(extra or {})
    return env


def short_dir(prefix: str = "pcd-e2e-") -> str:
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def _deep_merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
    return into


def answers(address: str, timeout: float = 1.0) -> bool:
    """Whether a gRPC server on `address` answers containerd's Version call."""
    if not os.path.exists(address):
        return False
    with grpc.insecure_channel("unix:" + address) as channel:
        try:
            version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=timeout)
            return True
        except grpc.RpcError:
            return False


def _run(argv: list[str], check: bool, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT,
         **kwargs: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, env=clean_env(env), timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout.decode(errors='replace')}\nstderr:\n{proc.stderr.decode(errors='replace')}"
        )
    return proc


PROBE_TOPIC = "/pycontainerd-test/probe"
PROBE_FILTER = f'topic=="{PROBE_TOPIC}"'


def publish_probe(address: str, namespace: str = "default") -> None:
    """Publish one event on PROBE_TOPIC through Events.Publish (payload: a
    NamespaceUpdate, a type ctr can print)."""
    from google.protobuf import any_pb2

    from pycontainerd.api.events import namespace_pb2
    from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc

    payload = any_pb2.Any(type_url="containerd.events.NamespaceUpdate",
                          value=namespace_pb2.NamespaceUpdate(name="probe").SerializeToString())
    with grpc.insecure_channel("unix:" + address) as channel:
        events_pb2_grpc.EventsStub(channel).Publish(
            events_pb2.PublishRequest(topic=PROBE_TOPIC, event=payload),
            metadata=(("containerd-namespace", namespace),), timeout=COMMAND_TIMEOUT)


def until_subscribed(address: str, received_probe, timeout: float = START_TIMEOUT) -> None:
    """There is no "subscribed" reply in containerd's Subscribe: publish
    probes until the subscriber has received one (`received_probe()`), which
    proves its subscription is in place for every later event."""
    deadline = time.monotonic() + timeout
    while not received_probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"no probe event reached the subscriber within {timeout}s")
        publish_probe(address)
        time.sleep(0.05)


def run_ctr(address: str, *args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """The real ctr against `address`; stdout and stderr are bytes."""
    return _run([CTR, "--address", address, *args], check, **kwargs)


def run_pyctr(address: str, *args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """Our pyctr against `address`; stdout and stderr are bytes."""
    return _run([PYCTR, "--address", address, *args], check, **kwargs)


def run_pycontainerd(*args: str, check: bool = False, **kwargs: Any) -> subprocess.CompletedProcess:
    """A one-shot `pycontainerd ...` (config commands, or a start that must fail)."""
    return _run([PYCONTAINERD, *args], check, **kwargs)


class DaemonProcess:
    """A daemon started as a subprocess, its output in `log_path`."""

    def __init__(self, name: str, argv: list[str], dir: str, config: dict[str, Any], env: dict[str, str],
                 umask: int = 0o022, cwd: str | None = None):
        self.name = name
        self.dir = dir
        self.config = config
        self.address: str = config["grpc"]["address"]
        self.root: str = config["root"]
        self.state: str = config["state"]
        self.config_path = os.path.join(dir, "config.toml")
        with open(self.config_path, "w") as f:
            toml.dump(config, f)
        self.log_path = os.path.join(dir, "daemon.log")
        self.argv = [*argv, "--config", self.config_path]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=clean_env(env), umask=umask, cwd=cwd,
        )
        self.pid = self.proc.pid
        self.returncode: int | None = None

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "DaemonProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise AssertionError(f"{self.name} exited {self.returncode} before serving:\n{self.log()}")
            if answers(self.address, timeout=0.5):
                return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"{self.name} did not answer on {self.address} within {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        """For a daemon expected to exit on its own (a failed start)."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} still running after {timeout}s:\n{self.log()}") from None
        return self.returncode

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the daemon by PID and wait; returns its exit code."""
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{self.name} ignored signal {sig} for {timeout}s:\n{self.log()}") from None
        self.returncode = self.proc.returncode
        self._log.close()
        return self.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
        self.returncode = self.proc.returncode
        self._log.close()

    def ctr(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
        return run_ctr(self.address, *args, **kwargs)

    def pyctr(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
        return run_pyctr(self.address, *args, **kwargs)


class DaemonFactory:
    """Starts pycontainerd daemons; `close()` stops the ones still running
    (SIGTERM, by PID), checks they exited 0 and removed their socket, and
    removes their directories."""

    def __init__(self) -> None:
        self.daemons: list[DaemonProcess] = []
        self.dirs: list[str] = []

    def tempdir(self) -> str:
        """A fresh short directory under /tmp, removed at close()."""
        d = short_dir()
        self.dirs.append(d)
        return d

    def __call__(
        self,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        umask: int = 0o022,
        cwd: str | None = None,
    ) -> DaemonProcess:
        d = self.tempdir()
        base = {
            "version": 2,
            "root": os.path.join(d, "root"),
            "state": os.path.join(d, "state"),
            # a directory that does not exist yet: the daemon creates it
            "grpc": {"address": os.path.join(d, "run", "pcd.sock")},
        }
        cfg = _deep_merge(base, config or {})
        proc = DaemonProcess("pycontainerd", [PYCONTAINERD], d, cfg, env or {}, umask=umask, cwd=cwd)
        self.daemons.append(proc)
        return proc.wait_ready() if wait else proc

    def close(self) -> None:
        problems = []
        for proc in self.daemons:
            if proc.running:
                try:
                    rc = proc.stop()
                except AssertionError as exc:
                    problems.append(str(exc))
                    continue
                if rc != 0:
                    problems.append(f"pid {proc.pid} exited {rc} on SIGTERM:\n{proc.log()}")
                elif os.path.exists(proc.address):
                    problems.append(f"pid {proc.pid} left its socket {proc.address} behind")
            else:
                proc.kill()  # already exited: just close the log
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        if problems:
            pytest.fail("daemon teardown: " + "\n".join(problems), pytrace=False)


def start_containerd() -> DaemonProcess:
    d = short_dir("ctd-e2e-")
    cfg = {
        "version": 2,
        "root": os.path.join(d, "root"),
        "state": os.path.join(d, "state"),
        "disabled_plugins": ["io.containerd.grpc.v1.cri"],
        "grpc": {"address": os.path.join(d, "c.sock")},
        "ttrpc": {"address": os.path.join(d, "c.sock.ttrpc")},
        "plugins": {"io.containerd.internal.v1.opt": {"path": os.path.join(d, "opt")}},
    }
    proc = DaemonProcess("containerd", [CONTAINERD], d, cfg, {})
    try:
        return proc.wait_ready()
    except BaseException:
        proc.kill()
        shutil.rmtree(d, ignore_errors=True)
        raise


# -- third-party plugin distributions, installed for real ----------------------

def _source_digest(src: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(src.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path) \
                and "build" not in path.relative_to(src).parts:
            h.update(str(path.relative_to(src)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def install_distribution(src: Path, shared: Path) -> str:
    """`pip install --no-deps --no-build-isolation --target DIR` of the
    distribution in `src`, from a copy (so build/ and *.egg-info never
    land in the source tree), once per run for all workers."""
    target = shared / f"site-{src.name}-{_source_digest(src)}"
    with open(shared / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return str(target)
        shutil.rmtree(target, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix="pip-src-", dir=shared))
        copy = work / src.name
        shutil.copytree(src, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        proc = subprocess.run(
            [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-index", "--no-deps", "--no-build-isolation", "--target", str(target), str(copy)],
            capture_output=True, text=True, env=clean_env(), timeout=300,
        )
        shutil.rmtree(work, ignore_errors=True)
        if proc.returncode != 0:
            pytest.fail(f"pip install --no-build-isolation of {src} failed:\n{proc.stdout}\n{proc.stderr}",
                        pytrace=False)
        (target / ".complete").touch()
    return str(target)


# -- parsing what ctr prints ----------------------------------------------------

def plugin_rows(out: bytes) -> list[tuple[str, str, str, str]]:
    """`plugins ls` table rows as (type, id, platforms, status)."""
    lines = out.decode().splitlines()
    assert lines and lines[0].split() == ["TYPE", "ID", "PLATFORMS", "STATUS"], out
    rows = []
    for line in lines[1:]:
        cells = line.split()
        assert len(cells) == 4, line
        rows.append(tuple(cells))
    return rows


def plugin_blocks(out: bytes) -> dict[str, list[str]]:
    """`plugins ls -d` as {"type.id": [stripped lines of its block]}."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    kind = ""
    for raw in out.decode().splitlines():
        line = raw.strip()
        if line.startswith("Type:"):
            kind = line.split(None, 1)[1]
            current = []
        elif line.startswith("ID:"):
            blocks[f"{kind}.{line.split(None, 1)[1]}"] = current
        if line:
            current.append(line)
    return blocks


def namespace_rows(out: bytes) -> dict[str, str]:
    """`namespaces ls` as {name: labels}."""
    lines = out.decode().splitlines()
    assert lines and lines[0].split() == ["NAME", "LABELS"], out
    rows = {}
    for line in lines[1:]:
        name, _, labels = line.strip().partition(" ")
        rows[name] = labels.strip()
    return rows


def server_section(out: bytes) -> dict[str, str]:
    """The `Server:` part of `version` output as {"Version": ..., "UUID": ...}."""
    text = out.decode()
    assert "Server:" in text, text
    fields = {}
    for line in text.split("Server:", 1)[1].splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


class ContentServer:
    """A `pycontainerd content serve` process; restartable on the same root."""

    def __init__(self, d: str):
        self.sock = os.path.join(d, "cs.sock")
        self.root = os.path.join(d, "root")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ContentServer":
        self.proc = subprocess.Popen(
            [PYCONTAINERD, "content", "serve", "--address", self.sock, "--root", self.root],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
        deadline = time.monotonic() + 20
        while not os.path.exists(self.sock):
            assert self.proc.poll() is None, self.proc.stdout.read().decode()
            assert time.monotonic() < deadline, "content server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(15)
        out = proc.stdout.read().decode()
        proc.stdout.close()
        assert proc.returncode == 0, out

    def stub(self, ch: grpc.Channel) -> content_pb2_grpc.ContentStub:
        return content_pb2_grpc.ContentStub(ch)
