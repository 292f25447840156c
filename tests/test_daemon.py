"""The daemon in-process, through the pycontainerd.testing fixtures: plugin
statuses, lookups, required/disabled plugins, plugin config, namespaces and
their events, all over the real gRPC socket."""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass

import pytest

from pycontainerd.core.config import ConfigError
from pycontainerd.core.context import SkipPlugin
from pycontainerd.core.daemon import StartError
from pycontainerd.core.registry import PluginType, Registration
from pycontainerd.pkg import errdefs
from pycontainerd.testing import InProcessDaemon, plugin_module

# built-ins that skip themselves where the machine cannot host them
SKIPPABLE = {"io.containerd.snapshotter.v1.btrfs", "io.containerd.runtime.v2.task",
             "io.containerd.runtime.v1.linux"}  # the runtimes: root only
BUILTIN = {
    "io.containerd.internal.v1.metrics",
    "io.containerd.event.v1.exchange",
    "io.containerd.metadata.v1.sqlite",
    "io.containerd.content.v1.content",
    "io.containerd.service.v1.content-service",
    "io.containerd.grpc.v1.content",
    "io.containerd.gc.v1.scheduler",
    "io.containerd.service.v1.leases-service",
    "io.containerd.grpc.v1.leases",
    "io.containerd.service.v1.images-service",
    "io.containerd.grpc.v1.images",
    "io.containerd.service.v1.containers-service",
    "io.containerd.grpc.v1.containers",
    "io.containerd.service.v1.tasks-service",
    "io.containerd.grpc.v1.tasks",
    "io.containerd.snapshotter.v1.native",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.service.v1.snapshots-service",
    "io.containerd.grpc.v1.snapshots",
    "io.containerd.differ.v1.walking",
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.service.v1.diff-service",
    "io.containerd.grpc.v1.diff",
    "io.containerd.service.v1.introspection-service",
    "io.containerd.service.v1.namespaces-service",
    "io.containerd.grpc.v1.introspection",
    "io.containerd.grpc.v1.namespaces",
    "io.containerd.grpc.v1.version",
    "io.containerd.grpc.v1.events",
    "io.containerd.ttrpc.v1.events",
    "io.containerd.runtime.v1.linux",
    "io.containerd.runtime.v2.task",
    "io.containerd.grpc.v1.healthcheck",
}


@dataclass
class GreeterConfig:
    greeting: str = "hello"
    repeat: int = 1


seen: dict[str, object] = {}


async def init_greeter(ic):
    seen["root"] = ic.root
    seen["metadata"] = ic.get(PluginType.METADATA)
    ic.meta.exports["greeting"] = ic.config.greeting * ic.config.repeat
    ic.meta.platforms.append("linux/amd64")
    ic.meta.capabilities.append("greet")
    return object()


async def init_fails(ic):
    raise RuntimeError("out of cheese")


async def init_skips(ic):
    raise SkipPlugin("no cheese here")


async def init_lookup_missing(ic):
    try:
        ic.get("io.containerd.tracing.processor.v1")  # a type nothing registers
    except errdefs.NotFound as exc:
        seen["missing"] = str(exc)
    try:
        ic.get(PluginType.INTERNAL, "skips")
    except errdefs.NotFound as exc:
        seen["skipped"] = str(exc)
    try:
        ic.get(PluginType.INTERNAL, "fails")
    except errdefs.FailedPrecondition as exc:
        seen["failed"] = str(exc)
    return object()


GREETER = plugin_module(
    "greeter",
    Registration(type="io.containerd.internal.v1", id="greeter", requires=(PluginType.METADATA,), config=GreeterConfig, init=init_greeter),
)
BROKEN = plugin_module(
    "broken",
    Registration(type=PluginType.INTERNAL, id="fails", init=init_fails),
    Registration(type=PluginType.INTERNAL, id="skips", init=init_skips),
    Registration(type="io.containerd.test.v1", id="looker", requires=(PluginType.INTERNAL, "io.containerd.tracing.processor.v1"), init=init_lookup_missing),
)


@pytest.fixture
def pycontainerd_plugins():
    return [GREETER]


@pytest.fixture
def pycontainerd_config():
    return {"plugins": {"io.containerd.internal.v1.greeter": {"greeting": "hi", "repeat": 2}}}


