"""The debug socket ([debug] address): the real `ctr pprof` and `pyctr pprof`
read it, /debug/vars counts, the log level changes at run time, one daemon
per socket, and hostile HTTP gets a 4xx while gRPC keeps being served."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import tempfile
import time

import grpc
import pytest
from google.protobuf import empty_pb2

from e2e_support import CONTAINERD, CTR, DaemonProcess, answers, run_ctr, run_pyctr, short_dir
from pycontainerd.api.services.version.v1 import version_pb2_grpc

pytestmark = pytest.mark.e2e


def _debug_daemon(daemon, **config):
    d = daemon.tempdir()
    debug = os.path.join(d, "debug", "d.sock")  # its directory does not exist yet: the daemon makes it
    proc = daemon(config={"debug": {"address": debug}, **config})
    proc.debug = debug
    return proc


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__(".", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self._path)


def _http(path: str, target: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    conn = _Unix(path)
    try:
        conn.request(method, target, body=body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _raw(path: str, data: bytes) -> bytes:
    """Send bytes as they are; the status line of the answer (b"" if none)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        try:
            s.sendall(data)
        except OSError:  # the server answered and closed before taking it all
            pass
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass
    return answer.split(b"\r\n", 1)[0]


def test_real_ctr_pprof_reads_our_goroutines_and_heap(daemon):
    d = _debug_daemon(daemon)
    assert stat.S_IMODE(os.stat(d.debug).st_mode) == 0o660
    out = run_ctr(d.address, "pprof", "--debug-socket", d.debug, "goroutines").stdout.decode()
    # every asyncio task and thread, innermost call first, with file:line
    assert "task Task-" in out and "thread MainThread" in out, out[:2000]
    assert "/core/main.py:" in out  # the daemon's main task, waiting for a stop
    heap = run_ctr(d.address, "pprof", "-d", d.debug, "heap").stdout.decode()
    assert "tracemalloc is off" in heap and "tracemalloc=on" in heap
    # switched on at run time: the next heap answer holds live allocation sites
    status, body = _http(d.debug, "/debug/pprof/heap?tracemalloc=on")
    assert status == 200 and b"tracemalloc started" in body
    run_ctr(d.address, "version")
    heap = run_ctr(d.address, "pprof", "-d", d.debug, "heap").stdout.decode()
    assert heap.startswith("heap profile: tracemalloc: "), heap[:500]
    sites = [line for line in heap.splitlines()[2:] if " blocks  " in line]
    assert sites and all(".py:" in s or "<" in s for s in sites), heap[:2000]
    assert _http(d.debug, "/debug/pprof/heap?tracemalloc=off")[0] == 200
    assert "tracemalloc is off" in run_ctr(d.address, "pprof", "-d", d.debug, "heap").stdout.decode()
    # what Python cannot give is refused, and ctr says so
    r = run_ctr(d.address, "pprof", "-d", d.debug, "trace", "-s", "1s", check=False)
    assert r.returncode == 1 and b"http get failed with status: 501 Not Implemented" in r.stderr


def test_pyctr_pprof_against_ours(daemon):
    d = _debug_daemon(daemon)
    out = run_pyctr(d.address, "pprof", "--debug-socket", d.debug, "goroutines").stdout.decode()
    assert "task Task-" in out and "thread MainThread" in out
    profile = run_pyctr(d.address, "pprof", "-d", d.debug, "profile", "--seconds", "500ms").stdout.decode()
    lines = profile.splitlines()
    assert lines[0].startswith("# pycontainerd sampled profile: ") and "over 0.5s" in lines[0]
    folded = [line for line in lines if not line.startswith("#")]
    # the loop's thread, seen waiting in the selector (where an idle daemon is)
    main = [line for line in folded if line.startswith("MainThread;")]
    assert main and all(int(line.rsplit(" ", 1)[1]) > 0 for line in folded)
    r = run_pyctr(d.address, "pprof", "-d", d.debug, "block", check=False)
    assert r.returncode == 1 and r.stderr == b"pyctr: http get failed with status: 501 Not Implemented\n"
    missing = os.path.join(os.path.dirname(d.debug), "none.sock")
    r = run_pyctr(d.address, "pprof", "-d", missing, "heap", check=False)
    assert r.returncode == 1
    assert r.stderr.decode() == (f'pyctr: Get "http://./debug/pprof/heap": dial unix {missing}: '
                                 "connect: no such file or directory\n")


