"""Third-party plugins for real: tests/example_plugin and
tests/broken_plugins are installed with pip into a directory of their own
and found through their `pycontainerd.plugins` entry points, by a daemon
started with PYTHONPATH pointing there (the shared venv is never touched)."""

from __future__ import annotations

import pytest

from e2e_support import plugin_blocks, plugin_rows

pytestmark = pytest.mark.e2e

EXAMPLE = "io.containerd.snapshotter.v1.example"
INCOMPLETE = "io.containerd.snapshotter.v1.incomplete"
MISSING = "stat, update, usage, mounts, view, commit, remove, walk"  # all it lacks; it has prepare


def _statuses(out: bytes) -> dict[str, str]:
    return {f"{t}.{i}": s for t, i, _, s in plugin_rows(out)}


def test_example_plugin_is_listed_ok(daemon, ctr, pyctr, example_plugin_site):
    d = daemon(env={"PYTHONPATH": example_plugin_site})
    out = ctr(d.address, "plugins", "ls")
    rows = plugin_rows(out.stdout)
    assert ("io.containerd.snapshotter.v1", "example", "linux/amd64", "ok") in rows
    assert {s for _, i, _, s in rows if i != "btrfs"} == {"ok"}  # btrfs skips off btrfs
    assert pyctr(d.address, "plugins", "ls").stdout == out.stdout
    # without the PYTHONPATH entry the plugin is simply not there
    bare = daemon()
    assert EXAMPLE not in _statuses(ctr(bare.address, "plugins", "ls").stdout)


def test_example_plugin_config_reaches_the_plugin(daemon, ctr, example_plugin_site):
    d = daemon(
        config={"plugins": {EXAMPLE: {"max_snapshots": 7}}},
        env={"PYTHONPATH": example_plugin_site},
    )
    block = plugin_blocks(ctr(d.address, "plugins", "ls", "-d").stdout)[EXAMPLE]
    exports = block[block.index("Exports:") + 1 :]
    assert "max_snapshots      7".split() in [line.split() for line in exports]
    # its root is the plugin's own directory under the daemon's root
    assert ["root", f"{d.root}/{EXAMPLE}"] in [line.split() for line in exports]
    assert "Platforms:    linux/amd64".split() in [line.split() for line in block]


def test_unknown_key_in_the_plugin_section_stops_the_daemon(daemon, example_plugin_site):
    d = daemon(
        config={"plugins": {EXAMPLE: {"max_snapshot": 7}}},
        env={"PYTHONPATH": example_plugin_site},
        wait=False,
    )
    assert d.wait_exit() == 1
    log = d.log()
    assert '"max_snapshot"' in log and '"max_snapshots"' in log, log  # the key and the suggestion
    assert f'plugins."{EXAMPLE}"' in log and d.config_path in log, log
    assert "Traceback" not in log


def test_wrong_type_in_the_plugin_section_stops_the_daemon(daemon, example_plugin_site):
    d = daemon(
        config={"plugins": {EXAMPLE: {"max_snapshots": "seven"}}},
        env={"PYTHONPATH": example_plugin_site},
        wait=False,
    )
    assert d.wait_exit() == 1
    assert "max_snapshots" in d.log() and "Traceback" not in d.log()


def test_disabled_example_plugin_is_not_listed(daemon, ctr, example_plugin_site):
    d = daemon(config={"disabled_plugins": [EXAMPLE]}, env={"PYTHONPATH": example_plugin_site})
    statuses = _statuses(ctr(d.address, "plugins", "ls").stdout)
    assert EXAMPLE not in statuses
    assert statuses["io.containerd.metadata.v1.sqlite"] == "ok"


def test_required_example_plugin_starts(daemon, ctr, example_plugin_site):
    d = daemon(config={"required_plugins": [EXAMPLE]}, env={"PYTHONPATH": example_plugin_site})
    assert _statuses(ctr(d.address, "plugins", "ls").stdout)[EXAMPLE] == "ok"


def test_required_example_plugin_without_it_installed_fails(daemon):
    d = daemon(config={"required_plugins": [EXAMPLE]}, wait=False)
    assert d.wait_exit() == 1
    assert EXAMPLE in d.log()


