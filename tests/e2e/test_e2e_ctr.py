"""The real `ctr` (Debian's containerd 1.6) against a pycontainerd daemon
started as a subprocess: what a user types, what a user reads."""

from __future__ import annotations

import os
import uuid

import pytest

from e2e_support import namespace_rows, plugin_blocks, plugin_rows, server_section

pytestmark = pytest.mark.e2e

# the snapshotters' platform as containerd prints it (GOOS/GOARCH) for the
# kernel's machine name
PLATFORM = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}.get(os.uname().machine, "")
BUILTIN_ROWS = [
    ("io.containerd.event.v1", "exchange", "-", "ok"),
    ("io.containerd.metadata.v1", "sqlite", "-", "ok"),
    ("io.containerd.content.v1", "content", "-", "ok"),
    ("io.containerd.service.v1", "content-service", "-", "ok"),
    ("io.containerd.grpc.v1", "content", "-", "ok"),
    ("io.containerd.gc.v1", "scheduler", "-", "ok"),
    ("io.containerd.service.v1", "leases-service", "-", "ok"),
    ("io.containerd.grpc.v1", "leases", "-", "ok"),
    ("io.containerd.service.v1", "images-service", "-", "ok"),
    ("io.containerd.grpc.v1", "images", "-", "ok"),
    ("io.containerd.service.v1", "containers-service", "-", "ok"),
    ("io.containerd.grpc.v1", "containers", "-", "ok"),
    ("io.containerd.service.v1", "tasks-service", "-", "ok"),
    ("io.containerd.grpc.v1", "tasks", "-", "ok"),
    ("io.containerd.snapshotter.v1", "native", PLATFORM, "ok"),
    ("io.containerd.snapshotter.v1", "overlayfs", PLATFORM, "ok"),
    ("io.containerd.snapshotter.v1", "btrfs", PLATFORM, "skip"),  # the test roots are not on btrfs
    ("io.containerd.service.v1", "snapshots-service", "-", "ok"),
    ("io.containerd.grpc.v1", "snapshots", "-", "ok"),
    ("io.containerd.differ.v1", "walking", PLATFORM, "ok"),
    ("io.containerd.monitor.v1", "cgroups", PLATFORM, "ok"),
    ("io.containerd.service.v1", "diff-service", "-", "ok"),
    ("io.containerd.grpc.v1", "diff", "-", "ok"),
    ("io.containerd.service.v1", "introspection-service", "-", "ok"),
    ("io.containerd.service.v1", "namespaces-service", "-", "ok"),
    ("io.containerd.grpc.v1", "introspection", "-", "ok"),
    ("io.containerd.grpc.v1", "namespaces", "-", "ok"),
    ("io.containerd.grpc.v1", "version", "-", "ok"),
    ("io.containerd.grpc.v1", "events", "-", "ok"),
    ("io.containerd.ttrpc.v1", "events", "-", "ok"),
    ("io.containerd.runtime.v1", "linux", PLATFORM, "ok"),
    ("io.containerd.runtime.v2", "task", PLATFORM, "ok"),
    ("io.containerd.grpc.v1", "healthcheck", "-", "ok"),
    ("io.containerd.internal.v1", "metrics", "-", "ok"),  # serves nothing until [metrics] address is set
]


def test_plugins_ls_lists_exactly_the_builtins_ok(daemon, ctr):
    d = daemon()
    out = ctr(d.address, "plugins", "ls")
    assert sorted(plugin_rows(out.stdout)) == sorted(BUILTIN_ROWS)
    assert out.stderr == b""


def test_plugins_ls_filters_by_type(daemon, ctr):
    d = daemon()
    rows = plugin_rows(ctr(d.address, "plugins", "ls", "type==io.containerd.grpc.v1").stdout)
    assert sorted(r[1] for r in rows) == sorted(r[1] for r in BUILTIN_ROWS if r[0] == "io.containerd.grpc.v1")
    assert {r[0] for r in rows} == {"io.containerd.grpc.v1"}
    assert {r[3] for r in rows} == {"ok"}
    # ORed filters, as containerd's filter syntax has it
    rows = plugin_rows(ctr(d.address, "plugins", "ls", "id==sqlite", "id==exchange").stdout)
    assert sorted(r[1] for r in rows) == ["exchange", "sqlite"]


