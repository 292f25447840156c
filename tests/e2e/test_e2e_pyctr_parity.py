"""pyctr prints what ctr prints, byte for byte, for the same pycontainerd
daemon (every command, with and without its flags: pyctr_scenarios.py);
plus pyctr's own additions (--tree, --format json)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from e2e_support import CTR, PYCTR, DaemonFactory, clean_env, plugin_rows, run_ctr, run_pyctr
from pyctr_scenarios import SCENARIOS, SideBySide, check_tree

pytestmark = pytest.mark.e2e

NAMESPACES = [
    # created in this order, on purpose not sorted
    ("zeta", ["tier=gold", "a=1"]),
    ("dev", ["a=b", "team=platform"]),
    ("a-very-long-namespace-name.with.dots", []),
    ("default", ["k=v=w"]),  # the value keeps its "="
    ("prod", ["owner=zoë", "cost-center=42"]),  # widths are counted in runes
]


@pytest.fixture(scope="module")
def served():
    """One daemon for this module's read-only comparisons, with labelled
    namespaces created through the real ctr."""
    if not os.access(CTR, os.X_OK):
        pytest.skip(f"{CTR} is not installed")
    factory = DaemonFactory()
    try:
        d = factory()
        for name, labels in NAMESPACES:
            run_ctr(d.address, "namespaces", "create", name, *labels)
        yield d
    finally:
        factory.close()


@pytest.mark.parametrize(
    "args",
    [
        ("plugins", "ls"),
        ("plugins", "ls", "-d"),
        ("plugins", "ls", "-q"),
        ("plugins", "ls", "type==io.containerd.grpc.v1"),
        ("plugins", "ls", "type==io.containerd.nothing.v1"),
        ("plugin", "list", "id==sqlite", "id==version"),
        ("namespaces", "ls"),
        ("namespaces", "ls", "-q"),
        ("ns", "list"),
    ],
    ids=" ".join,
)
def test_same_bytes_as_ctr(served, args):
    want = run_ctr(served.address, *args)
    got = run_pyctr(served.address, *args)
    assert _exports_sorted(got.stdout) == _exports_sorted(want.stdout), \
        f"pyctr:\n{got.stdout.decode()}\nctr:\n{want.stdout.decode()}"
    assert got.returncode == want.returncode == 0


def _exports_sorted(out: bytes) -> bytes:
    """ctr prints a plugin's exports in Go map order, which changes from run
    to run (the GC scheduler exports four): compare them sorted, bytes kept."""
    lines, result, i = out.split(b"\n"), [], 0
    while i < len(lines):
        result.append(lines[i])
        if lines[i].strip() == b"Exports:":
            j = i + 1
            while j < len(lines) and lines[j].strip() and lines[j][:1].isspace():
                j += 1
            result += sorted(lines[i + 1 : j])
            i = j
            continue
        i += 1
    return b"\n".join(result)


def test_namespaces_ls_shows_the_labels(served):
    out = run_pyctr(served.address, "namespaces", "ls").stdout.decode()
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "LABELS"]
    names = [line.split()[0] for line in lines[1:]]
    assert sorted(names) == sorted(n for n, _ in NAMESPACES)
    rows = {line.split()[0]: line.split()[1] if len(line.split()) > 1 else "" for line in lines[1:]}
    assert rows["dev"] == "a=b,team=platform"
    assert rows["zeta"] == "a=1,tier=gold"
    assert rows["default"] == "k=v=w"
    assert rows["prod"] == "cost-center=42,owner=zoë"


def _uris(served) -> set[str]:
    """What the real ctr lists."""
    return {f"{t}.{i}" for t, i, _, _ in plugin_rows(run_ctr(served.address, "plugins", "ls").stdout)}


def test_tree_draws_each_plugin_once_and_refers_back(served):
    """The tree once took 80 lines for 23 plugins: the gRPC plugins, which
    require every service, drawn again under each service."""
    lines = check_tree(served.address)
    uris = _uris(served)
    assert len(lines) < 2 * len(uris), "\n".join(lines)
    services = [u for u in uris if u.startswith("io.containerd.service.v1.")]
    grpc_refs = [line for line in lines if "io.containerd.grpc.v1.{" in line and line.endswith(" (see above)")]
    assert len(grpc_refs) == len(services) - 1  # drawn under the first service, referred to from the others
    assert lines[0] == "io.containerd.internal.v1.metrics (ok)"  # a root: it requires nothing (registered first)


def test_json_has_init_durations(served):
    rows = json.loads(run_pyctr(served.address, "plugins", "ls", "--format", "json").stdout)
    assert {f"{r['type']}.{r['id']}" for r in rows} == _uris(served)
    for row in rows:
        d = row["init_duration_seconds"]
        assert isinstance(d, (int, float)) and not isinstance(d, bool) and d >= 0, row
        if row["id"] != "btrfs":  # skips: the test root is not on btrfs
            assert row["status"] == "ok" and row["error"] is None
    sqlite = next(r for r in rows if r["id"] == "sqlite")
    assert sqlite["type"] == "io.containerd.metadata.v1"
    assert "io.containerd.event.v1" in sqlite["requires"]


def test_version_reports_the_server(served):
    want = run_ctr(served.address, "version").stdout.decode()
    got = run_pyctr(served.address, "version").stdout.decode()
    assert got.split("Server:")[1] == want.split("Server:")[1]


@pytest.mark.parametrize("args", [("plugins", "ls", "--format", "json"), ("namespaces", "ls")], ids=" ".join)
def test_reader_gone_is_not_a_traceback(served, args):
    """`pyctr ... | head -1`: the reader goes away; ctr just dies of SIGPIPE."""
    r, w = os.pipe()
    os.close(r)  # nobody will read
    try:
        proc = subprocess.run(
            [PYCTR, "--address", served.address, *args], stdout=w, stderr=subprocess.PIPE, env=clean_env(), timeout=30
        )
    finally:
        os.close(w)
    assert proc.returncode != 0
    assert proc.stderr == b"", proc.stderr.decode()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_pyctr_does_what_ctr_does(daemon, scenario):
    """The scenarios test_e2e_containerd.py runs against a real containerd,
    against pycontainerd: a fresh daemon each, as the objects they make
    are checked by name."""
    if not os.access(CTR, os.X_OK):
        pytest.skip(f"{CTR} is not installed")
    SCENARIOS[scenario](SideBySide(daemon().address))