@pytest.mark.containerd
def test_pyctr_pprof_against_real_containerd():
    if not (os.access(CONTAINERD, os.X_OK) and os.access(CTR, os.X_OK)):
        pytest.skip("containerd is not installed")
    d = short_dir("ctd-dbg-")
    debug = os.path.join(d, "d.sock")
    cfg = {
        "version": 2, "root": os.path.join(d, "root"), "state": os.path.join(d, "state"),
        "disabled_plugins": ["io.containerd.grpc.v1.cri"],
        "grpc": {"address": os.path.join(d, "c.sock")},
        "ttrpc": {"address": os.path.join(d, "c.sock.ttrpc")},
        "debug": {"address": debug},
        "plugins": {"io.containerd.internal.v1.opt": {"path": os.path.join(d, "opt")}},
    }
    proc = DaemonProcess("containerd", [CONTAINERD], d, cfg, {})
    try:
        proc.wait_ready()
        ours = run_pyctr(proc.address, "pprof", "-d", debug, "goroutines").stdout
        theirs = run_ctr(proc.address, "pprof", "-d", debug, "goroutines").stdout
        # Go's full dump, byte for byte what ctr gets (stacks move: compare the shape)
        assert ours.startswith(b"goroutine ") and theirs.startswith(b"goroutine ")
        assert b"github.com/containerd/containerd" in ours
        heap = run_pyctr(proc.address, "pprof", "-d", debug, "heap").stdout
        assert heap[:2] == b"\x1f\x8b"  # Go's gzipped protobuf profile, copied unchanged
    finally:
        try:
            if proc.running:
                proc.stop()
        finally:
            import shutil

            shutil.rmtree(d, ignore_errors=True)


def test_debug_vars_count_grpc_requests(daemon):
    d = _debug_daemon(daemon)
    before = json.loads(_http(d.debug, "/debug/vars")[1])
    with grpc.insecure_channel("unix:" + d.address) as ch:
        stub = version_pb2_grpc.VersionStub(ch)
        for _ in range(7):
            stub.Version(empty_pb2.Empty(), timeout=10)
    after = json.loads(_http(d.debug, "/debug/vars")[1])
    assert after["grpc_requests"] - before["grpc_requests"] == 7
    assert after["pid"] == d.pid and after["open_fds"] > 0 and after["rss_bytes"] > 0
    assert after["threads"] >= 1 and after["asyncio_tasks"] >= 1 and after["uptime_seconds"] > 0
    assert after["log_level"] == "info" and after["tracemalloc"] is False
    assert after["cmdline"][-2:] == ["--config", d.config_path]


def _stack_dump_file(pid: int) -> str:
    return os.path.join(tempfile.gettempdir(), f"pycontainerd.{pid}.stacks.log")


