"""config.toml as a user meets it: mistakes stop the start with a message
that says where, and `pycontainerd config` prints what the daemon uses."""

from __future__ import annotations

import os
import re
import tomllib

import pytest

from e2e_support import plugin_rows, run_pycontainerd

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