def test_plugins_ls_detailed_shows_requires(daemon, ctr):
    d = daemon()
    blocks = plugin_blocks(ctr(d.address, "plugins", "ls", "-d").stdout)
    assert set(blocks) == {f"{t}.{i}" for t, i, _, _ in BUILTIN_ROWS}
    sqlite = blocks["io.containerd.metadata.v1.sqlite"]
    requires = sqlite[sqlite.index("Requires:") + 1 : sqlite.index("Requires:") + 4]
    assert requires == ["io.containerd.content.v1", "io.containerd.event.v1", "io.containerd.snapshotter.v1"]
    # a plugin that requires nothing prints no Requires line; none has an Error
    assert not any(line.startswith("Requires:") for line in blocks["io.containerd.grpc.v1.version"])
    assert not any(line.startswith("Error:") for uri, lines in blocks.items() for line in lines
                   if not uri.endswith(".btrfs"))  # btrfs skips, with its reason, off btrfs
    btrfs = blocks["io.containerd.snapshotter.v1.btrfs"]
    assert any("must be a btrfs filesystem to be used with the btrfs snapshotter" in line for line in btrfs), btrfs


def test_version_and_uuid_survive_a_restart(daemon, ctr):
    first = daemon()
    before = server_section(ctr(first.address, "version").stdout)
    assert before["Version"] == "0.1.0"
    assert str(uuid.UUID(before["UUID"])) == before["UUID"]
    assert first.stop() == 0

    again = daemon(config={"root": first.root, "state": first.state})
    after = server_section(ctr(again.address, "version").stdout)
    assert after["UUID"] == before["UUID"]
    assert after["Version"] == "0.1.0"

    other = daemon()  # another root is another server
    assert server_section(ctr(other.address, "version").stdout)["UUID"] != before["UUID"]


def test_namespaces_create_label_list_remove(daemon, ctr):
    d = daemon()
    assert ctr(d.address, "namespaces", "create", "dev", "a=b").stdout == b""
    ctr(d.address, "namespaces", "label", "dev", "team=a")
    assert namespace_rows(ctr(d.address, "namespaces", "ls").stdout) == {"dev": "a=b,team=a"}

    ctr(d.address, "namespaces", "label", "dev", "a=")  # an empty value clears the label
    assert namespace_rows(ctr(d.address, "namespaces", "ls").stdout) == {"dev": "team=a"}
    assert ctr(d.address, "namespaces", "ls", "-q").stdout == b"dev\n"

    out = ctr(d.address, "namespaces", "rm", "dev")
    assert out.stdout == b"dev\n"
    assert namespace_rows(ctr(d.address, "namespaces", "ls").stdout) == {}


def test_namespace_created_twice_already_exists(daemon, ctr):
    d = daemon()
    ctr(d.address, "namespaces", "create", "dev")
    out = ctr(d.address, "namespaces", "create", "dev", check=False)
    assert out.returncode == 1
    assert b'namespace "dev": already exists' in out.stderr
    assert namespace_rows(ctr(d.address, "namespaces", "ls").stdout) == {"dev": ""}


def test_invalid_namespace_names_are_refused(daemon, ctr):
    d = daemon()
    for name in ("-bad", "a..b", "x" * 77):
        out = ctr(d.address, "namespaces", "create", "--", name, check=False)
        assert out.returncode == 1, name
        assert b"identifier" in out.stderr and name.encode() in out.stderr, out.stderr
        assert b"invalid argument" in out.stderr, out.stderr
    assert namespace_rows(ctr(d.address, "namespaces", "ls").stdout) == {}


def test_removing_a_missing_namespace(daemon, ctr):
    d = daemon()
    # ctr treats NotFound as success, as containerd's own `ctr ns rm` does
    out = ctr(d.address, "namespaces", "rm", "ghost", check=False)
    assert (out.returncode, out.stdout) == (0, b"ghost\n"), out.stderr
