"""`pprof`: ctr's pprof commands, reading a daemon's debug socket.

    pyctr pprof [--debug-socket/-d S] goroutines|heap|profile [-s D]|trace [-s D]|block|threadcreate

The same paths, flags and output as ctr: each command GETs one path under
/debug/pprof/ on the socket and copies the answer to stdout unchanged; a
status other than 200 is an error worded as ctr words it. It works against
pycontainerd (Python's answers: see core/debugserver.py) and containerd (Go's
pprof output). No gRPC connection is made.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys

from pycontainerd.pkg.defaults import DEFAULT_DEBUG_ADDRESS

from .common import CommandError, _parse_duration

CHUNK = 64 * 1024


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a UNIX socket; the Host is "." as ctr's client sends it."""

    def __init__(self, path: str, timeout: float | None):
        super().__init__(".", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def get(debug_socket: str, path: str, out, timeout: float | None = None) -> None:
    """GET `path` on the debug socket, copying a 200 answer's body to `out`."""
    url = f"http://.{path}"
    conn = _UnixConnection(debug_socket, timeout)
    try:
        try:
            conn.request("GET", path)
            response = conn.getresponse()
        except OSError as exc:
            reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
            raise CommandError(f'Get "{url}": dial unix {debug_socket}: connect: {reason}') from None
        except http.client.HTTPException as exc:
            raise CommandError(f'Get "{url}": {type(exc).__name__}: {str(exc)[:200]}') from None
        if response.status != 200:
            raise CommandError(f"http get failed with status: {response.status} {response.reason}")
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                break
            out.write(chunk)
        out.flush()
    finally:
        conn.close()


def go_seconds(seconds: float) -> str:
    """A float64 as Go's %v prints it (30, 1.5, 0.25)."""
    text = repr(float(seconds))
    return text[:-2] if text.endswith(".0") else text


def _command(path_of):
    def run(_client, args: argparse.Namespace) -> int:
        get(args.debug_socket, path_of(args), sys.stdout.buffer, timeout=args.timeout)
        return 0

    return run


def register(sub) -> None:
    p = sub.add_parser("pprof", help="provide golang pprof outputs for containerd")
    p.add_argument("--debug-socket", "-d", default=DEFAULT_DEBUG_ADDRESS,
                   help=f'socket path for containerd\'s debug server (default: "{DEFAULT_DEBUG_ADDRESS}")')
    p.set_defaults(no_client=True)
    commands = p.add_subparsers(dest="pprof_command", required=True)
    simple = (
        ("block", "goroutine blocking profile", "/debug/pprof/block"),
        ("goroutines", "dump goroutine stack dump", "/debug/pprof/goroutine?debug=2"),
        ("heap", "dump heap profile", "/debug/pprof/heap"),
        ("threadcreate", "goroutine thread creating profile", "/debug/pprof/threadcreate"),
    )
    for name, help_text, path in simple:
        commands.add_parser(name, help=help_text).set_defaults(fn=_command(lambda _a, path=path: path))
    for name, help_text, default, what in (
        ("profile", "CPU profile", 30.0, "duration for collection (seconds)"),
        ("trace", "collect execution trace", 5.0, "trace time (seconds)"),
    ):
        c = commands.add_parser(name, help=help_text)
        c.add_argument("--seconds", "-s", type=_parse_duration, default=default,
                       help=f"{what} (default: {go_seconds(default)}s)")
        c.set_defaults(fn=_command(lambda a, name=name: f"/debug/pprof/{name}?seconds={go_seconds(a.seconds)}"))