def test_broken_plugins_are_rows_and_the_daemon_serves(daemon, ctr, pyctr, broken_plugin_site, example_plugin_site):
    d = daemon(env={"PYTHONPATH": f"{broken_plugin_site}:{example_plugin_site}"})
    out = ctr(d.address, "plugins", "ls")
    statuses = _statuses(out.stdout)
    assert statuses.pop("io.containerd.internal.v1.broken-import") == "error"
    assert statuses.pop("io.containerd.internal.v1.broken-init") == "error"
    assert statuses.pop("io.containerd.internal.v1.skipper") == "skip"
    assert statuses.pop(INCOMPLETE) == "error"
    assert statuses.pop(EXAMPLE) == "ok"
    statuses.pop("io.containerd.snapshotter.v1.btrfs")  # skips: the test root is not on btrfs
    assert set(statuses.values()) == {"ok"} and "io.containerd.grpc.v1.namespaces" in statuses
    assert pyctr(d.address, "plugins", "ls").stdout == out.stdout

    # each failure says why
    blocks = plugin_blocks(ctr(d.address, "plugins", "ls", "-d").stdout)
    assert any("a_module_that_does_not_exist" in line for line in blocks["io.containerd.internal.v1.broken-import"])
    assert any("the example device is on fire" in line for line in blocks["io.containerd.internal.v1.broken-init"])
    assert any("no example hardware on this machine" in line for line in blocks["io.containerd.internal.v1.skipper"])

    # and the daemon serves
    ctr(d.address, "namespaces", "create", "still-serving")
    assert ctr(d.address, "namespaces", "ls", "-q").stdout == b"still-serving\n"


def test_incomplete_snapshotter_is_an_error_row_naming_what_it_lacks(daemon, ctr, pyctr, broken_plugin_site):
    d = daemon(env={"PYTHONPATH": broken_plugin_site})
    listing = ctr(d.address, "plugins", "ls", f"id=={INCOMPLETE.rsplit('.', 1)[1]}")
    assert plugin_rows(listing.stdout) == [("io.containerd.snapshotter.v1", "incomplete", "-", "error")]
    assert pyctr(d.address, "plugins", "ls", f"id=={INCOMPLETE.rsplit('.', 1)[1]}").stdout == listing.stdout
    detailed = ctr(d.address, "plugins", "ls", "-d")
    block = " ".join(plugin_blocks(detailed.stdout)[INCOMPLETE])
    assert f"missing {MISSING}" in block, block
    # (ctr prints exports in Go's random map order: compare the block, not the whole output)
    assert plugin_blocks(pyctr(d.address, "plugins", "ls", "-d").stdout)[INCOMPLETE] == plugin_blocks(detailed.stdout)[INCOMPLETE]
    # and no service hands it out: the snapshots service does not know it
    failed = ctr(d.address, "snapshots", "--snapshotter", "incomplete", "prepare", "k1", check=False)
    assert failed.returncode != 0
    assert b"snapshotter not loaded: incomplete" in failed.stderr, failed.stderr
    ctr(d.address, "snapshots", "--snapshotter", "native", "prepare", "k1")  # the others still serve


def test_example_snapshotter_serves_and_keeps_its_quota(daemon, ctr, example_plugin_site):
    d = daemon(config={"plugins": {EXAMPLE: {"max_snapshots": 2}}}, env={"PYTHONPATH": example_plugin_site})
    ctr(d.address, "snapshots", "--snapshotter", "example", "prepare", "k1")
    ctr(d.address, "snapshots", "--snapshotter", "example", "commit", "c1", "k1")
    ctr(d.address, "snapshots", "--snapshotter", "example", "prepare", "k2", "c1")
    out = ctr(d.address, "snapshots", "--snapshotter", "example", "ls").stdout.decode().splitlines()
    assert sorted(line.split() for line in out[1:]) == [["c1", "Committed"], ["k2", "c1", "Active"]]
    over = ctr(d.address, "snapshots", "--snapshotter", "example", "prepare", "k3", check=False)
    assert over.returncode != 0
    assert b"quota of 2 snapshots reached" in over.stderr, over.stderr


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("io.containerd.internal.v1.broken-init", "the example device is on fire"),
        ("io.containerd.internal.v1.broken-import", "a_module_that_does_not_exist"),
        ("io.containerd.internal.v1.skipper", "no example hardware on this machine"),
    ],
)
def test_required_broken_plugin_stops_the_start(daemon, broken_plugin_site, uri, reason):
    d = daemon(config={"required_plugins": [uri]}, env={"PYTHONPATH": broken_plugin_site}, wait=False)
    assert d.wait_exit() == 1
    log = d.log()
    assert uri in log and reason in log, log
    assert "Traceback" not in log
    assert not d.running
