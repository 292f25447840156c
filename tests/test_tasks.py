"""The tasks service over its gRPC socket, in a daemon running in-process.

Without a runtime: what needs none (containerd's NotFound for a missing
container, the runtime lookup's error, checkpoint refused, a missing
namespace, empty List and Metrics). With tests/runtime_double.py, a test
double of io.containerd.runtime.v2.task whose tasks are real host
processes: the translation of every call (create with rootfs, stdio,
terminal and options; start, wait, kill, pause, resume, exec, pids,
metrics, update, resize, close-io, delete), containerd's wording for a
task that does not exist or exists twice, namespaces kept apart, and a
Wait that blocks nothing else."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import threading
import time

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd.api.events import container_pb2
from pycontainerd.api.runtime.runc.options import oci_pb2 as runc_options
from pycontainerd.api.services.containers.v1 import containers_pb2 as cpb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as cpb_grpc
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.tasks.v1 import tasks_pb2 as pb
from pycontainerd.api.services.tasks.v1 import tasks_pb2_grpc as pb_grpc
from pycontainerd.api.types import descriptor_pb2, mount_pb2
from pycontainerd.api.types.task import task_pb2
from pycontainerd.core.context import SkipPlugin
from pycontainerd.core.registry import PluginType, Registration
from pycontainerd.plugins import builtins
from pycontainerd.testing import InProcessDaemon, plugin_module

import runtime_double

SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RUNC = "io.containerd.runc.v2"
# the built-ins without any runtime plugin: these tests choose the runtime
NO_RUNTIMES = [m for m in builtins.MODULES if ".runtimes." not in m]


def spec_of(*args: str) -> any_pb2.Any:
    return any_pb2.Any(type_url=SPEC_URL, value=json.dumps({"ociVersion": "1.0.2", "process": {"args": list(args)}})
                       .encode())


def process_spec(*args: str) -> any_pb2.Any:
    return any_pb2.Any(type_url=PROCESS_URL, value=json.dumps({"args": list(args)}).encode())


class Api:
    """The raw Containers and Tasks stubs in one namespace."""

    def __init__(self, client, ns: str, tmp: str):
        self.client = client
        self.ns = ns
        self.tmp = tmp
        self.md = (("containerd-namespace", ns),)
        self.containers = cpb_grpc.ContainersStub(client.channel)
        self.tasks = pb_grpc.TasksStub(client.channel)

    def container(self, cid: str, *args: str, options=None, runtime=RUNC) -> None:
        c = cpb.Container(id=cid, spec=spec_of(*(args or ("/bin/sleep", "300"))))
        c.runtime.name = runtime
        if options is not None:
            c.runtime.options.CopyFrom(options)
        self.containers.Create(cpb.CreateContainerRequest(container=c), metadata=self.md)

    def call(self, method: str, request, **kwargs):
        return getattr(self.tasks, method)(request, metadata=self.md, **kwargs)

    def create(self, cid: str, **fields) -> pb.CreateTaskResponse:
        return self.call("Create", pb.CreateTaskRequest(container_id=cid, **fields))

    def out(self, name: str) -> str:
        return os.path.join(self.tmp, name)


def status_of(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kwargs)
    return e.value.code(), e.value.details()


def _ns(request) -> str:
    name = request.node.name
    return re.sub(r"[^A-Za-z0-9]+", "-", name)[:50].strip("-") + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]


# -- without a runtime --------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_daemon():
    with InProcessDaemon(builtin=NO_RUNTIMES) as d:
        yield d


@pytest.fixture
def bare(bare_daemon, request):
    with bare_daemon.client() as c:
        yield Api(c, _ns(request), bare_daemon.dir)


def test_without_a_runtime_the_service_loads_and_says_why_tasks_cannot_be_made(bare):
    assert status_of(bare.create, "nope") == (
        grpc.StatusCode.NOT_FOUND, f'container "nope" in namespace "{bare.ns}": not found')
    bare.container("c1")
    code, message = status_of(bare.create, "c1")
    assert code == grpc.StatusCode.NOT_FOUND
    # containerd's plugin lookup wording (its tasks service would not start)
    assert message == f"runtime for task {RUNC}: no plugins registered for io.containerd.runtime.v2: not found"
    code, message = status_of(bare.call, "Get", pb.GetRequest(container_id="c1"))
    assert (code, message.startswith(f"runtime for task {RUNC}: ")) == (grpc.StatusCode.NOT_FOUND, True)
    # nothing to list or measure
    assert list(bare.call("List", pb.ListTasksRequest()).tasks) == []
    assert list(bare.call("Metrics", pb.MetricsRequest()).metrics) == []


async def _skips(ic):
    raise SkipPlugin("no shims on this machine")


@pytest.mark.parametrize("registration, why", [
    (Registration(type=PluginType.RUNTIME_V2, id="task", init=_skips),
     "plugin io.containerd.runtime.v2.task was skipped: no shims on this machine: not found"),
    (Registration(type=PluginType.RUNTIME_V2, id="other", init=_skips),
     "no io.containerd.runtime.v2 plugins with id task: not found"),
])
def test_a_skipped_or_missing_runtime_is_named_in_the_error(registration, why):
    with InProcessDaemon(builtin=NO_RUNTIMES, plugins=[plugin_module("runtimes", registration)]) as d, \
            d.client() as c:
        a = Api(c, "default", d.dir)
        a.container("c1")
        assert status_of(a.create, "c1") == (grpc.StatusCode.NOT_FOUND, f"runtime for task {RUNC}: {why}")


@pytest.mark.parametrize("method, request_", [
    ("Start", pb.StartRequest(container_id="ghost")),
    ("Delete", pb.DeleteTaskRequest(container_id="ghost")),
    ("DeleteProcess", pb.DeleteProcessRequest(container_id="ghost", exec_id="e")),
    ("Get", pb.GetRequest(container_id="ghost")),
    ("Kill", pb.KillRequest(container_id="ghost", signal=15)),
    ("Exec", pb.ExecProcessRequest(container_id="ghost", exec_id="e1")),
    ("ResizePty", pb.ResizePtyRequest(container_id="ghost", width=80, height=24)),
    ("CloseIO", pb.CloseIORequest(container_id="ghost", stdin=True)),
    ("Pause", pb.PauseTaskRequest(container_id="ghost")),
    ("Resume", pb.ResumeTaskRequest(container_id="ghost")),
    ("ListPids", pb.ListPidsRequest(container_id="ghost")),
    ("Checkpoint", pb.CheckpointTaskRequest(container_id="ghost")),
    ("Update", pb.UpdateTaskRequest(container_id="ghost")),
    ("Wait", pb.WaitRequest(container_id="ghost")),
])
def test_every_call_on_a_missing_container_is_containerds_not_found(bare, method, request_):
    assert status_of(bare.call, method, request_) == (
        grpc.StatusCode.NOT_FOUND, f'container "ghost" in namespace "{bare.ns}": not found')


def test_a_namespace_is_required_and_an_exec_needs_an_id(bare):
    assert status_of(bare.tasks.List, pb.ListTasksRequest()) == (
        grpc.StatusCode.FAILED_PRECONDITION, "namespace is required: failed precondition")
    assert status_of(bare.call, "Exec", pb.ExecProcessRequest(container_id="ghost")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "exec id cannot be empty")
    code, message = status_of(bare.call, "Metrics", pb.MetricsRequest(filters=["id=="]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("filters: parse error")


def test_hostile_ids_get_bounded_answers(bare):
    huge = "x" * (1 << 20)
    for method, request_ in (("Create", pb.CreateTaskRequest(container_id=huge)),
                             ("Kill", pb.KillRequest(container_id=huge, exec_id=huge)),
                             ("Wait", pb.WaitRequest(container_id="bad\nid\x00"))):
        code, message = status_of(bare.call, method, request_)
        assert code == grpc.StatusCode.NOT_FOUND and len(message) < 1024
        assert message.startswith('container "') and message.endswith(f'in namespace "{bare.ns}": not found')
        assert "\n" not in message


# -- with the runtime test double ----------------------------------------------------------


@pytest.fixture(scope="module")
def daemon():
    with InProcessDaemon(builtin=NO_RUNTIMES, plugins=[runtime_double.MODULE]) as d:
        runtime = runtime_double.INSTANCES[-1]
        try:
            yield d, runtime
        finally:
            runtime.close()


@pytest.fixture
def api(daemon, request):
    d, runtime = daemon
    with d.client() as c:
        tmp = os.path.join(d.dir, _ns(request))
        os.makedirs(tmp)
        yield Api(c, _ns(request), tmp), runtime


def test_create_start_wait_delete_runs_the_containers_process_and_passes_its_exit_code(api):
    a, runtime = api
    a.container("c1", "/bin/sh", "-c", "echo hi; exit 3")
    created = a.create("c1", stdout=a.out("out"), stderr=a.out("err"))
    assert created.container_id == "c1" and created.pid > 0
    got = a.call("Get", pb.GetRequest(container_id="c1")).process
    assert (got.id, got.pid, got.status, got.stdout) == ("c1", created.pid, task_pb2.CREATED, a.out("out"))
    assert a.call("Start", pb.StartRequest(container_id="c1")).pid == created.pid
    waited = a.call("Wait", pb.WaitRequest(container_id="c1"))
    assert waited.exit_status == 3 and waited.exited_at.ToNanoseconds() > 0
    assert open(a.out("out")).read() == "hi\n"
    got = a.call("Get", pb.GetRequest(container_id="c1")).process
    assert (got.status, got.exit_status, got.exited_at) == (task_pb2.STOPPED, 3, waited.exited_at)
    deleted = a.call("Delete", pb.DeleteTaskRequest(container_id="c1"))
    assert (deleted.id, deleted.pid, deleted.exit_status, deleted.exited_at) == ("", created.pid, 3, waited.exited_at)
    assert status_of(a.call, "Get", pb.GetRequest(container_id="c1")) == (
        grpc.StatusCode.NOT_FOUND, "task c1 not found")
    assert status_of(a.call, "Delete", pb.DeleteTaskRequest(container_id="c1")) == (
        grpc.StatusCode.NOT_FOUND, "task c1 not found")


def test_create_hands_the_runtime_the_spec_rootfs_stdio_terminal_and_both_options(api):
    a, runtime = api
    container_opts = any_pb2.Any(type_url="containerd.runc.v1.Options",
                                 value=runc_options.Options(binary_name="crun").SerializeToString())
    task_opts = any_pb2.Any(type_url="containerd.runc.v1.Options",
                            value=runc_options.Options(no_new_keyring=True).SerializeToString())
    a.container("c1", "/bin/true", options=container_opts)
    rootfs = [mount_pb2.Mount(type="overlay", source="overlay", target="ignored",
                              options=["lowerdir=/l", "upperdir=/u", "workdir=/w"])]
    a.create("c1", rootfs=rootfs, stdin="", stdout=a.out("o"), stderr=a.out("e"), terminal=True, options=task_opts)
    ns, tid, opts = runtime.created[-1]
    assert (ns, tid) == (a.ns, "c1")
    assert json.loads(opts.spec.value)["process"]["args"] == ["/bin/true"]
    assert [(m.type, m.source, m.options) for m in opts.rootfs] == [
        ("overlay", "overlay", ["lowerdir=/l", "upperdir=/u", "workdir=/w"])]
    assert (opts.io.stdin, opts.io.stdout, opts.io.stderr, opts.io.terminal) == ("", a.out("o"), a.out("e"), True)
    assert opts.runtime == RUNC
    assert opts.runtime_options == container_opts and opts.task_options == task_opts
    assert opts.checkpoint == ""
    # a runtime path in the request replaces the container's runtime name
    a.container("c2", "/bin/true")
    a.create("c2", runtime_path="/opt/bin/containerd-shim-mine-v2")
    assert runtime.created[-1][2].runtime == "/opt/bin/containerd-shim-mine-v2"
    assert runtime.created[-1][2].runtime_options is None and runtime.created[-1][2].task_options is None


def test_a_second_create_is_containerds_already_exists(api):
    a, _ = api
    a.container("c1")
    a.create("c1")
    assert status_of(a.create, "c1") == (grpc.StatusCode.ALREADY_EXISTS, "task c1: already exists")
    a.call("Kill", pb.KillRequest(container_id="c1", signal=9))
    a.call("Wait", pb.WaitRequest(container_id="c1"))


def test_checkpoint_and_restore_are_refused_as_unimplemented(api):
    a, _ = api
    a.container("c1")
    assert status_of(a.call, "Checkpoint", pb.CheckpointTaskRequest(container_id="c1")) == (
        grpc.StatusCode.NOT_FOUND, "task c1 not found")  # containerd looks the task up first
    a.create("c1")
    code, message = status_of(a.call, "Checkpoint", pb.CheckpointTaskRequest(container_id="c1"))
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert message == "checkpointing task c1 needs CRIU, which pycontainerd does not support: not implemented"
    a.container("c2")
    checkpoint = descriptor_pb2.Descriptor(media_type="application/vnd.containerd.container.criu.checkpoint.criu.tar",
                                           digest="sha256:" + "a" * 64, size=1)
    code, message = status_of(a.create, "c2", checkpoint=checkpoint)
    assert code == grpc.StatusCode.UNIMPLEMENTED and message.startswith("restoring task c2 from a checkpoint")
    restore = any_pb2.Any(type_url="containerd.runc.v1.Options",
                          value=runc_options.Options(criu_image_path="/tmp/cp").SerializeToString())
    assert status_of(a.create, "c2", options=restore)[0] == grpc.StatusCode.UNIMPLEMENTED
    # options a runc runtime cannot read: containerd's own words, code UNKNOWN
    assert status_of(a.create, "c2", options=any_pb2.Any(type_url="example.com/Other", value=b"")) == (
        grpc.StatusCode.UNKNOWN, f"invalid task create option for {RUNC}")
    assert status_of(a.call, "Get", pb.GetRequest(container_id="c2")) == (
        grpc.StatusCode.NOT_FOUND, "task c2 not found")  # nothing was created
    a.call("Kill", pb.KillRequest(container_id="c1", signal=9))
    a.call("Wait", pb.WaitRequest(container_id="c1"))


def process_state_becomes(pid: int, state: str) -> bool:
    """SIGSTOP is delivered when the process is next scheduled, so /proc may
    still say R for a moment after Pause returns on a loaded machine."""
    for _ in range(200):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == state:
                return True
        time.sleep(0.01)
    return False


def test_a_running_task_lists_pauses_resumes_execs_measures_and_is_killed(api):
    a, runtime = api
    a.container("c1")
    pid = a.create("c1").pid
    a.call("Start", pb.StartRequest(container_id="c1"))
    listed = a.call("List", pb.ListTasksRequest()).tasks
    assert [(t.id, t.pid, t.status) for t in listed] == [("c1", pid, task_pb2.RUNNING)]

    a.call("Pause", pb.PauseTaskRequest(container_id="c1"))
    assert a.call("Get", pb.GetRequest(container_id="c1")).process.status == task_pb2.PAUSED
    assert process_state_becomes(pid, "T")  # really stopped
    a.call("Resume", pb.ResumeTaskRequest(container_id="c1"))
    assert a.call("Get", pb.GetRequest(container_id="c1")).process.status == task_pb2.RUNNING

    a.call("Exec", pb.ExecProcessRequest(container_id="c1", exec_id="e1", stdout=a.out("exec"),
                                         spec=process_spec("/bin/sh", "-c", "echo from exec; exit 5")))
    assert status_of(a.call, "Exec", pb.ExecProcessRequest(container_id="c1", exec_id="e1",
                                                           spec=process_spec("/bin/true"))) == (
        grpc.StatusCode.ALREADY_EXISTS, "id e1: already exists")
    exec_pid = a.call("Start", pb.StartRequest(container_id="c1", exec_id="e1")).pid
    assert exec_pid > 0 and exec_pid != pid
    assert a.call("Wait", pb.WaitRequest(container_id="c1", exec_id="e1")).exit_status == 5
    assert open(a.out("exec")).read() == "from exec\n"
    got = a.call("Get", pb.GetRequest(container_id="c1", exec_id="e1")).process
    assert (got.id, got.status, got.exit_status) == ("e1", task_pb2.STOPPED, 5)
    deleted = a.call("DeleteProcess", pb.DeleteProcessRequest(container_id="c1", exec_id="e1"))
    assert (deleted.id, deleted.pid, deleted.exit_status) == ("e1", exec_pid, 5)
    assert status_of(a.call, "Get", pb.GetRequest(container_id="c1", exec_id="e1")) == (
        grpc.StatusCode.NOT_FOUND, "process e1 does not exist: not found")

    assert [p.pid for p in a.call("ListPids", pb.ListPidsRequest(container_id="c1")).processes] == [pid]
    metrics = a.call("Metrics", pb.MetricsRequest(filters=["id==c1"])).metrics
    assert [(m.id, m.data.type_url, m.data.value) for m in metrics] == [
        ("c1", runtime_double.STATS_URL, f"pid={pid}".encode())]
    assert metrics[0].timestamp.ToNanoseconds() > 0
    assert list(a.call("Metrics", pb.MetricsRequest(filters=["id==other"])).metrics) == []
    assert len(a.call("Metrics", pb.MetricsRequest(filters=[f"namespace=={a.ns}"])).metrics) == 1

    resources = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
                            value=b'{"pids":{"limit":10}}')
    a.call("Update", pb.UpdateTaskRequest(container_id="c1", resources=resources, annotations={"a": "b"}))
    assert runtime.updated[-1] == ("c1", resources, {"a": "b"})
    a.call("ResizePty", pb.ResizePtyRequest(container_id="c1", width=120, height=40))
    a.call("CloseIO", pb.CloseIORequest(container_id="c1", stdin=False))  # asks nothing of the runtime
    a.call("CloseIO", pb.CloseIORequest(container_id="c1", stdin=True))
    assert runtime.resized[-1] == ("c1", "c1", 120, 40) and runtime.closed_io[-1] == ("c1", "c1")

    a.call("Kill", pb.KillRequest(container_id="c1", signal=int(signal.SIGTERM)))
    assert a.call("Wait", pb.WaitRequest(container_id="c1")).exit_status == 128 + signal.SIGTERM
    # the runtime's error, with its class, for a kill of a stopped task
    assert status_of(a.call, "Kill", pb.KillRequest(container_id="c1", signal=9)) == (
        grpc.StatusCode.NOT_FOUND, "process already finished: not found")
    assert a.call("Delete", pb.DeleteTaskRequest(container_id="c1")).exit_status == 128 + signal.SIGTERM


def test_exec_and_kill_of_a_missing_process_or_task(api):
    a, _ = api
    a.container("c1")
    assert status_of(a.call, "Exec", pb.ExecProcessRequest(container_id="c1", exec_id="e1",
                                                           spec=process_spec("/bin/true"))) == (
        grpc.StatusCode.NOT_FOUND, "task c1 not found")
    a.create("c1")
    assert status_of(a.call, "Kill", pb.KillRequest(container_id="c1", exec_id="nope", signal=9)) == (
        grpc.StatusCode.NOT_FOUND, "process nope does not exist: not found")
    assert status_of(a.call, "Wait", pb.WaitRequest(container_id="c1", exec_id="nope")) == (
        grpc.StatusCode.NOT_FOUND, "process nope does not exist: not found")
    a.call("Delete", pb.DeleteTaskRequest(container_id="c1"))  # created, never started


def test_tasks_of_one_namespace_are_invisible_from_another(daemon, api):
    a, _ = api
    a.container("c1")
    a.create("c1")
    d, _ = daemon
    with d.client() as c:
        other = Api(c, a.ns + "-other", a.tmp)
        assert list(other.call("List", pb.ListTasksRequest()).tasks) == []
        assert list(other.call("Metrics", pb.MetricsRequest()).metrics) == []
        assert status_of(other.call, "Get", pb.GetRequest(container_id="c1")) == (
            grpc.StatusCode.NOT_FOUND, f'container "c1" in namespace "{other.ns}": not found')
        other.container("c1")  # the same id, another namespace: its own task
        assert status_of(other.call, "Get", pb.GetRequest(container_id="c1")) == (
            grpc.StatusCode.NOT_FOUND, "task c1 not found")
    a.call("Delete", pb.DeleteTaskRequest(container_id="c1"))


def test_a_pending_wait_blocks_no_other_call(api):
    a, _ = api
    a.container("c1")
    a.create("c1")
    a.call("Start", pb.StartRequest(container_id="c1"))
    result: list = []
    waiter = threading.Thread(target=lambda: result.append(a.call("Wait", pb.WaitRequest(container_id="c1"))))
    waiter.start()
    # while the Wait is pending, the daemon answers everything else
    for _ in range(20):
        assert a.call("Get", pb.GetRequest(container_id="c1")).process.status == task_pb2.RUNNING
    assert not result
    a.call("Kill", pb.KillRequest(container_id="c1", signal=9))
    waiter.join(30)
    assert result and result[0].exit_status == 128 + 9
    a.call("Delete", pb.DeleteTaskRequest(container_id="c1"))


def test_a_cancelled_wait_leaves_the_task_alone(api):
    a, _ = api
    a.container("c1")
    a.create("c1")
    a.call("Start", pb.StartRequest(container_id="c1"))
    future = a.tasks.Wait.future(pb.WaitRequest(container_id="c1"), metadata=a.md)
    future.cancel()
    assert a.call("Get", pb.GetRequest(container_id="c1")).process.status == task_pb2.RUNNING
    a.call("Kill", pb.KillRequest(container_id="c1", signal=9))
    assert a.call("Wait", pb.WaitRequest(container_id="c1")).exit_status == 137
    a.call("Delete", pb.DeleteTaskRequest(container_id="c1"))


def test_a_task_whose_state_does_not_answer_is_listed_unknown_after_the_state_timeout(api):
    a, runtime = api
    a.container("c1")
    a.create("c1")
    runtime.unresponsive.add((a.ns, "c1"))
    try:
        # io.containerd.timeout.task.state (2s by default), then UNKNOWN, as containerd
        got = a.call("Get", pb.GetRequest(container_id="c1")).process
        assert (got.id, got.pid, got.status) == ("c1", 0, task_pb2.UNKNOWN)
        assert [(t.id, t.status) for t in a.call("List", pb.ListTasksRequest()).tasks] == [("c1", task_pb2.UNKNOWN)]
    finally:
        runtime.unresponsive.discard((a.ns, "c1"))
    a.call("Delete", pb.DeleteTaskRequest(container_id="c1"))


def test_the_tasks_service_publishes_no_events_of_its_own(api):
    """In containerd 1.6 the shim publishes the /tasks/* events and the
    runtime forwards them; the service itself publishes none. (The double
    publishes none either, so only the container's own event shows.)"""
    a, _ = api
    stub = events_pb2_grpc.EventsStub(a.client.channel)
    call = stub.Subscribe(events_pb2.SubscribeRequest(filters=[f"namespace=={a.ns}"]))
    q: queue.Queue = queue.Queue()

    def pump():
        try:
            for env in call:
                q.put(env.topic)
        except grpc.RpcError:
            pass

    def publish(topic: str) -> None:
        probe = any_pb2.Any(type_url="containerd.events.ContainerDelete",
                            value=container_pb2.ContainerDelete(id="probe").SerializeToString())
        stub.Publish(events_pb2.PublishRequest(topic=topic, event=probe), metadata=a.md)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:  # no "subscribed" answer exists: publish until a probe arrives
            publish("/probe")
            try:
                if q.get(timeout=0.2) == "/probe":
                    break
            except queue.Empty:
                continue
        a.container("c1", "/bin/sh", "-c", "exit 0")
        a.create("c1")
        a.call("Start", pb.StartRequest(container_id="c1"))
        a.call("Wait", pb.WaitRequest(container_id="c1"))
        a.call("Delete", pb.DeleteTaskRequest(container_id="c1"))
        publish("/probe-end")  # the exchange delivers in order: everything before it has arrived
        topics = []
        while (topic := q.get(timeout=30)) != "/probe-end":
            if topic != "/probe":
                topics.append(topic)
    finally:
        call.cancel()
    assert topics == ["/containers/create"]
