"""pyctr against a REAL containerd (Debian's 1.6): it must read containerd's
answers exactly as ctr does, and drive it as ctr does (every command, with
and without its flags: pyctr_scenarios.py). Deselect with `-m "not containerd"`."""

from __future__ import annotations

import json
import uuid

import pytest

from e2e_support import namespace_rows, plugin_rows, run_ctr, run_pyctr, server_section
from pyctr_scenarios import SCENARIOS, SideBySide, check_tree

pytestmark = [pytest.mark.e2e, pytest.mark.containerd]


def test_version(containerd):
    got = server_section(run_pyctr(containerd.address, "version").stdout)
    want = server_section(run_ctr(containerd.address, "version").stdout)
    assert got["Version"].startswith("1.6.20")
    assert got == want
    uuid.UUID(got["UUID"])


@pytest.mark.parametrize(
    "args",
    [
        ("plugins", "ls"),
        ("plugins", "ls", "-q"),
        ("plugins", "ls", "type==io.containerd.snapshotter.v1"),
        ("plugins", "ls", "type==io.containerd.grpc.v1", "id==content"),
        ("namespaces", "ls"),
    ],
    ids=" ".join,
)
def test_same_bytes_as_ctr(containerd, args):
    want = run_ctr(containerd.address, *args)
    got = run_pyctr(containerd.address, *args)
    assert got.stdout == want.stdout, f"pyctr:\n{got.stdout.decode()}\nctr:\n{want.stdout.decode()}"


def test_plugins_ls_reads_containerds_statuses(containerd):
    rows = plugin_rows(run_pyctr(containerd.address, "plugins", "ls").stdout)
    statuses = {f"{t}.{i}": s for t, i, _, s in rows}
    assert statuses["io.containerd.grpc.v1.version"] == "ok"
    assert statuses["io.containerd.snapshotter.v1.native"] == "ok"
    assert "skip" in statuses.values()  # aufs, zfs, btrfs... cannot run here
    assert "io.containerd.grpc.v1.cri" not in statuses  # disabled in the fixture's config


def test_plugins_ls_detailed_same_lines_as_ctr(containerd):
    # ctr ranges over the Exports Go map, whose order is random: compare the
    # lines as sorted lists (every line's content and count must match)
    want = run_ctr(containerd.address, "plugins", "ls", "-d").stdout.decode().splitlines()
    got = run_pyctr(containerd.address, "plugins", "ls", "-d").stdout.decode().splitlines()
    assert sorted(got) == sorted(want)
    assert any(line.strip().startswith("Message:") for line in got)  # error rows are detailed too


def test_namespaces_round_trip(containerd):
    a = containerd.address
    assert run_pyctr(a, "namespaces", "create", "dev", "a=b").stdout == b""
    run_pyctr(a, "namespaces", "label", "dev", "team=a")
    run_pyctr(a, "namespaces", "create", "prod")
    assert namespace_rows(run_pyctr(a, "namespaces", "ls").stdout) == {"dev": "a=b,team=a", "prod": ""}
    assert run_pyctr(a, "namespaces", "ls").stdout == run_ctr(a, "namespaces", "ls").stdout
    assert run_pyctr(a, "namespaces", "ls", "-q").stdout == run_ctr(a, "namespaces", "ls", "-q").stdout

    run_pyctr(a, "namespaces", "label", "dev", "a=")
    assert namespace_rows(run_ctr(a, "namespaces", "ls").stdout)["dev"] == "team=a"

    again = run_pyctr(a, "namespaces", "create", "dev", check=False)
    assert again.returncode == 1
    assert b'namespace "dev": already exists' in again.stderr

    bad = run_pyctr(a, "namespaces", "create", "--", "-bad", check=False)
    assert bad.returncode == 1 and b"identifier" in bad.stderr

    assert run_pyctr(a, "namespaces", "rm", "dev", "prod").stdout == b"dev\nprod\n"
    assert namespace_rows(run_ctr(a, "namespaces", "ls").stdout) == {}
    assert run_pyctr(a, "namespaces", "ls").stdout == run_ctr(a, "namespaces", "ls").stdout


def test_json_has_no_init_durations(containerd):
    rows = json.loads(run_pyctr(containerd.address, "plugins", "ls", "--format", "json").stdout)
    assert rows
    assert all(row["init_duration_seconds"] is None for row in rows)
    statuses = {r["status"] for r in rows}
    assert statuses <= {"ok", "skip", "error"} and "ok" in statuses
    assert all((r["error"] is None) == (r["status"] == "ok") for r in rows)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_pyctr_does_what_ctr_does(containerd, scenario):
    """Same exit code, output and error line as ctr, command by command,
    none of them told which snapshotter to use unless the step says so."""
    SCENARIOS[scenario](SideBySide(containerd.address))


def test_snapshots_without_a_snapshotter_use_overlayfs_as_ctr(containerd):
    """containerd refuses an empty snapshotter name ("snapshotter argument
    missing"): pyctr, like ctr, names overlayfs."""
    a = containerd.address
    assert run_pyctr(a, "snapshots", "prepare", "k").returncode == 0
    listing = run_pyctr(a, "snapshots", "--snapshotter", "overlayfs", "ls").stdout
    assert listing == run_ctr(a, "snapshots", "--snapshotter", "overlayfs", "ls").stdout
    assert listing.split()[3:] == [b"k", b"Active"]


def test_tree_draws_each_plugin_once_and_refers_back(containerd):
    lines = check_tree(containerd.address)
    plugins = len(plugin_rows(run_ctr(containerd.address, "plugins", "ls").stdout))
    # ten gRPC plugins require the ten services: once drawn, one line per service after that
    assert len(lines) < 2 * plugins, "\n".join(lines)
    assert sum("io.containerd.grpc.v1.{" in line for line in lines) >= 5