def test_fixture_client_sees_builtin_and_third_party_plugins(pycontainerd_client):
    plugins = {p.uri: p for p in pycontainerd_client.plugins()}
    assert BUILTIN | {"io.containerd.internal.v1.greeter"} == set(plugins)
    greeter = plugins["io.containerd.internal.v1.greeter"]
    assert greeter.status == "ok"
    assert greeter.exports == {"greeting": "hihi"}  # its config section was applied
    assert greeter.platforms == ["linux/amd64"]
    assert greeter.capabilities == ["greet"]
    assert greeter.requires == [PluginType.METADATA]
    assert all(p.init_duration is not None and p.init_duration >= 0 for p in plugins.values())
    assert seen["root"].endswith("/root/io.containerd.internal.v1.greeter")


def test_plugins_come_in_init_order_with_requirements_first(pycontainerd_client):
    uris = [p.uri for p in pycontainerd_client.plugins()]
    assert uris.index("io.containerd.metadata.v1.sqlite") < uris.index("io.containerd.internal.v1.greeter")
    assert uris.index("io.containerd.event.v1.exchange") < uris.index("io.containerd.metadata.v1.sqlite")
    assert uris.index("io.containerd.service.v1.namespaces-service") < uris.index("io.containerd.grpc.v1.namespaces")


def test_plugin_filters_are_ored(pycontainerd_client):
    got = [p.uri for p in pycontainerd_client.plugins(["id==version", "type==io.containerd.event.v1"])]
    assert got == ["io.containerd.event.v1.exchange", "io.containerd.grpc.v1.version"]
    with pytest.raises(errdefs.InvalidArgument):
        pycontainerd_client.plugins(["type=="])


def test_error_skip_and_failed_lookups_are_rows_not_crashes():
    with InProcessDaemon(plugins=[BROKEN]) as d, d.client() as c:
        rows = {p.uri: p for p in c.plugins()}
        assert rows["io.containerd.internal.v1.fails"].status == "error"
        assert "out of cheese" in rows["io.containerd.internal.v1.fails"].init_err[1]
        assert rows["io.containerd.internal.v1.skips"].status == "skip"
        assert rows["io.containerd.internal.v1.skips"].init_err[1] == "no cheese here: skip plugin"
        assert rows["io.containerd.test.v1.looker"].status == "ok"
        assert all(rows[u].status == "ok" for u in BUILTIN - SKIPPABLE)
    assert "no plugins registered for io.containerd.tracing.processor.v1" in seen["missing"]
    assert "was skipped: no cheese here" in seen["skipped"]
    assert "failed to load: out of cheese" in seen["failed"]


def test_required_plugin_that_fails_stops_the_start_naming_it():
    d = InProcessDaemon(
        plugins=[BROKEN],
        config={"required_plugins": ["io.containerd.internal.v1.fails", "io.containerd.internal.v1.skips"]},
    )
    with pytest.raises(StartError) as err:
        d.start()
    d.stop()
    assert "required plugin io.containerd.internal.v1.fails failed to load: out of cheese" in str(err.value)
    assert "required plugin io.containerd.internal.v1.skips failed to load" in str(err.value)


def test_required_plugin_nobody_registers_is_refused_before_any_init():
    # a typo needs no plugin to run first; the start creates nothing
    d = InProcessDaemon(
        plugins=[BROKEN],
        config={"required_plugins": ["io.containerd.internal.v1.fails", "io.containerd.snapshotter.v1.nope"]},
    )
    with pytest.raises(StartError) as err:
        d.start()
    d.stop()
    assert str(err.value) == "required plugin io.containerd.snapshotter.v1.nope not included"


def test_disabled_plugins_are_neither_initialised_nor_listed():
    with InProcessDaemon(plugins=[BROKEN], config={"disabled_plugins": ["io.containerd.internal.v1.fails", "io.containerd.grpc.v1.events"]}) as d:
        with d.client() as c:
            uris = {p.uri for p in c.plugins()}
    assert "io.containerd.internal.v1.fails" not in uris
    assert "io.containerd.grpc.v1.events" not in uris
    assert "io.containerd.internal.v1.skips" in uris


def test_unknown_key_in_a_plugin_section_is_an_error_with_a_suggestion():
    d = InProcessDaemon(plugins=[GREETER], config={"plugins": {"io.containerd.internal.v1.greeter": {"greting": "x"}}})
    with pytest.raises(ConfigError) as err:
        d.start()
    d.stop()
    msg = str(err.value)
    assert d.config_path in msg
    assert 'unknown key "greting" in [plugins."io.containerd.internal.v1.greeter"]' in msg
    assert 'did you mean "greeting"' in msg


