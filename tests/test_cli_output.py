"""pyctr's output for `plugins ls` (client/cli.py), and its argument parsing.

The table and `-d` outputs must be byte for byte what ctr prints for the
same server answer (cmd/ctr/commands/plugins/plugins.go in containerd 1.6:
a Go tabwriter with minwidth 4, tabwidth 8, padding 4, padchar ' ', no
flags; rows written with "%s\\t%s\\t%s\\t%s\\t\\n" or fmt.Fprintln, which puts
a space between operands). The expected strings below are literal, worked
out from those rules: every tab-terminated cell is padded to its column's
widest cell plus 4, including the last one (hence trailing spaces), and a
column block runs over consecutive lines that have a cell in that column.
`--tree` and `--format json` are pyctr's own.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

from pycontainerd.client.cli import build_parser, main
from pycontainerd.client.commands.namespaces import cmd_ns_create, cmd_ns_ls, cmd_ns_rm
from pycontainerd.client.commands.plugins import (
    _code_name,
    cmd_plugins_ls,
    plugin_json,
    plugins_tree,
    print_plugins_detailed,
    print_plugins_table,
)
from pycontainerd.client.commands.snapshots import snapshotter_name
from pycontainerd.client.commands.version import cmd_version
from pycontainerd.client.client import PluginInfo

SKIP_MESSAGE = (
    "path /var/lib/containerd/io.containerd.snapshotter.v1.btrfs (ext4) must be a btrfs "
    "filesystem to be used with the btrfs snapshotter: skip plugin"
)
CNI_MESSAGE = "failed to load cni during init"


def info(type_, id_, requires=(), platforms=(), exports=None, capabilities=(), init_err=None, init_duration=None):
    return PluginInfo(
        type=type_,
        id=id_,
        requires=list(requires),
        platforms=list(platforms),
        exports=dict(exports or {}),
        capabilities=list(capabilities),
        init_err=init_err,
        init_duration=init_duration,
    )


TABLE_PLUGINS = [
    info("io.containerd.content.v1", "content"),
    info("io.containerd.snapshotter.v1", "btrfs", platforms=["linux/amd64"], init_err=(2, SKIP_MESSAGE)),
    info("io.containerd.snapshotter.v1", "overlayfs", platforms=["linux/arm64", "linux/amd64", "linux/amd64"]),
    info("io.containerd.grpc.v1", "cri", init_err=(2, CNI_MESSAGE)),
]


def render(fn, plugins) -> str:
    out = io.StringIO()
    fn(plugins, out)
    return out.getvalue()


# -- status ------------------------------------------------------------------------------


def test_status_is_ok_skip_or_error_as_ctr_decides():
    assert [p.status for p in TABLE_PLUGINS] == ["ok", "skip", "ok", "error"]
    # "skip plugin" anywhere in the message makes it a skip, whatever the code
    assert info("t", "i", init_err=(9, "skip plugin: no cgroup v2")).status == "skip"
    assert info("t", "i", init_err=(2, "cannot skip this")).status == "error"
    assert info("t", "i", init_err=(2, "")).status == "error"


# -- the table ----------------------------------------------------------------------------


def test_table_is_ctrs():
    assert render(print_plugins_table, TABLE_PLUGINS) == (
        "TYPE                            ID           PLATFORMS                  STATUS    \n"
        "io.containerd.content.v1        content      -                          ok        \n"
        "io.containerd.snapshotter.v1    btrfs        linux/amd64                skip      \n"
        "io.containerd.snapshotter.v1    overlayfs    linux/amd64,linux/arm64    ok        \n"
        "io.containerd.grpc.v1           cri          -                          error     \n"
    )


def test_table_columns_follow_the_widest_cell():
    plugins = [info("a", "b")]
    # every column is at least its header; minwidth 4 never beats header + 4
    assert render(print_plugins_table, plugins) == (
        "TYPE    ID    PLATFORMS    STATUS    \n"
        "a       b     -            ok        \n"
    )


def test_empty_table_is_just_the_header():
    assert render(print_plugins_table, []) == "TYPE    ID    PLATFORMS    STATUS    \n"


def test_platforms_column_is_sorted_unique_comma_joined():
    plugins = [info("t", "i", platforms=["windows/amd64", "linux/arm/v7", "linux/amd64", "linux/arm/v7"])]
    assert render(print_plugins_table, plugins).splitlines()[1] == (
        "t       i     linux/amd64,linux/arm/v7,windows/amd64    ok        "
    )


# -- detailed (-d) --------------------------------------------------------------------------


DETAILED_PLUGINS = [
    info("io.containerd.content.v1", "content"),
    info(
        "io.containerd.snapshotter.v1",
        "overlayfs",
        platforms=["linux/arm64", "linux/amd64"],
        exports={"root": "/var/lib/x", "address": "/run/a.sock"},
        capabilities=["remap-ids", "only-remap-ids"],
    ),
    info(
        "io.containerd.grpc.v1",
        "cri",
        requires=["io.containerd.event.v1", "io.containerd.service.v1"],
        init_err=(2, CNI_MESSAGE),
    ),
]


def test_detailed_is_ctrs():
    # Column 0 spans every line (all have a tab): "Capabilities:" + 4 = 17.
    # Column 1 blocks: the "\t\t\t" separators (empty cells, minwidth 4),
    # the two export lines (" address " + 4 = 13) and the two error lines
    # (" Message:" + 4 = 13). Fprintln puts a space before each value.
    assert render(print_plugins_detailed, DETAILED_PLUGINS) == (
        "Type:             io.containerd.content.v1\n"
        "ID:               content\n"
        "                         \n"
        "Type:             io.containerd.snapshotter.v1\n"
        "ID:               overlayfs\n"
        "Platforms:        linux/amd64,linux/arm64\n"
        "Exports:         \n"
        "                  address      /run/a.sock\n"
        "                  root         /var/lib/x\n"
        "Capabilities:     remap-ids,only-remap-ids\n"
        "                         \n"
        "Type:             io.containerd.grpc.v1\n"
        "ID:               cri\n"
        "Requires:        \n"
        "                  io.containerd.event.v1\n"
        "                  io.containerd.service.v1\n"
        "Error:           \n"
        "                  Code:        Unknown\n"
        "                  Message:     failed to load cni during init\n"
    )


def test_detailed_single_plain_plugin():
    # only "Type:" and "ID:" in column 0: "Type:" + 4 = 9
    assert render(print_plugins_detailed, [info("io.containerd.content.v1", "content")]) == (
        "Type:     io.containerd.content.v1\n"
        "ID:       content\n"
    )


def test_detailed_error_code_names_are_gos():
    plugins = [info("io.containerd.internal.v1", "x", init_err=(9, "no runc binary"))]
    # column 0: "Error:" + 4 = 10; column 1: " Message:" + 4 = 13
    assert render(print_plugins_detailed, plugins) == (
        "Type:      io.containerd.internal.v1\n"
        "ID:        x\n"
        "Error:    \n"
        "           Code:        FailedPrecondition\n"
        "           Message:     no runc binary\n"
    )


def test_detailed_of_nothing_is_empty():
    assert render(print_plugins_detailed, []) == ""


@pytest.mark.parametrize(
    "code, name",
    [
        (0, "OK"),
        (1, "Canceled"),  # Go spells it with one l
        (2, "Unknown"),
        (3, "InvalidArgument"),
        (4, "DeadlineExceeded"),
        (5, "NotFound"),
        (6, "AlreadyExists"),
        (7, "PermissionDenied"),
        (8, "ResourceExhausted"),
        (9, "FailedPrecondition"),
        (10, "Aborted"),
        (11, "OutOfRange"),
        (12, "Unimplemented"),
        (13, "Internal"),
        (14, "Unavailable"),
        (15, "DataLoss"),
        (16, "Unauthenticated"),
        (17, "Code(17)"),
    ],
)
def test_code_names_match_go_codes_string(code, name):
    assert _code_name(code) == name


# -- tree --------------------------------------------------------------------------------------


def test_tree_puts_each_plugin_under_the_plugins_it_requires():
    plugins = [
        info("io.containerd.content.v1", "content"),
        info("io.containerd.snapshotter.v1", "native"),
        info("io.containerd.metadata.v1", "bolt", requires=["io.containerd.content.v1", "io.containerd.snapshotter.v1"]),
        info("io.containerd.service.v1", "containers-service", requires=["io.containerd.metadata.v1"]),
        info("io.containerd.grpc.v1", "containers", requires=["io.containerd.service.v1"]),
        info(
            "io.containerd.grpc.v1",
            "cri",
            requires=["io.containerd.event.v1", "io.containerd.service.v1"],
            init_err=(2, CNI_MESSAGE),
        ),
    ]
    assert plugins_tree(plugins) == [
        "io.containerd.content.v1.content (ok)",
        "└── io.containerd.metadata.v1.bolt (ok)",
        "    └── io.containerd.service.v1.containers-service (ok)",
        "        ├── io.containerd.grpc.v1.containers (ok)",
        "        └── io.containerd.grpc.v1.cri (error) [no plugin for: io.containerd.event.v1]",
        "io.containerd.snapshotter.v1.native (ok)",
        "└── io.containerd.metadata.v1.bolt (see above)",
    ]


def test_tree_under_every_plugin_of_the_required_type_with_vertical_rules():
    plugins = [
        info("io.containerd.snapshotter.v1", "native"),
        info("io.containerd.snapshotter.v1", "overlayfs", init_err=(2, "no overlay: skip plugin")),
        info("io.containerd.service.v1", "snapshots-service", requires=["io.containerd.snapshotter.v1"]),
        info("io.containerd.grpc.v1", "snapshots", requires=["io.containerd.service.v1"]),
        info("io.containerd.internal.v1", "opt"),
    ]
    assert plugins_tree(plugins) == [
        "io.containerd.snapshotter.v1.native (ok)",
        "└── io.containerd.service.v1.snapshots-service (ok)",
        "    └── io.containerd.grpc.v1.snapshots (ok)",
        "io.containerd.snapshotter.v1.overlayfs (skip)",
        "└── io.containerd.service.v1.snapshots-service (see above)",
        "io.containerd.internal.v1.opt (ok)",
    ]


def test_tree_branches_and_a_star_plugin_under_every_other_plugin():
    plugins = [
        info("io.containerd.content.v1", "content"),
        info("io.containerd.metadata.v1", "bolt", requires=["io.containerd.content.v1"]),
        info("io.containerd.grpc.v1", "introspection", requires=["*"]),
    ]
    assert plugins_tree(plugins) == [
        "io.containerd.content.v1.content (ok)",
        "├── io.containerd.metadata.v1.bolt (ok)",
        "│   └── io.containerd.grpc.v1.introspection (ok)",
        "└── io.containerd.grpc.v1.introspection (see above)",
    ]


def test_tree_draws_a_plugin_required_by_many_once_and_refers_back_by_type():
    """The gRPC plugins require every service: drawn under the first, one
    back-reference line under each of the others; new children come before
    the back-references, which are grouped per type in brace form."""
    services = ["namespaces-service", "leases-service", "content-service"]
    plugins = [
        info("io.containerd.event.v1", "exchange"),
        *[info("io.containerd.service.v1", s, requires=["io.containerd.event.v1"]) for s in services],
        info("io.containerd.grpc.v1", "namespaces", requires=["io.containerd.service.v1"]),
        info("io.containerd.grpc.v1", "leases", requires=["io.containerd.service.v1"]),
        info("io.containerd.internal.v1", "restart", requires=["io.containerd.service.v1", "io.containerd.event.v1"]),
        info("io.containerd.grpc.v1", "events", requires=["io.containerd.event.v1"]),
    ]
    assert plugins_tree(plugins) == [
        "io.containerd.event.v1.exchange (ok)",
        "├── io.containerd.service.v1.namespaces-service (ok)",
        "│   ├── io.containerd.grpc.v1.namespaces (ok)",
        "│   ├── io.containerd.grpc.v1.leases (ok)",
        "│   └── io.containerd.internal.v1.restart (ok)",
        "├── io.containerd.service.v1.leases-service (ok)",
        "│   ├── io.containerd.grpc.v1.{namespaces,leases} (see above)",
        "│   └── io.containerd.internal.v1.restart (see above)",
        "├── io.containerd.service.v1.content-service (ok)",
        "│   ├── io.containerd.grpc.v1.{namespaces,leases} (see above)",
        "│   └── io.containerd.internal.v1.restart (see above)",
        "├── io.containerd.grpc.v1.events (ok)",
        "└── io.containerd.internal.v1.restart (see above)",
    ]


def test_tree_refers_back_to_a_plugin_drawn_inside_an_earlier_siblings_subtree():
    plugins = [
        info("io.containerd.event.v1", "exchange"),
        info("io.containerd.metadata.v1", "bolt", requires=["io.containerd.event.v1"]),
        info("io.containerd.service.v1", "content-service",
             requires=["io.containerd.metadata.v1", "io.containerd.event.v1"]),
    ]
    # content-service is met first under bolt, so exchange refers back to it
    assert plugins_tree(plugins) == [
        "io.containerd.event.v1.exchange (ok)",
        "├── io.containerd.metadata.v1.bolt (ok)",
        "│   └── io.containerd.service.v1.content-service (ok)",
        "└── io.containerd.service.v1.content-service (see above)",
    ]


def test_tree_survives_a_star_requirement_cycle():
    """containerd's introspection service requires "*", and the gRPC
    introspection plugin requires every service: a cycle, drawn once."""
    plugins = [
        info("io.containerd.service.v1", "introspection-service", requires=["*"]),
        info("io.containerd.grpc.v1", "introspection", requires=["io.containerd.service.v1"]),
    ]
    # nothing requires nothing here: the walk starts at the first plugin listed
    assert plugins_tree(plugins) == [
        "io.containerd.service.v1.introspection-service (ok)",
        "└── io.containerd.grpc.v1.introspection (ok)",
        "    └── io.containerd.service.v1.introspection-service (see above)",
    ]


def test_tree_plugin_whose_required_types_are_all_missing_is_a_root_with_a_note():
    plugins = [info("io.containerd.grpc.v1", "tasks", requires=["io.containerd.runtime.v2", "io.containerd.monitor.v1"])]
    assert plugins_tree(plugins) == [
        "io.containerd.grpc.v1.tasks (ok) [no plugin for: io.containerd.runtime.v2, io.containerd.monitor.v1]"
    ]


def test_tree_of_nothing():
    assert plugins_tree([]) == []


# -- json ----------------------------------------------------------------------------------------


def test_json_has_every_field():
    ok = info(
        "io.containerd.snapshotter.v1",
        "overlayfs",
        requires=["io.containerd.content.v1"],
        platforms=["linux/amd64"],
        exports={"root": "/var/lib/x"},
        capabilities=["remap-ids"],
        init_duration=0.0125,
    )
    assert plugin_json(ok) == {
        "type": "io.containerd.snapshotter.v1",
        "id": "overlayfs",
        "requires": ["io.containerd.content.v1"],
        "platforms": ["linux/amd64"],
        "exports": {"root": "/var/lib/x"},
        "capabilities": ["remap-ids"],
        "status": "ok",
        "error": None,
        "init_duration_seconds": 0.0125,
    }


def test_json_of_failed_and_skipped_plugins():
    failed = plugin_json(TABLE_PLUGINS[3])
    assert failed["status"] == "error"
    assert failed["error"] == {"code": "Unknown", "message": CNI_MESSAGE}
    assert failed["init_duration_seconds"] is None  # a containerd server does not send it
    skipped = plugin_json(TABLE_PLUGINS[1])
    assert skipped["status"] == "skip"
    assert skipped["error"] == {"code": "Unknown", "message": SKIP_MESSAGE}


def test_json_is_serialisable_and_round_trips():
    text = json.dumps([plugin_json(p) for p in TABLE_PLUGINS + DETAILED_PLUGINS], indent=2)
    back = json.loads(text)
    assert [(p["type"], p["id"], p["status"]) for p in back[:4]] == [
        ("io.containerd.content.v1", "content", "ok"),
        ("io.containerd.snapshotter.v1", "btrfs", "skip"),
        ("io.containerd.snapshotter.v1", "overlayfs", "ok"),
        ("io.containerd.grpc.v1", "cri", "error"),
    ]


# -- argument parsing ------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_plugins_ls_detailed_with_namespace_and_filter():
    args = parse("-n", "x", "plugins", "ls", "-d", "type==a")
    assert args.namespace == "x"
    assert args.detailed is True and args.quiet is False and args.tree is False
    assert args.format == "table"
    assert args.filters == ["type==a"]
    assert args.fn is cmd_plugins_ls


def test_plugin_list_aliases_and_long_flags():
    args = parse("--namespace", "k8s.io", "plugin", "list", "--quiet", "type==io.containerd.snapshotter.v1", "id==native")
    assert args.namespace == "k8s.io"
    assert args.quiet is True
    assert args.filters == ["type==io.containerd.snapshotter.v1", "id==native"]
    assert args.fn is cmd_plugins_ls


def test_plugins_ls_tree_and_json():
    assert parse("plugins", "ls", "--tree").tree is True
    assert parse("plugins", "ls", "--format", "json").format == "json"
    assert parse("plugins", "ls").filters == []


def test_unknown_format_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("plugins", "ls", "--format", "yaml")
    assert exit_info.value.code == 2
    assert "invalid choice: 'yaml'" in capsys.readouterr().err


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse()
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        parse("plugins")


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pyctr")
    for word in ("--address", "--namespace", "--timeout", "--connect-timeout", "plugins", "namespaces", "version"):
        assert word in out


def test_global_flags_and_durations():
    args = parse("-a", "/run/x.sock", "--timeout", "500ms", "--connect-timeout", "1m", "--debug", "version")
    assert args.address == "/run/x.sock"
    assert args.timeout == pytest.approx(0.5)
    assert args.connect_timeout == pytest.approx(60.0)
    assert args.debug is True
    assert args.fn is cmd_version
    assert parse("--timeout", "2", "version").timeout == 2.0
    defaults = parse("version")
    assert (defaults.timeout, defaults.connect_timeout, defaults.namespace) == (None, 10.0, None)


def test_bad_duration_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("--timeout", "soon", "version")
    assert exit_info.value.code == 2
    assert "invalid duration 'soon'" in capsys.readouterr().err


def test_address_defaults_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONTAINERD_ADDRESS", "/run/containerd/containerd.sock")
    assert parse("version").address == "/run/containerd/containerd.sock"
    monkeypatch.delenv("CONTAINERD_ADDRESS")
    assert parse("version").address == "/run/pycontainerd/pycontainerd.sock"


def test_namespaces_commands_and_aliases():
    args = parse("ns", "c", "dev", "team=infra")
    assert args.fn is cmd_ns_create and args.args == ["dev", "team=infra"]
    assert parse("namespaces", "create", "dev").fn is cmd_ns_create
    assert parse("namespace", "ls", "-q").quiet is True
    assert parse("ns", "list").fn is cmd_ns_ls
    rm = parse("ns", "rm", "-c", "a", "b")
    assert rm.fn is cmd_ns_rm and rm.cgroup is True and rm.names == ["a", "b"]


def test_help_shows_the_defaults_and_the_environment(capsys):
    """As `ctr --help` does: each global flag's default and the variable it
    reads, and the environment variables pyctr honours, with their defaults."""
    with pytest.raises(SystemExit):
        parse("--help")
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes
    assert 'address for containerd\'s GRPC server (default: "/run/pycontainerd/pycontainerd.sock") ' \
           '[$CONTAINERD_ADDRESS]' in out
    assert 'namespace to use with commands (default: "default") [$CONTAINERD_NAMESPACE]' in out
    assert "timeout for connecting to the daemon (default: 10s)" in out
    environment = out.split("environment (a flag given on the command line wins):", 1)[1]
    assert "CONTAINERD_ADDRESS the daemon's socket (default: /run/pycontainerd/pycontainerd.sock;" in environment
    assert "a real containerd listens on /run/containerd/containerd.sock" in environment
    assert "CONTAINERD_NAMESPACE the namespace (default: default)" in environment
    assert "CONTAINERD_SNAPSHOTTER the snapshotter of `pyctr snapshots` (default: overlayfs)" in environment


def test_snapshots_help_names_the_default_snapshotter_and_its_variable(capsys):
    with pytest.raises(SystemExit):
        parse("snapshots", "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert '--snapshotter NAME snapshotter name (default: "overlayfs") [$CONTAINERD_SNAPSHOTTER]' in out


def test_snapshotter_is_the_flag_then_the_environment_then_overlayfs(monkeypatch):
    """ctr's order (cmd/ctr/commands/snapshots, client.SnapshotService):
    a real containerd refuses an empty name, so pyctr never sends one."""
    monkeypatch.delenv("CONTAINERD_SNAPSHOTTER", raising=False)
    assert snapshotter_name(parse("snapshots", "ls").snapshotter) == "overlayfs"
    assert snapshotter_name(parse("snapshots", "--snapshotter", "native", "ls").snapshotter) == "native"
    monkeypatch.setenv("CONTAINERD_SNAPSHOTTER", "btrfs")
    assert snapshotter_name(parse("snapshots", "ls").snapshotter) == "btrfs"
    assert snapshotter_name(parse("snapshots", "--snapshotter", "native", "ls").snapshotter) == "native"
    monkeypatch.setenv("CONTAINERD_SNAPSHOTTER", "")
    assert snapshotter_name(parse("snapshots", "ls").snapshotter) == "overlayfs"


# -- dialing: what is wrong with the address, at once --------------------------------------------


@pytest.fixture
def short_tmp():
    d = tempfile.mkdtemp(prefix="pyctr-dial-", dir="/tmp")  # sun_path is 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _pyctr(capsys, *argv: str) -> tuple[int, str, float]:
    started = time.monotonic()
    rc = main(list(argv))
    return rc, capsys.readouterr().err, time.monotonic() - started


# a bound on "at once" far below the 10 s dial timeout, far above a slow start
AT_ONCE = 5.0


def test_a_missing_socket_fails_at_once_saying_so(capsys, short_tmp):
    path = os.path.join(short_tmp, "nothing.sock")
    rc, err, took = _pyctr(capsys, "--address", path, "version")
    assert (rc, err) == (1, f'pyctr: failed to dial "{path}": the path does not exist (is the daemon running?)\n')
    assert took < AT_ONCE
    rc, err, took = _pyctr(capsys, "--address", "unix://" + path, "plugins", "ls")
    assert (rc, err) == (1, f'pyctr: failed to dial "unix://{path}": the path does not exist '
                            "(is the daemon running?)\n")
    assert took < AT_ONCE


def test_a_path_that_is_not_a_socket_fails_at_once_saying_what_it_is(capsys, short_tmp):
    regular = os.path.join(short_tmp, "file")
    open(regular, "w").close()
    rc, err, took = _pyctr(capsys, "-a", regular, "version")
    assert (rc, err) == (1, f'pyctr: failed to dial "{regular}": not a socket (a regular file)\n')
    assert took < AT_ONCE
    rc, err, took = _pyctr(capsys, "-a", short_tmp, "namespaces", "ls")
    assert (rc, err) == (1, f'pyctr: failed to dial "{short_tmp}": not a socket (a directory)\n')
    assert took < AT_ONCE


def test_a_socket_nobody_listens_on_fails_at_once(capsys, short_tmp):
    """What a daemon killed with SIGKILL leaves behind: the socket file."""
    path = os.path.join(short_tmp, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()
    rc, err, took = _pyctr(capsys, "-a", path, "version")
    assert (rc, err) == (1, f'pyctr: failed to dial "{path}": connection refused '
                            "(a socket file with nobody listening: is the daemon running?)\n")
    assert took < AT_ONCE


def test_a_listening_socket_nobody_accepts_on_still_meets_the_connect_timeout(capsys, short_tmp):
    path = os.path.join(short_tmp, "deaf.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        s.listen(16)  # connections queue, nobody accepts them
        rc, err, took = _pyctr(capsys, "-a", path, "--connect-timeout", "1s", "version")
    assert (rc, err) == (1, f'pyctr: failed to dial "{path}": context deadline exceeded (no gRPC answer '
                            "within 1s: is it a containerd socket? is the daemon stuck?)\n")
    assert took >= 1.0


def test_a_server_that_does_not_speak_grpc_still_meets_the_connect_timeout(capsys, short_tmp):
    path = os.path.join(short_tmp, "http.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(16)
    stop = threading.Event()

    def answer_in_http() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                try:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:  # the client already hung up (pyctr's own probe does)
                    pass

    thread = threading.Thread(target=answer_in_http)
    thread.start()
    try:
        rc, err, took = _pyctr(capsys, "-a", path, "--connect-timeout", "1500ms", "version")
    finally:
        stop.set()
        thread.join()
        server.close()
    assert (rc, err) == (1, f'pyctr: failed to dial "{path}": context deadline exceeded (no gRPC answer '
                            "within 1.5s: is it a containerd socket? is the daemon stuck?)\n")
    assert took >= 1.5


def test_content_active_timeout_flag_leaves_the_global_timeout_alone():
    """ctr's `content active -t` (accepted, unused) once replaced the global
    --timeout with its raw text, and the call then failed on it."""
    args = parse("--timeout", "5s", "content", "active", "-t", "1m", "ref")
    assert args.timeout == pytest.approx(5.0)
    assert args.fetch_timeout == pytest.approx(60.0)
    assert parse("content", "active").timeout is None
