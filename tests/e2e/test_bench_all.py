"""`bench/all.py --quick`: the whole benchmark set runs against a real
containerd, every row of its table has both daemons' figures, and the
containers it ran are gone afterwards.

It measures nothing here (no timed assertion): it checks that `make bench`
would work, as a smoke test. About 35 s on 2 CPUs once pull.py's image is
cached under /var/tmp (building that cache takes longer, once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_support import CONTAINERD, CTR, REPO

pytestmark = [pytest.mark.e2e, pytest.mark.containerd]

NEEDED = (CONTAINERD, CTR, "/usr/bin/runc", "/usr/bin/docker-registry", "/bin/busybox")


def _processes_with_arg_prefix(prefix: str) -> list[str]:
    """Command lines of live processes with an argument starting with `prefix`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.decode(errors="replace").startswith(prefix) for a in argv):
            found.append(" ".join(a.decode(errors="replace") for a in argv))
    return found


def test_bench_all_quick_reports_every_benchmark_and_cleans_up():
    for path in NEEDED:
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is not installed")
    if os.geteuid() != 0:
        pytest.skip("the benchmarks start containerd and containers: root only")
    r = subprocess.run([sys.executable, str(REPO / "bench" / "all.py"), "--quick", "--json"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=900)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    out = json.loads(r.stdout)

    assert set(out["scripts"]) == {"startup", "ingest", "snapshots", "pull", "run"}
    metrics = [row["metric"] for row in out["rows"]]
    for expected in ("ready: exec", "ready as a multiple of the bare grpc.aio floor", "`ctr plugins ls`",
                     "idle RSS, fresh daemon", "idle RSS as a multiple of the grpc.aio floor serving the same API",
                     "`ctr content ingest`", "snapshot Prepare+Commit",
                     "image pull + unpack", "`ctr run --rm", "idle RSS, after running containers",
                     "RSS with 5 containers running"):
        assert any(m.startswith(expected) or expected in m for m in metrics), (expected, metrics)
    for row in out["rows"]:
        if "text" in row:
            continue
        assert row["pycontainerd"] > 0 and row["containerd"] > 0, row
        assert row["ratio"] == pytest.approx(row["pycontainerd"] / row["containerd"])
        assert row["target"] is not None and isinstance(row["pass"], bool), row

    run = out["scripts"]["run"]
    assert run["leftover_containers"] == {"pycontainerd": [], "containerd": []}
    assert len(run["samples"]["pycontainerd"]["run_ms"]) == 3 == len(run["samples"]["containerd"]["run_ms"])
    # no shim of a container it ran outlives it (each shim's command line carries `-id <container id>`)
    assert _processes_with_arg_prefix(run["id_prefix"] + "-") == []

    table = subprocess.run([sys.executable, "-c", "import json, sys; sys.path.insert(0, sys.argv[1]); import all; "
                            "d = json.load(sys.stdin); print(all.markdown(d['rows'], d['notes'], d['meta']))",
                            str(REPO / "bench")], input=r.stdout, capture_output=True, timeout=60)
    assert table.returncode == 0, table.stderr.decode(errors="replace")
    lines = table.stdout.decode().splitlines()
    assert lines[0] == "| metric | pycontainerd | containerd | ratio | target | result |"
    assert sum(1 for line in lines if line.endswith("| PASS |") or line.endswith("| MISS |")) == \
        sum(1 for row in out["rows"] if "text" not in row)