def test_namespaces_round_trip_and_errors(pycontainerd_client):
    c = pycontainerd_client
    c.namespace_create("dev", {"a": "b"})
    with pytest.raises(errdefs.AlreadyExists) as err:
        c.namespace_create("dev")
    assert str(err.value) == 'namespace "dev": already exists'
    c.namespace_set_label("dev", "team", "a")
    assert c.namespace_labels("dev") == {"a": "b", "team": "a"}
    c.namespace_set_label("dev", "a", "")
    assert c.namespace_labels("dev") == {"team": "a"}
    assert "dev" in c.namespace_list()
    with pytest.raises(errdefs.InvalidArgument):
        c.namespace_create("-nope")
    with pytest.raises(errdefs.InvalidArgument):
        c.namespace_create("big", {"k": "v" * 5000})
    c.namespace_delete("dev")
    assert "dev" not in c.namespace_list()
    with pytest.raises(errdefs.NotFound) as err:
        c.namespace_delete("dev")
    assert str(err.value) == 'namespace "dev": not found'
    with pytest.raises(errdefs.NotFound):
        c.namespace_labels("dev")


def test_update_without_mask_replaces_labels_and_bad_paths_are_refused(pycontainerd_client):
    from google.protobuf import field_mask_pb2

    from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc

    c = pycontainerd_client
    c.namespace_create("upd", {"a": "1", "b": "2"})
    stub = namespace_pb2_grpc.NamespacesStub(c.channel)
    resp = stub.Update(namespace_pb2.UpdateNamespaceRequest(namespace=namespace_pb2.Namespace(name="upd", labels={"c": "3"})))
    assert dict(resp.namespace.labels) == {"c": "3"}
    import grpc

    with pytest.raises(grpc.RpcError) as err:
        stub.Update(
            namespace_pb2.UpdateNamespaceRequest(
                namespace=namespace_pb2.Namespace(name="upd"), update_mask=field_mask_pb2.FieldMask(paths=["name"])
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_deleting_a_namespace_that_holds_objects_fails_with_failed_precondition(pycontainerd_daemon, pycontainerd_client):
    c = pycontainerd_client
    c.namespace_create("busy")
    db = pycontainerd_daemon.daemon.plugins.get(PluginType.METADATA)

    def put(conn):
        conn.execute("INSERT INTO images (namespace, name) VALUES ('busy', 'docker.io/library/alpine:latest')")
        conn.execute("INSERT INTO snapshots (namespace, snapshotter, key, backend_key) VALUES ('busy', 'overlayfs', 'k1', 'busy/1/k1')")
        # a GC root: another test's collection on this shared daemon must not take it
        conn.execute("INSERT INTO labels VALUES ('busy', 'snapshot', 'overlayfs/k1', 'containerd.io/gc.root', 'x')")

    asyncio.run_coroutine_threadsafe(db.update(put), pycontainerd_daemon._loop).result()
    with pytest.raises(errdefs.FailedPrecondition) as err:
        c.namespace_delete("busy")
    assert str(err.value) == (
        'namespace "busy" must be empty, but it still has images, snapshots on "overlayfs" snapshotter: failed precondition'
    )
    assert "busy" in c.namespace_list()


def test_namespace_changes_publish_events(pycontainerd_daemon, pycontainerd_client):
    from pycontainerd.api.events import namespace_pb2 as ev

    got = []
    ready = threading.Event()

    def listen():
        stream = pycontainerd_client.subscribe('topic~="^/namespaces/"')
        ready.set()
        for env in stream:
            got.append(env)
            if len(got) == 3:
                break

    before = pycontainerd_daemon.daemon.events.subscriber_count  # the runtime's own exit watcher is one
    t = threading.Thread(target=listen, daemon=True)
    t.start()
    ready.wait(5)
    import time

    deadline = time.monotonic() + 10  # wait until the server holds the subscription
    while pycontainerd_daemon.daemon.events.subscriber_count == before and time.monotonic() < deadline:
        time.sleep(0.01)
    pycontainerd_client.namespace_create("evt", {"x": "y"})
    pycontainerd_client.namespace_set_label("evt", "x", "z")
    pycontainerd_client.namespace_delete("evt")
    t.join(10)
    assert [e.topic for e in got] == ["/namespaces/create", "/namespaces/update", "/namespaces/delete"]
    assert all(e.namespace == "default" for e in got)
    assert got[0].event.type_url == "containerd.events.NamespaceCreate"
    create = ev.NamespaceCreate.FromString(got[0].event.value)
    assert create.name == "evt" and dict(create.labels) == {"x": "y"}


def test_server_uuid_is_persisted_and_pid_reported(pycontainerd_daemon):
    import os

    with pycontainerd_daemon.client() as c:
        first = c.server()
    assert first.pid == os.getpid()
    assert first.pidns > 0
    with open(os.path.join(pycontainerd_daemon.dir, "root", "io.containerd.service.v1.introspection-service", "uuid")) as f:
        assert f.read().strip() == first.uuid


def test_plugin_directories_are_private(pycontainerd_daemon):
    import os
    import stat

    path = os.path.join(pycontainerd_daemon.dir, "root", "io.containerd.metadata.v1.sqlite")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_health_service_reports_serving(pycontainerd_client):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(pycontainerd_client.channel)
    assert stub.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def test_publish_command_forwards_an_event(pycontainerd_daemon, pycontainerd_client):
    import time

    from pycontainerd.api.events import namespace_pb2 as ev
    from pycontainerd.core.events import pack
    from pycontainerd.core.main import publish

    got = []

    def listen():
        for env in pycontainerd_client.subscribe('topic=="/tasks/exit"'):
            got.append(env)
            break

    before = pycontainerd_daemon.daemon.events.subscriber_count  # the runtime's own exit watcher is one
    t = threading.Thread(target=listen, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while pycontainerd_daemon.daemon.events.subscriber_count == before and time.monotonic() < deadline:
        time.sleep(0.01)
    data = pack(ev.NamespaceDelete(name="n1")).SerializeToString()
    assert publish(pycontainerd_daemon.address, "/tasks/exit", "shimns", data) == 0
    t.join(10)
    assert got and got[0].namespace == "shimns" and got[0].topic == "/tasks/exit"
    assert ev.NamespaceDelete.FromString(got[0].event.value).name == "n1"


def test_proxy_plugins_are_loaded_and_listed_with_their_address():
    config = {
        "proxy_plugins": {
            "remotesnap": {"type": "snapshot", "address": "/run/remotesnap.sock"},
            "remotecontent": {"type": "content", "address": "/run/remotecontent.sock"},
        }
    }
    with InProcessDaemon(config=config) as d, d.client() as c:
        rows = {p.uri: p for p in c.plugins()}
    snap = rows["io.containerd.snapshotter.v1.remotesnap"]
    assert snap.status == "ok" and snap.exports == {"address": "/run/remotesnap.sock"}
    content = rows["io.containerd.content.v1.remotecontent"]
    assert content.status == "ok" and content.exports == {"address": "/run/remotecontent.sock"}
    uris = list(rows)
    # the metadata plugin requires content and snapshotters: the proxies come first
    assert uris.index("io.containerd.content.v1.remotecontent") < uris.index("io.containerd.metadata.v1.sqlite")


closed: list[str] = []


class Closes:
    def __init__(self, name):
        self.name = name

    async def close(self):
        closed.append(self.name)


def _closer(id_, requires=()):
    async def init(ic):
        return Closes(id_)

    return Registration(type=f"io.containerd.{id_}.v1", id=id_, requires=requires, init=init)


def test_plugins_close_in_reverse_init_order_on_stop():
    closed.clear()
    mod = plugin_module("closers", _closer("last", ("io.containerd.middle.v1",)), _closer("middle", ("io.containerd.first.v1",)), _closer("first"))
    with InProcessDaemon(plugins=[mod], builtin=()):
        pass
    assert closed == ["last", "middle", "first"]


def test_metadata_is_sqlite_in_wal_mode_with_a_schema_version(pycontainerd_daemon):
    import os
    import sqlite3

    path = os.path.join(pycontainerd_daemon.dir, "root", "io.containerd.metadata.v1.sqlite", "meta.db")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # six migrations so far (6: containers): a new one must bump this on purpose
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 6
    finally:
        conn.close()


def test_publish_without_a_namespace_is_refused_as_containerd_does(pycontainerd_client):
    import grpc

    from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
    from pycontainerd.core.events import pack
    from pycontainerd.api.events import namespace_pb2 as ev

    stub = events_pb2_grpc.EventsStub(pycontainerd_client.channel)
    request = events_pb2.PublishRequest(topic="/x/y", event=pack(ev.NamespaceDelete(name="a")))
    with pytest.raises(grpc.RpcError) as err:
        stub.Publish(request)  # no containerd-namespace metadata
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "failed publishing event: namespace is required: failed precondition"  # measured on containerd 1.6
    with pytest.raises(grpc.RpcError) as err:
        stub.Publish(request, metadata=(("containerd-namespace", "bad/ns"),))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pyctr_debug_logs_each_call(pycontainerd_daemon, capsys):
    from pycontainerd.client import cli

    assert cli.main(["-a", pycontainerd_daemon.address, "--debug", "namespaces", "ls"]) == 0
    out, err = capsys.readouterr()
    assert out == "NAME LABELS \n"
    assert "method=/containerd.services.namespaces.v1.Namespaces/List namespace=default status=ok" in err


def test_root_lock_holds_the_pid_refuses_a_second_holder_and_goes_away_on_release(tmp_path):
    from pycontainerd.core.daemon import DirLock

    first = DirLock(str(tmp_path), "root")
    first.acquire()
    lock = tmp_path / "pycontainerd.lock"
    assert lock.read_text() == str(os.getpid())
    second = DirLock(str(tmp_path), "root")
    with pytest.raises(StartError) as err:
        second.acquire()
    assert str(err.value) == (
        f"another daemon (pid {os.getpid()}) uses the root directory {tmp_path}; "
        f"refusing to start (lock {lock} is held)"
    )
    first.release()
    assert not lock.exists()
    # a lock file nobody holds (its daemon was killed) is taken over
    lock.write_text("999999")
    second.acquire()
    assert lock.read_text() == str(os.getpid())
    second.release()


def test_a_daemon_on_a_root_another_in_process_daemon_holds_does_not_start(tmp_path):
    with InProcessDaemon() as first:
        second = InProcessDaemon(config={"root": os.path.join(first.dir, "root")})
        with pytest.raises(StartError, match="uses the root directory"):
            second.start()
        second.stop()
        with first.client() as c:
            assert c.version()


def test_publish_command_without_a_topic_says_containerds_words(capsys):
    from pycontainerd.core.main import main

    assert main(["--address", "/nonexistent/pcd.sock", "publish", "--namespace", "n"]) == 1
    assert capsys.readouterr().err == "pycontainerd: topic required to publish event: invalid argument\n"


def test_publish_command_as_the_v1_shim_runs_it(pycontainerd_daemon, pycontainerd_client):
    """containerd-shim runs `<binary> --address A publish --topic T
    --namespace N` with the event (a serialized Any) on stdin; the daemon
    gets it through Events.Publish, in that namespace."""
    import subprocess
    import sys
    import time

    from pycontainerd.api.events import task_pb2
    from pycontainerd.core.events import pack

    got = []

    def listen():
        for env in pycontainerd_client.subscribe('topic=="/tasks/exit"'):
            got.append(env)
            break

    before = pycontainerd_daemon.daemon.events.subscriber_count
    t = threading.Thread(target=listen, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while pycontainerd_daemon.daemon.events.subscriber_count == before and time.monotonic() < deadline:
        time.sleep(0.01)
    event = pack(task_pb2.TaskExit(container_id="c1", id="c1", pid=42, exit_status=3)).SerializeToString()
    out = subprocess.run([sys.executable, "-m", "pycontainerd.core.main", "--address", pycontainerd_daemon.address,
                          "publish", "--topic", "/tasks/exit", "--namespace", "shimns"],
                         input=event, capture_output=True, timeout=30)
    assert (out.returncode, out.stderr) == (0, b"")
    t.join(10)
    assert got and (got[0].namespace, got[0].topic) == ("shimns", "/tasks/exit")
    assert task_pb2.TaskExit.FromString(got[0].event.value).exit_status == 3
    # a bad namespace is the daemon's to refuse, with containerd's words
    out = subprocess.run([sys.executable, "-m", "pycontainerd.core.main", "--address", pycontainerd_daemon.address,
                          "publish", "--topic", "/tasks/exit", "--namespace", ""],
                         input=event, capture_output=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr == b"pycontainerd: failed publishing event: namespace is required: failed precondition\n"