def _wait_for(predicate, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sigusr1_dumps_stacks_and_log_level_changes_at_run_time(daemon):
    d = _debug_daemon(daemon)
    dump = _stack_dump_file(d.pid)
    try:
        assert _http(d.debug, "/debug/loglevel") == (200, b"info\n")
        # at "error", SIGUSR1's dump (logged at info) is written to its file only
        assert _http(d.debug, "/debug/loglevel", "PUT", b"error") == (200, b"error\n")
        d.send_signal(signal.SIGUSR1)
        _wait_for(lambda: os.path.exists(dump) and os.path.getsize(dump) > 0, "the stack dump file")
        assert "=== BEGIN goroutine stack dump ===" not in d.log()
        with open(dump) as f:
            assert "task Task-" in f.read()
        # back at "info": the dump is in the log, between containerd's markers
        assert _http(d.debug, "/debug/loglevel", "POST", b"INFO\n") == (200, b"info\n")
        d.send_signal(signal.SIGUSR1)
        _wait_for(lambda: "=== END goroutine stack dump ===" in d.log(), "the stack dump in the log")
        log = d.log()
        assert "=== BEGIN goroutine stack dump ===" in log and f"written to {dump}" in log
        assert "log level changed through the debug socket" in log  # the change back to info
        status, body = _http(d.debug, "/debug/loglevel", "PUT", b"loud")
        assert status == 400 and body.startswith(b"unknown log level 'loud': one of trace, debug")
    finally:
        if os.path.exists(dump):
            os.unlink(dump)


def test_second_daemon_on_the_same_debug_socket_is_refused(daemon):
    first = _debug_daemon(daemon)
    second = daemon(config={"debug": {"address": first.debug}}, wait=False)
    assert second.wait_exit() == 1
    assert (f"another daemon (pid {first.pid}) is serving {first.debug}; refusing to start" in second.log())
    assert not os.path.exists(second.address)  # refused before it served anything
    # the first one's socket is untouched and still answers
    assert _http(first.debug, "/debug/pprof/cmdline")[0] == 200
    assert first.stop() == 0
    assert not os.path.exists(first.debug) and not os.path.exists(first.debug + ".lock")


def test_a_socket_someone_else_serves_is_refused(daemon):
    d = daemon.tempdir()
    path = os.path.join(d, "other.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(path)
        other.listen()
        proc = daemon(config={"debug": {"address": path}}, wait=False)
        assert proc.wait_exit() == 1
        assert f"another process is serving {path}; refusing to start" in proc.log()
        assert os.path.exists(path)


def test_hostile_http_gets_4xx_and_grpc_keeps_serving(daemon):
    d = _debug_daemon(daemon)
    cases = [
        (b"GET /debug/vars HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", b"431"),
        (b"GET /" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"431"),
        (b"\x00\x01\x02 not http at all\r\n\r\n", b"400"),
        (b"GET /debug/vars HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", b"400"),
        (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        (b"GET /debug/pprof/%00%ff HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        (b"GET /debug/pprof/profile?seconds=1e9 HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"GET /debug/pprof/profile?seconds=abc HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"DELETE /debug/vars HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"PUT /debug/loglevel HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 200_000, b"413"),
        (b"GET /debug/vars HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
    ]
    for data, status in cases:
        line = _raw(d.debug, data)
        assert line.startswith(b"HTTP/1.1 " + status), (data[:60], line)
    # a client that connects and says nothing does not hold anything up
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(d.debug)
    try:
        assert answers(d.address)
        assert b"Server:" in run_ctr(d.address, "version").stdout
        assert _http(d.debug, "/debug/pprof/goroutine?debug=1")[0] == 200
    finally:
        idle.close()
    assert "Traceback" not in d.log()


def test_a_file_at_the_debug_path_is_refused_and_left_alone(daemon):
    path = os.path.join(daemon.tempdir(), "debug.sock")
    with open(path, "w") as f:
        f.write("mine")
    proc = daemon(config={"debug": {"address": path}}, wait=False)
    assert proc.wait_exit() == 1
    assert f"socket path {path} is not a socket (a regular file); refusing to start" in proc.log()
    with open(path) as f:
        assert f.read() == "mine"


def test_a_host_port_debug_address_serves_over_tcp(daemon):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = daemon(config={"debug": {"address": f"127.0.0.1:{port}"}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/debug/vars")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["pid"] == d.pid
    finally:
        conn.close()


def test_tracemalloc_from_the_start_through_the_environment(daemon):
    d = daemon.tempdir()
    debug = os.path.join(d, "d.sock")
    proc = daemon(config={"debug": {"address": debug}}, env={"PYTHONTRACEMALLOC": "5"})
    heap = run_ctr(proc.address, "pprof", "-d", debug, "heap").stdout.decode()
    first = heap.splitlines()[0]
    assert first.startswith("heap profile: tracemalloc: ") and first.endswith(", 5 frames per allocation"), first
    # start-up's allocations are there from the first byte: module imports lead
    assert heap.splitlines()[1].startswith("top 50 of ")
    assert sum(1 for line in heap.splitlines() if " blocks  " in line) == 50
    assert "importlib" in heap, heap[:3000]
    status, body = _http(debug, "/debug/pprof/heap?debug=2&top=3&gc=1")
    assert status == 200 and body.count(b" blocks  ") == 3 and b"\n#\t" in body
