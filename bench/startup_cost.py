#!/usr/bin/env python3
"""Where pycontainerd's start-up goes, in instructions rather than milliseconds.

Wall times on a shared machine vary by a third from run to run; instruction
counts (valgrind's callgrind, all threads) repeat to 0.1%, so this is how a
change to start-up is judged before startup.py confirms it in wall time. It
counts, each in a fresh interpreter of the venv, with the cyclic GC off:

  stages      the interpreter alone, then asyncio + grpc.aio + protobuf (what
              any Python gRPC server imports), + structlog, + pluggy, + the
              core's modules, + the built-in plugins' modules
  floor       bench/floor_server.py's bare Version server, until it serves
  daemon      pycontainerd itself, from exec until its gRPC server serves
              (temporary root, state and socket on /dev/shm)

    .venv/bin/python bench/startup_cost.py        (needs valgrind)

A benchmark, not a test: it prints a table and exits 0.
"""
from __future__ import annotations

import json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = str(REPO / ".venv/bin/python")

_STAGES = (
    ("interpreter", ""),
    ("+ asyncio, grpc.aio, protobuf", "import asyncio, grpc.aio, google.protobuf.descriptor_pb2, google.protobuf.any_pb2"),
    ("+ structlog (as core/log.py imports it)", "import pycontainerd.core.log"),
    ("+ pluggy", "import pluggy"),
    ("+ the core's modules", "import pycontainerd.core.main"),
    ("+ the built-in plugins' modules",
     "import importlib, pycontainerd.plugins.builtins as b\nfor m in b.MODULES: importlib.import_module(m)"),
)

# exits right after the server starts serving, so the count ends there
_UNTIL_SERVING = """
import os, sys
import pycontainerd.core.main as m
from pycontainerd.core import daemon
serve = daemon.Daemon._serve
async def serve_then_exit(self):
    await serve(self)
    os._exit(0)
daemon.Daemon._serve = serve_then_exit
sys.argv = ["pycontainerd", "--config", sys.argv[1]]
m.main()
"""

_FLOOR_UNTIL_SERVING = """
import asyncio, os, sys
sys.path.insert(0, {bench!r})
import grpc, floor_server
async def serve(address):
    server = grpc.aio.server()
    floor_server.version_pb2_grpc.add_VersionServicer_to_server(floor_server.Version(), server)
    server.add_insecure_port("unix:" + address)
    await server.start()
    os._exit(0)
asyncio.run(serve(sys.argv[2]))
"""


def count(code: str, *args: str) -> int:
    """Instructions executed by `python -c code args`, every thread included."""
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", PY, "-c", code, *args],
                       capture_output=True, text=True, timeout=600)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if not m:
        raise RuntimeError(f"valgrind gave no count (exit {r.returncode}):\n{r.stderr[-2000:]}")
    return int(m.group(1))


def main() -> int:
    if not shutil.which("valgrind"):
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    rows, code = [], "import gc, os\ngc.disable()\n"
    for label, stmt in _STAGES:
        code += stmt + "\n"
        rows.append((label, count(code + "os._exit(0)\n")))
    tmp = tempfile.mkdtemp(prefix="bench-cost-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        cfg = f"{tmp}/config.toml"
        Path(cfg).write_text(f'version = 2\nroot = {json.dumps(tmp + "/root")}\nstate = {json.dumps(tmp + "/state")}\n'
                             f'[debug]\nlevel = "error"\n[grpc]\naddress = {json.dumps(tmp + "/grpc.sock")}\n')
        floor = count(_FLOOR_UNTIL_SERVING.format(bench=str(REPO / "bench")), "--config", f"{tmp}/floor.sock")
        daemon = count(_UNTIL_SERVING, cfg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("| start-up, cumulative | instructions | step |\n|---|---:|---:|")
    prev = 0
    for label, n in rows:
        print(f"| {label} | {n / 1e6:.0f} M | {(n - prev) / 1e6:+.0f} M |")
        prev = n
    print(f"| pycontainerd, exec until serving | {daemon / 1e6:.0f} M | {(daemon - prev) / 1e6:+.0f} M "
          f"(config, discovery, plugin init, server start) |")
    print(f"\nReference: bench/floor_server.py until serving: {floor / 1e6:.0f} M; "
          f"pycontainerd / floor = {daemon / floor:.2f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
