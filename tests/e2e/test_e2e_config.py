"""config.toml as a user meets it: mistakes stop the start with a message
that says where, and `pycontainerd config` prints what the daemon uses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import tomllib

import pytest

from e2e_support import (
    CONTAINERD, PYCONTAINERD, START_TIMEOUT, STOP_TIMEOUT, answers, clean_env, plugin_rows, run_pycontainerd,
)

pytestmark = pytest.mark.e2e


def _write(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def _base(directory: str) -> str:
    return (
        f'version = 2\nroot = "{directory}/root"\nstate = "{directory}/state"\n'
        f'[grpc]\naddress = "{directory}/run/pcd.sock"\n'
    )


def _fails(*args: str) -> str:
    """Run pycontainerd, expect exit 1 and a message without a traceback."""
    proc = run_pycontainerd(*args)
    err = proc.stderr.decode()
    assert proc.returncode == 1, f"exit {proc.returncode}\n{err}"
    assert "Traceback" not in err, err
    assert err.strip(), "no message"
    return err


def test_missing_config_file(daemon):
    err = _fails("--config", "/nonexistent/config.toml")
    assert "/nonexistent/config.toml" in err and "does not exist" in err


def test_unknown_key_in_grpc_names_file_table_and_suggestion(daemon):
    d = daemon.tempdir()
    path = _write(d, "config.toml", _base(d).replace("address =", "adress ="))
    err = _fails("--config", path)
    assert path in err
    assert "[grpc]" in err
    assert '"adress"' in err and '"address"' in err  # the key and the suggestion
    assert not os.path.exists(f"{d}/root"), "nothing may happen before the config is valid"


def test_bad_toml_names_line_and_column(daemon):
    d = daemon.tempdir()
    path = _write(d, "config.toml", 'version = 2\n\n[grpc]\naddress = = "/x.sock"\n')
    err = _fails("--config", path)
    assert path in err
    assert re.search(r"line 4, column 11\b", err), err


def test_bad_toml_unterminated_array_is_not_accepted(daemon):
    d = daemon.tempdir()
    path = _write(d, "config.toml", f'version = 2\nroot = "{d}/root"\ndisabled_plugins = ["io.containerd.grpc.v1.events",\n')
    err = _fails("--config", path)
    assert path in err and "line" in err and "column" in err


def test_required_plugin_that_does_not_exist(daemon):
    d = daemon.tempdir()
    path = _write(d, "config.toml", 'required_plugins = ["io.containerd.snapshotter.v1.nope"]\n' + _base(d))
    err = _fails("--config", path)
    assert "io.containerd.snapshotter.v1.nope" in err
    assert not os.path.exists(f"{d}/run/pcd.sock")


def test_required_plugin_that_is_disabled(daemon):
    d = daemon.tempdir()
    path = _write(
        d,
        "config.toml",
        'required_plugins = ["io.containerd.grpc.v1.events"]\n'
        'disabled_plugins = ["io.containerd.grpc.v1.events"]\n' + _base(d),
    )
    err = _fails("--config", path)
    assert "io.containerd.grpc.v1.events" in err and "disabled" in err


def test_disabled_plugin_is_not_listed(daemon, ctr):
    d = daemon(config={"disabled_plugins": ["io.containerd.grpc.v1.events"]})
    rows = plugin_rows(ctr(d.address, "plugins", "ls").stdout)
    assert ("io.containerd.grpc.v1", "events") not in [(t, i) for t, i, _, _ in rows]
    assert ("io.containerd.grpc.v1", "version") in [(t, i) for t, i, _, _ in rows]
    assert {s for _, i, _, s in rows if i != "btrfs"} == {"ok"}  # btrfs skips off btrfs
    # the service is really gone, not only hidden
    out = ctr(d.address, "events", check=False, timeout=10)
    assert out.returncode != 0 and b"Unimplemented" in out.stderr, out


def test_config_default_parses_and_has_every_plugin_section(example_plugin_site):
    proc = run_pycontainerd("config", "default", check=True, env={"PYTHONPATH": example_plugin_site})
    cfg = tomllib.loads(proc.stdout.decode())
    assert cfg["version"] == 2
    assert cfg["root"] == "/var/lib/pycontainerd"
    assert cfg["state"] == "/run/pycontainerd"
    assert cfg["grpc"]["address"] == "/run/pycontainerd/pycontainerd.sock"
    # a plugin with a config dataclass gets its section, with the defaults
    assert cfg["plugins"]["io.containerd.snapshotter.v1.example"] == {"root_path": "", "max_snapshots": 100}
    # and what it prints is a config the daemon accepts as it is
    assert "Traceback" not in proc.stderr.decode()


def test_config_default_is_a_valid_config(daemon, ctr):
    text = run_pycontainerd("config", "default", check=True).stdout.decode()
    cfg = tomllib.loads(text)
    d = daemon.tempdir()
    cfg.update(root=f"{d}/root", state=f"{d}/state")
    cfg["grpc"]["address"] = f"{d}/run/pcd.sock"
    started = daemon(config=cfg)
    rows = plugin_rows(ctr(started.address, "plugins", "ls").stdout)
    assert {s for _, i, _, s in rows if i != "btrfs"} == {"ok"}  # btrfs skips off btrfs


def test_config_dump_merges_imports(daemon, example_plugin_site):
    d = daemon.tempdir()
    main = _write(
        d,
        "config.toml",
        'imports = ["conf.d/*.toml"]\n'
        'disabled_plugins = ["io.containerd.grpc.v1.healthcheck"]\n' + _base(d) + "max_recv_message_size = 1024\n"
        '[plugins."io.containerd.snapshotter.v1.example"]\nmax_snapshots = 7\n',
    )
    _write(
        d,
        "conf.d/10-state.toml",
        'version = 2\nstate = "/run/from-import"\ndisabled_plugins = ["io.containerd.grpc.v1.events"]\n'
        '[plugins."io.containerd.snapshotter.v1.example"]\nroot_path = "/srv/example"\n',
    )
    env = {"PYTHONPATH": example_plugin_site}
    proc = run_pycontainerd("config", "dump", "--config", main, check=True, env=env)
    cfg = tomllib.loads(proc.stdout.decode())
    assert cfg["root"] == f"{d}/root"  # from the main file
    assert cfg["state"] == "/run/from-import"  # an import is merged over what came before
    assert cfg["grpc"]["max_recv_message_size"] == 1024
    assert cfg["grpc"]["address"] == f"{d}/run/pcd.sock"
    assert sorted(cfg["disabled_plugins"]) == ["io.containerd.grpc.v1.events", "io.containerd.grpc.v1.healthcheck"]
    # plugin tables merge key by key
    assert cfg["plugins"]["io.containerd.snapshotter.v1.example"] == {"root_path": "/srv/example", "max_snapshots": 7}
    assert cfg["imports"] == [f"{d}/conf.d/10-state.toml"]
    # the same with --config before the subcommand
    again = run_pycontainerd("--config", main, "config", "dump", check=True, env=env)
    assert again.stdout == proc.stdout


def test_unknown_key_in_an_imported_file_names_that_file(daemon):
    d = daemon.tempdir()
    main = _write(d, "config.toml", 'imports = ["extra.toml"]\n' + _base(d))
    extra = _write(d, "extra.toml", "version = 2\n[debug]\nlevle = \"debug\"\n")
    err = _fails("--config", main)
    assert extra in err and "[debug]" in err and '"level"' in err


# -- every mistake is one line through the real binary, and leaves nothing behind ----------

GC = 'plugins."io.containerd.gc.v1.scheduler"'


def _leftovers(d: str) -> list[str]:
    """What a refused start left in `d` besides the config file."""
    out = []
    for top, dirs, files in os.walk(d):
        out += [os.path.relpath(os.path.join(top, n), d) for n in dirs + files]
    return sorted(p for p in out if p != "config.toml")


def _refused(d: str, text: str) -> str:
    """Start on `text`; expect exit 1, exactly one stderr line, no traceback,
    nothing created, and return that line."""
    path = _write(d, "config.toml", text)
    proc = run_pycontainerd("--config", path)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, f"exit {proc.returncode}\n{err}"
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert _leftovers(d) == [], _leftovers(d)
    return err.strip()


@pytest.mark.parametrize(
    "extra, expected",
    [
        ('disabled_plugins = ["io.containerd.grpc.v1.events", 7]\n', "disabled_plugins[1] = 7: expected str"),
        ('required_plugins = [true]\n', "required_plugins[0] = True: expected str"),
        ("[grpc]\nmax_recv_message_size = 2147483648\n",
         "grpc.max_recv_message_size = 2147483648: out of range: must be in [1, 2147483647]"),
        ("[grpc]\nmax_send_message_size = 0\n", "grpc.max_send_message_size = 0: out of range"),
        ("[grpc]\nuid = -1\n", "grpc.uid = -1: out of range: must be in [0, 4294967294]"),
        ("[grpc]\ngid = -5\n", "grpc.gid = -5: out of range"),
        ("[ttrpc]\nuid = -1\n", "ttrpc.uid = -1: out of range"),
        ('[grpc]\naddress = ""\n', "[grpc] address is empty"),
        ('[grpc]\naddress = "tcp://127.0.0.1:9000"\n', "[grpc] address 'tcp://127.0.0.1:9000' is not a path"),
        ('[grpc]\ntcp_address = "127.0.0.1:9000"\n', "[grpc] tcp_address '127.0.0.1:9000': serving on TCP is not supported"),
        ('[debug]\nlevel = "loud"\n', "debug.level = 'loud': must be one of"),
        (f'[{GC}]\nstartup_delay = "5 parsecs"\n',
         f"{GC}.startup_delay = '5 parsecs': invalid duration: "
         'time: unknown unit " parsecs" in duration "5 parsecs"'),
        (f'[{GC}]\nschedule_delay = "10"\n', f"{GC}.schedule_delay = '10': invalid duration"),
        (f"[{GC}]\npause_threshold = 0.6\n", f"{GC}.pause_threshold = 0.6: out of range: must be in (0, 0.5]"),
        (f"[{GC}]\npause_threshold = 0.0\n", f"{GC}.pause_threshold = 0.0: out of range: must be in (0, 0.5]"),
        (f"[{GC}]\ndeletion_threshold = -1\n", f"{GC}.deletion_threshold = -1: out of range: must be >= 0"),
        (f"[{GC}]\nmutation_threshold = -100\n", f"{GC}.mutation_threshold = -100: out of range: must be >= 0"),
        ('[timeouts]\n"io.containerd.timeout.shim.load" = "soon"\n',
         'timeouts."io.containerd.timeout.shim.load" = \'soon\': invalid duration'),
        ('[stream_processors."x"]\npath = "/bin/true"\nargz = []\n',
         'unknown key "argz" in [stream_processors."x"]; did you mean "args"?'),
    ],
    ids=[
        "disabled-not-string", "required-not-string", "recv-size-overflows", "send-size-zero", "negative-uid",
        "negative-gid", "negative-ttrpc-uid", "empty-address", "tcp-address-as-address", "tcp_address", "log-level",
        "gc-duration", "gc-duration-without-unit", "pause-threshold-high", "pause-threshold-zero",
        "deletion-threshold-negative", "mutation-threshold-negative", "timeout-duration", "stream-processor-key",
    ],
)
def test_config_mistake_is_one_line_naming_file_and_key(daemon, extra, expected):
    d = daemon.tempdir()
    base = _base(d)  # ends with its [grpc] table
    if extra.startswith("[grpc]\naddress"):
        text = base.replace(f'address = "{d}/run/pcd.sock"\n', extra.split("\n", 1)[1])
    elif extra.startswith("[grpc]"):
        text = base + extra.split("\n", 1)[1]
    elif extra.startswith("["):
        text = base + extra
    else:
        text = extra + base
    line = _refused(d, text)
    assert line.startswith("pycontainerd: ") and str(os.path.join(d, "config.toml")) in line, line
    assert expected in line, line


def test_invalid_gc_duration_stops_the_start_instead_of_dropping_services(daemon):
    # before: the GC plugin failed alone and the leases service (which needs
    # it) silently vanished from a daemon that otherwise served
    d = daemon.tempdir()
    line = _refused(d, _base(d) + f'[{GC}]\nstartup_delay = "1 fortnight"\n')
    assert f"[{GC}]"[1:-1] + ".startup_delay" in line


def test_binary_garbage_names_the_file(daemon):
    d = daemon.tempdir()
    path = os.path.join(d, "config.toml")
    with open(path, "wb") as f:
        f.write(b"version = 2\n\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe\x00garbage\n")
    proc = run_pycontainerd("--config", path)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.strip() == f"pycontainerd: {path}: not a TOML file: invalid UTF-8 at byte 22"  # the 0xff
    with open(path, "wb") as f:  # valid UTF-8, but a NUL byte: bad TOML with its place
        f.write(b"version = 2\nroot = \x00\n")
    err = run_pycontainerd("--config", path).stderr.decode()
    assert len(err.splitlines()) == 1 and path in err and "invalid TOML at line 2, column 8" in err, err


@pytest.mark.parametrize("which", ["root", "state"])
def test_root_or_state_that_is_a_file_is_refused_and_kept(daemon, which):
    d = daemon.tempdir()
    target = os.path.join(d, which)
    with open(target, "w") as f:
        f.write("mine\n")
    path = _write(d, "config.toml", _base(d))
    proc = run_pycontainerd("--config", path)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.strip() == f"pycontainerd: {which} {target} is not a directory"
    with open(target) as f:
        assert f.read() == "mine\n"
    assert sorted(os.listdir(d)) == ["config.toml", which]  # no socket directory, nothing else


# -- containerd's own config (issue 11) ------------------------------------------------------


def _containerd_default(d: str) -> str:
    """`containerd config default` verbatim, with only root, state and the socket moved into `d`."""
    if not os.path.exists(CONTAINERD):
        pytest.skip(f"{CONTAINERD} is not installed")
    text = subprocess.run([CONTAINERD, "config", "default"], capture_output=True, check=True, timeout=30).stdout.decode()
    moved = re.sub(r'(?m)^root = ".*"$', f'root = "{d}/root"', text, count=1)
    moved = re.sub(r'(?m)^state = ".*"$', f'state = "{d}/state"', moved, count=1)
    moved = moved.replace('address = "/run/containerd/containerd.sock"', f'address = "{d}/c.sock"', 1)
    changed = [(a, b) for a, b in zip(text.splitlines(), moved.splitlines()) if a != b]
    assert len(changed) == 3 and len(text.splitlines()) == len(moved.splitlines()), changed
    return _write(d, "config.toml", moved)


def test_containerd_config_default_starts_and_ctr_talks_to_it(daemon, ctr):
    d = daemon.tempdir()
    path = _containerd_default(d)
    log_path = os.path.join(d, "daemon.log")
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([PYCONTAINERD, "--config", path], stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, env=clean_env())
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(f"{d}/c.sock") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(log_path) as f:
            log = f.read()
        assert answers(f"{d}/c.sock"), log
        rows = plugin_rows(ctr(f"{d}/c.sock", "plugins", "ls").stdout)
        assert {s for _, i, _, s in rows if i != "btrfs"} == {"ok"}, rows
        assert ("io.containerd.gc.v1", "scheduler") in [(t, i) for t, i, _, _ in rows]
        assert b"Server:" in ctr(f"{d}/c.sock", "version").stdout
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT) == 0
    with open(log_path) as f:
        log = f.read()
    assert "Traceback" not in log
    # the plugins we do not have: one warning for all; what we cannot honour: one warning each
    ignored = [line for line in log.splitlines() if "not registered is ignored" in line]
    assert len(ignored) == 1 and "io.containerd.grpc.v1.cri" in ignored[0], ignored
    inert = [line for line in log.splitlines() if "has no effect" in line]
    assert len(inert) == 2, inert
    assert "stream_processors" in inert[0] and "io.containerd.timeout.bolt.open" in inert[1], inert
    assert not os.path.exists(f"{d}/c.sock")


def _walk_labels(address: str, key: str, *filters: str) -> dict[str, str] | None:
    """The labels a List (Walk) of the overlayfs snapshotter reports for `key`."""
    import grpc

    from pycontainerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc

    with grpc.insecure_channel("unix:" + address) as channel:
        stub = snapshots_pb2_grpc.SnapshotsStub(channel)
        request = snapshots_pb2.ListSnapshotsRequest(snapshotter="overlayfs", filters=list(filters))
        metadata = [("containerd-namespace", "default")]
        for reply in stub.List(request, metadata=metadata, timeout=10):
            for info in reply.info:
                if info.name == key:
                    return dict(info.labels)
    return None


def test_overlayfs_upperdir_label(daemon, ctr):
    d = daemon(config={"plugins": {"io.containerd.snapshotter.v1.overlayfs": {"upperdir_label": True}}})
    if ("io.containerd.snapshotter.v1", "overlayfs") not in [
        (t, i) for t, i, _, s in plugin_rows(ctr(d.address, "plugins", "ls").stdout) if s == "ok"
    ]:
        pytest.skip("overlayfs cannot be used here")
    ctr(d.address, "snapshots", "--snapshotter", "overlayfs", "prepare", "active-1")
    ctr(d.address, "snapshots", "--snapshotter", "overlayfs", "label", "active-1", "mine=1")
    info = json.loads(ctr(d.address, "snapshots", "--snapshotter", "overlayfs", "info", "active-1").stdout)
    upper = info["Labels"]["containerd.io/snapshot/overlay.upperdir"]
    assert info["Labels"]["mine"] == "1"
    root = os.path.join(d.root, "io.containerd.snapshotter.v1.overlayfs", "snapshots")
    assert os.path.dirname(os.path.dirname(upper)) == root and os.path.basename(upper) == "fs"
    assert os.path.isdir(upper)
    # the mount's upperdir is that directory
    mounts = ctr(d.address, "snapshots", "--snapshotter", "overlayfs", "mounts", "/mnt", "active-1").stdout.decode()
    assert upper in mounts, mounts
    # Update and Walk (List) report it too
    ctr(d.address, "snapshots", "--snapshotter", "overlayfs", "label", "active-1", "mine=2")
    info = json.loads(ctr(d.address, "snapshots", "--snapshotter", "overlayfs", "info", "active-1").stdout)
    assert (info["Labels"]["mine"], info["Labels"]["containerd.io/snapshot/overlay.upperdir"]) == ("2", upper)
    assert _walk_labels(d.address, "active-1")["containerd.io/snapshot/overlay.upperdir"] == upper
    # as in containerd, List's filters see it (the metadata layer merges the snapshotter's labels)
    assert _walk_labels(d.address, "active-1", 'labels."containerd.io/snapshot/overlay.upperdir"') is not None
    # without the option, no label
    plain = daemon()
    ctr(plain.address, "snapshots", "--snapshotter", "overlayfs", "prepare", "active-1")
    info = json.loads(ctr(plain.address, "snapshots", "--snapshotter", "overlayfs", "info", "active-1").stdout)
    assert "containerd.io/snapshot/overlay.upperdir" not in (info.get("Labels") or {})
