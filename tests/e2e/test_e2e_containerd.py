"""pyctr against a REAL containerd (Debian's 1.6): it must read containerd's
answers exactly as ctr does. Deselect with `-m "not containerd"`."""

from __future__ import annotations

import json
import uuid

import pytest

from e2e_support import namespace_rows, plugin_rows, run_ctr, run_pyctr, server_section

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
