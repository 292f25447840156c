"""How the daemon loads plugins and what it gives them, in-process over the
real socket: contracts checked at load, slow inits logged, background tasks
owned (and cancelled newest first) by the daemon, the namespaced views the
metadata plugin hands out, and proxy plugins as real clients."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from pycontainerd.core import daemon as daemonmod
from pycontainerd.core.registry import PluginType, Registration
from pycontainerd.testing import InProcessDaemon, plugin_module


# -- contracts ---------------------------------------------------------------


class OnlyInfo:
    closed = False

    async def info(self, dgst):
        raise NotImplementedError

    def close(self):
        OnlyInfo.closed = True


async def init_only_info(ic):
    return OnlyInfo()


async def init_not_a_differ(ic):
    return object()


def test_instances_missing_contract_methods_are_error_rows_naming_them():
    mod = plugin_module(
        "contracts",
        Registration(type=PluginType.CONTENT, id="half", init=init_only_info),
        Registration(type=PluginType.DIFF, id="nothing", init=init_not_a_differ),
    )
    with InProcessDaemon(plugins=[mod]) as d, d.client() as c:
        rows = {p.uri: p for p in c.plugins()}
        half = rows["io.containerd.content.v1.half"]
        assert half.status == "error"
        assert half.init_err[1] == (
            "not a content store (pycontainerd.pkg.content.Store): missing update, walk, delete, reader_at, "
            "status, list_statuses, abort, writer")
        assert rows["io.containerd.differ.v1.nothing"].init_err[1] == (
            "not a differ (pycontainerd.pkg.diff.Applier and Comparer): missing apply, compare")
        # the built-ins load and the local store is still the one in use
        assert rows["io.containerd.content.v1.content"].status == "ok"
        assert rows["io.containerd.service.v1.content-service"].status == "ok"
        assert rows["io.containerd.service.v1.diff-service"].status == "ok"
    assert OnlyInfo.closed  # what it held was released at once


# -- slow inits ----------------------------------------------------------------


async def init_slow(ic):
    await asyncio.sleep(0.3)
    return object()


async def init_fast(ic):
    return object()


def test_a_slow_init_is_logged_as_a_warning_with_plugin_and_duration(monkeypatch):
    monkeypatch.setattr(daemonmod, "SLOW_INIT_SECONDS", 0.25)  # the real one is 1 s
    mod = plugin_module(
        "slow",
        Registration(type=PluginType.INTERNAL, id="slow", init=init_slow),
        Registration(type=PluginType.INTERNAL, id="fast", init=init_fast),
    )
    with capture_logs() as logs:
        with InProcessDaemon(plugins=[mod]):
            pass
    slow = {e["plugin"]: e for e in logs if e["event"] == "slow plugin init"}
    assert "io.containerd.internal.v1.fast" not in slow
    entry = slow["io.containerd.internal.v1.slow"]
    assert entry["log_level"] == "warning"
    assert entry["duration_ms"] >= 300
    assert entry["threshold_ms"] == 250


# -- background tasks ----------------------------------------------------------

EVENTS: list[str] = []


class Spawner:
    def __init__(self, name):
        self.name = name

    def close(self):
        EVENTS.append(f"close {self.name}")


async def _forever(name: str) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        EVENTS.append(f"cancel {name}")


async def init_two_tasks(ic):
    ic.spawn("first", _forever("first"))
    ic.spawn("second", _forever("second"))
    return Spawner("a")


async def init_one_task(ic):
    ic.spawn("third", _forever("third"))
    return Spawner("b")


def test_background_tasks_belong_to_the_daemon_and_stop_newest_first_before_plugins_close():
    EVENTS.clear()
    mod = plugin_module(
        "tasks",
        Registration(type=PluginType.INTERNAL, id="a", init=init_two_tasks),
        Registration(type="io.containerd.test.v1", id="b", requires=(PluginType.INTERNAL,), init=init_one_task),
    )
    with InProcessDaemon(plugins=[mod]) as d:
        assert d.daemon.tasks.names == [
            "io.containerd.gc.v1.scheduler/scheduler",  # the GC loop is one of them
            "io.containerd.runtime.v2.task/exits",  # and the runtimes' exit records
            "io.containerd.runtime.v1.linux/exits",
            "io.containerd.internal.v1.a/first",
            "io.containerd.internal.v1.a/second",
            "io.containerd.test.v1.b/third",
        ]
        assert EVENTS == []
    assert EVENTS == ["cancel third", "cancel second", "cancel first", "close b", "close a"]
    assert d.daemon.tasks.names == []


# -- the metadata plugin's views -----------------------------------------------


def test_services_differ_and_gc_share_the_metadata_plugins_views():
    with InProcessDaemon() as d:
        plugins = d.daemon.plugins
        db = plugins.get(PluginType.METADATA)
        store = db.content_store
        assert store.backend is plugins.get(PluginType.CONTENT, "content")
        assert plugins.get(PluginType.SERVICE, "content-service").store is store
        assert plugins.get(PluginType.DIFF, "walking").store is store
        assert plugins.get(PluginType.SERVICE, "snapshots-service").snapshotters is db.snapshotters
        loaded = plugins.get_all(PluginType.SNAPSHOT)
        assert {n: v.backend for n, v in db.snapshotters.items()} == loaded
        collector = plugins.get(PluginType.GC).collector
        assert collector.content is store.backend
        assert collector.snapshotters == loaded
        assert collector.content_lock() is store.lock


def test_proxy_plugins_are_clients_everyone_uses():
    from pycontainerd.plugins.content.proxy import ProxyContentStore
    from pycontainerd.plugins.snapshotters.proxy import ProxySnapshotter

    config = {
        "proxy_plugins": {
            # nothing serves these sockets: clients connect on first use
            "remote-sn": {"type": "snapshot", "address": "/tmp/pcd-nowhere-sn.sock"},
            "remote-cs": {"type": "content", "address": "/tmp/pcd-nowhere-cs.sock"},
        },
        "disabled_plugins": ["io.containerd.content.v1.content"],
    }
    with InProcessDaemon(config=config) as d, d.client() as c:
        rows = {p.uri: p for p in c.plugins()}
        assert rows["io.containerd.snapshotter.v1.remote-sn"].status == "ok"
        assert rows["io.containerd.content.v1.remote-cs"].status == "ok"
        plugins = d.daemon.plugins
        sn = plugins.get(PluginType.SNAPSHOT, "remote-sn")
        cs = plugins.get(PluginType.CONTENT, "remote-cs")
        assert isinstance(sn, ProxySnapshotter) and sn.address == "/tmp/pcd-nowhere-sn.sock"
        assert isinstance(cs, ProxyContentStore) and cs.address == "/tmp/pcd-nowhere-cs.sock"
        db = plugins.get(PluginType.METADATA)
        assert db.snapshotters["remote-sn"].backend is sn
        assert db.content_store.backend is cs
        collector = plugins.get(PluginType.GC).collector
        assert collector.snapshotters["remote-sn"] is sn  # GC sees proxy snapshotters
        assert collector.content is cs


# -- serve commands come from the plugins --------------------------------------


def test_serve_commands_are_the_plugin_modules_own_and_loaded_only_when_run():
    import subprocess
    import sys

    from pycontainerd.plugins.builtins import SERVE_COMMANDS

    # building the daemon's parser imports none of the serve modules
    probe = (
        "import sys; from pycontainerd.core import main; main._parser().parse_known_args(['snapshotter', 'serve']); "
        f"print(sorted(m for m in {[m for _, m in SERVE_COMMANDS.values()]!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"
    # each command's arguments are parsed by its module (its own usage line)
    for kind in SERVE_COMMANDS:
        r = subprocess.run([sys.executable, "-m", "pycontainerd.core.main", kind, "serve", "--help"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"usage: pycontainerd {kind} serve "), r.stdout
        assert "--address" in r.stdout and "--root" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "pycontainerd.core.main", "content", "serve", "--bogus"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "pycontainerd content serve: error:" in bad.stderr
