"""What a started daemon has imported: its RSS and its start time are
mostly the modules it loads, so the heavy ones that the default
configuration does not use stay out until something needs them.

The real daemon (core.main's main(), the default plugins, a config as a
user writes it) runs under a one-line wrapper that writes sys.modules out
at exit; the real `ctr` lists its plugins in between, and the daemon is
stopped by PID."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from e2e_support import DaemonProcess, run_ctr, short_dir

pytestmark = pytest.mark.e2e

WRAPPER = (
    "import atexit, json, os, sys\n"
    "atexit.register(lambda: open(os.environ['MODULES_OUT'], 'w').write(json.dumps(sorted(sys.modules))))\n"
    "from pycontainerd.core.main import main\n"
    "sys.exit(main())\n"
)

# module -> what brings it in when it is needed
NOT_AT_START = {
    "rich": "pyctr's pull progress (structlog would import it for pretty tracebacks the daemon never prints)",
    "pygments": "rich",
    "difflib": "a config or plugin name's 'did you mean' in an error",
    "google.protobuf.descriptor_pb2": "nothing: pkg/ttrpc encodes its small descriptor itself",
    "prometheus_client": "a [metrics] address",
    "h11": "a [debug] address",
    "httpx": "pyctr's registry client",
    "tarfile": "the differ's first apply",
    "isal": "the differ's first gzip layer",
    "zstandard": "the differ's first zstd layer",
    "pycontainerd.client": "pyctr",
}


def test_started_daemon_left_heavy_unused_modules_unimported():
    d = short_dir()
    out = os.path.join(d, "modules.json")
    cfg = {"version": 2, "root": os.path.join(d, "root"), "state": os.path.join(d, "state"),
           "grpc": {"address": os.path.join(d, "pcd.sock")}}
    proc = DaemonProcess("pycontainerd", [sys.executable, "-c", WRAPPER], d, cfg, {"MODULES_OUT": out})
    try:
        proc.wait_ready()
        listed = run_ctr(proc.address, "plugins", "ls").stdout.decode()
        assert "io.containerd.runtime.v2" in listed and "tasks" in listed
        assert proc.stop() == 0, proc.log()
        with open(out) as f:
            modules = set(json.load(f))
    finally:
        if proc.running:
            proc.kill()
        shutil.rmtree(d, ignore_errors=True)
    # the daemon did load what it serves...
    assert {"pycontainerd.plugins.services.tasks", "pycontainerd.plugins.runtimes.v2.manager", "sqlite3",
            "structlog", "grpc"} <= modules
    # ...and none of these
    loaded = {m: why for m, why in NOT_AT_START.items() if m in modules}
    assert loaded == {}
