"""Runtime v1 against a hostile client and a careless operator: the real
daemon, ctr, Debian's containerd-shim and runc, requests made over gRPC
where ctr would not send them.

- `pycontainerd publish` (what the shim runs per event) with garbage,
  oversized or never-ending stdin, invalid or huge topics and namespaces,
  addresses that are no daemon (a file, a directory, nothing, a path too
  long for a socket): exit 1 with a bounded line, never a traceback,
  never a hang, and the daemon keeps serving;
- a v1 container whose runtime or task options hold garbage or another
  message, whose spec is not an OCI spec or maps root to a gid that is no
  uint32: a gRPC code with a plain message, nothing left (bundle, shim,
  socket, mount); a huge environment runs;
- two Creates of one v1 task at once (one wins, one shim), two Deletes
  (one gets the exit), Delete racing Kill: codes, and nothing left;
- a shim SIGKILLed during an Exec, a SIGSTOPped shim and the task list;
- Exec without a spec, Update without resources and other odd requests on
  a running task: codes, and the task (and its shim) run on;
- a container record of a running v1 task replaced by a runc v2 one: the
  v2 Create fails and leaves the v1 task alone;
- a bundle tampered with while no daemon ran (`address` naming a file and
  the daemon's socket, `shim.pid` another process): only the bundle goes;
- the operator's `shim` (a directory, a relative path, empty, a binary
  that is no shim), `runtime_root` (under a file; relative: the shim's,
  in the bundle, and the dead shim's cleanup finds it) and `runtime`.

Container ids start with `v1h-` and are unique per run."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid

import grpc
import pytest

import container_support as cs
from busybox_image import NAME
from e2e_support import PYCONTAINERD
from test_e2e_runtime_v1 import NS, V1, World, _need_root_and_tools, bundle_dirs, shim_socket

pytestmark = pytest.mark.e2e

MESSAGE_LIMIT = 4096  # what "bounded" means here: containerd's errors are a line


class HostileWorld(World):
    def id(self, prefix: str) -> str:
        cid = f"v1h-{prefix}-{uuid.uuid4().hex[:8]}"
        self.ids.append(cid)
        return cid


@pytest.fixture
def world(daemon):
    _need_root_and_tools()
    w = HostileWorld(daemon)
    try:
        yield w
    finally:
        w.close()


def _stubs(d):
    from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
    from pycontainerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
    from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc

    channel = grpc.insecure_channel("unix:" + d.address)
    return (channel, containers_pb2_grpc.ContainersStub(channel), containers_pb2,
            tasks_pb2_grpc.TasksStub(channel), tasks_pb2, snapshots_pb2_grpc.SnapshotsStub(channel), snapshots_pb2)


def _v1_container(w, prefix: str, runtime_options=None, spec: bytes | None = None) -> str:
    """A v1 container made by ctr (its snapshot prepared); with runtime
    options (which no update may change) it is made again over gRPC from
    ctr's, under a new id; a spec is replaced by an update."""
    cid = w.id(prefix)
    w.d.ctr("containers", "create", "--runtime", V1, NAME, cid, "/bin/sleep", "600")
    if runtime_options is None and spec is None:
        return cid
    from google.protobuf import field_mask_pb2

    channel, containers, cpb, *_ = _stubs(w.d)
    with channel:
        c = containers.Get(cpb.GetContainerRequest(id=cid), metadata=NS).container
        if spec is not None:
            c.spec.value = spec
            containers.Update(cpb.UpdateContainerRequest(container=c, update_mask=field_mask_pb2.FieldMask(
                paths=["spec"])), metadata=NS)
        if runtime_options is not None:
            c.id = w.id(prefix)
            c.snapshot_key = ""
            c.runtime.options.CopyFrom(runtime_options)
            containers.Create(cpb.CreateContainerRequest(container=c), metadata=NS)
            return c.id
    return cid


def _rootfs(w, cid: str):
    channel, _, _, _, _, snapshots, spb = _stubs(w.d)
    with channel:
        return list(snapshots.Mounts(spb.MountsRequest(snapshotter="overlayfs", key=cid), metadata=NS).mounts)


def _create(w, cid: str, rootfs=None) -> grpc.RpcError | int:
    channel, _, _, tasks, tpb, _, _ = _stubs(w.d)
    with channel:
        try:
            return tasks.Create(tpb.CreateTaskRequest(container_id=cid, rootfs=rootfs or []), metadata=NS,
                                timeout=60).pid
        except grpc.RpcError as exc:
            return exc


def _assert_clean_error(exc, code: grpc.StatusCode, text: str) -> None:
    assert isinstance(exc, grpc.RpcError), exc
    assert exc.code() == code, (exc.code(), exc.details())
    assert text in exc.details(), exc.details()
    assert len(exc.details()) <= MESSAGE_LIMIT
    assert "Traceback" not in exc.details() and "Error(" not in exc.details()


def _nothing_of(w, cid: str) -> dict:
    left = {}
    if bundle_dirs(w.d, cid):
        left["bundles"] = bundle_dirs(w.d, cid)
    if os.path.exists(shim_socket(w.d, cid)):
        left["socket"] = shim_socket(w.d, cid)
    shims = cs.shim_pids(w.d.address) - set(w.shims_before)
    if shims:
        left["shims"] = sorted(shims)
    return left


def _remove_client_fifos(cid: str) -> None:
    for name in cs.fifos_of(cid):
        path = os.path.join("/run/containerd/fifo", name)
        os.unlink(path)
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass


def _wait_cleaned_up(w) -> None:
    """Until the residue is only the container (still there) and its snapshot."""
    deadline = time.monotonic() + 60
    while set(w.residue()) - {"containers", "snapshots"}:
        assert time.monotonic() < deadline, w.residue()
        time.sleep(0.2)


def _still_serving(w) -> None:
    out = w.d.ctr("version", check=False)
    assert out.returncode == 0, out.stderr


# -- runtime options and spec -------------------------------------------------------------------


def _any(type_url: str, value: bytes):
    from google.protobuf import any_pb2

    return any_pb2.Any(type_url=type_url, value=value)


@pytest.mark.parametrize("options", [
    ("containerd.runc.v1.Options", b""),  # the v2 shim's options: another message
    ("containerd.linux.runc.RuncOptions", b"\xff\xff\xff\xff"),  # the right type, bytes that do not parse
    ("", b"\x0a\x03abc"),  # no type at all
])
def test_runtime_options_of_another_type_or_garbage_are_refused_and_leave_nothing(world, options):
    cid = _v1_container(world, "opts", runtime_options=_any(*options))
    err = _create(world, cid)
    _assert_clean_error(err, grpc.StatusCode.UNKNOWN, "invalid runtime options format")
    assert _nothing_of(world, cid) == {}
    _still_serving(world)


def test_task_options_of_another_type_are_refused_and_leave_nothing(world):
    cid = _v1_container(world, "topts")
    channel, _, _, tasks, tpb, _, _ = _stubs(world.d)
    with channel:
        with pytest.raises(grpc.RpcError) as info:
            tasks.Create(tpb.CreateTaskRequest(container_id=cid, options=_any("containerd.runc.v1.Options", b"")),
                         metadata=NS, timeout=60)
    _assert_clean_error(info.value, grpc.StatusCode.UNKNOWN, "invalid task create options format")
    assert _nothing_of(world, cid) == {}


@pytest.mark.parametrize("spec, text", [
    (b"{}", "process"),  # no process, no root: runc says so
    (b'{"ociVersion": "1.0.2", "process": {"args": []}, "root": {"path": "rootfs"}}', ""),
])
def test_a_spec_runc_refuses_gives_an_error_and_leaves_nothing(world, spec, text):
    cid = _v1_container(world, "spec", spec=spec)
    err = _create(world, cid, _rootfs(world, cid))
    assert isinstance(err, grpc.RpcError), err
    assert err.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INVALID_ARGUMENT), (err.code(), err.details())
    assert len(err.details()) <= MESSAGE_LIMIT and "Traceback" not in err.details()
    assert cs.mounts_under(world.d.root, world.d.state) == []
    assert _nothing_of(world, cid) == {}
    _still_serving(world)


@pytest.mark.parametrize("spec", [
    # hostIDs the bundle's permissions would chown to: a Go reader's answer, not a crash
    b'{"linux": {"gidMappings": [{"containerID": 0, "hostID": "root", "size": 1}]}}',
    b'{"linux": {"gidMappings": [{"containerID": 0, "hostID": 1099511627776, "size": 1}]}}',
    b'{"linux": {"gidMappings": [{"containerID": 0, "hostID": -7, "size": 1}]}}',
    b'{"linux": {"gidMappings": {"containerID": 0}}}',
    b'[1, 2]',
    b'null',
    b'not json',
])
def test_a_spec_of_the_wrong_shape_is_refused_without_internals_and_leaves_nothing(world, spec):
    cid = _v1_container(world, "shape", spec=spec)
    err = _create(world, cid)
    assert isinstance(err, grpc.RpcError), err
    assert err.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INVALID_ARGUMENT), (err.code(), err.details())
    assert len(err.details()) <= MESSAGE_LIMIT
    for internal in ("Traceback", "Error:", "TypeError", "OverflowError", "'int'", "'str'"):
        assert internal not in err.details(), err.details()
    assert "internal error" not in err.details(), err.details()
    assert _nothing_of(world, cid) == {}
    _still_serving(world)


def test_a_huge_environment_runs(world):
    env = [f"V1H_{i}={'x' * 100}" for i in range(2000)]  # ~200 KiB of environment
    cid = world.id("env")
    out = world.d.ctr("run", "--runtime", V1, "--rm", *[a for e in env for a in ("--env", e)], NAME, cid,
                      "/bin/sh", "-c", "echo $V1H_1999 | wc -c", check=False, stdin=subprocess.DEVNULL, timeout=120)
    assert (out.returncode, out.stdout.strip()) == (0, b"101"), out.stderr[-2000:]
    assert world.settled_residue() == {}


# -- races ----------------------------------------------------------------------------------------


def test_two_creates_of_one_task_at_once_one_wins_one_shim(world):
    cid = _v1_container(world, "twice")
    rootfs = _rootfs(world, cid)
    results: list = [None, None]
    barrier = threading.Barrier(2)

    def create(i: int) -> None:
        barrier.wait()
        results[i] = _create(world, cid, rootfs)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pids = [r for r in results if isinstance(r, int)]
    errors = [r for r in results if not isinstance(r, int)]
    assert len(pids) == 1 and pids[0] > 0, results
    _assert_clean_error(errors[0], grpc.StatusCode.ALREADY_EXISTS, f"task {cid}")
    assert len(cs.shim_pids(world.d.address) - set(world.shims_before)) == 1
    world.d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
    world.d.ctr("tasks", "rm", "-f", cid, check=False)
    deadline = time.monotonic() + 30
    while world.d.ctr("tasks", "rm", cid, check=False).returncode == 0 or _nothing_of(world, cid):
        if not _nothing_of(world, cid):
            break
        assert time.monotonic() < deadline, _nothing_of(world, cid)
        time.sleep(0.2)
    world.d.ctr("containers", "rm", cid)
    assert world.settled_residue() == {}


def test_delete_racing_kill_ends_with_the_task_gone(world):
    cid = world.id("race")
    world.d.ctr("run", "-d", "--runtime", V1, NAME, cid, "/bin/sleep", "600", stdin=subprocess.DEVNULL)
    channel, _, _, tasks, tpb, _, _ = _stubs(world.d)
    results: list = [None, None]
    barrier = threading.Barrier(2)

    def call(i: int) -> None:
        barrier.wait()
        try:
            if i == 0:
                tasks.Kill(tpb.KillRequest(container_id=cid, signal=9), metadata=NS, timeout=60)
            else:
                tasks.Delete(tpb.DeleteTaskRequest(container_id=cid), metadata=NS, timeout=60)
            results[i] = "ok"
        except grpc.RpcError as exc:
            results[i] = exc

    with channel:
        threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            if r != "ok":
                assert r.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                                    grpc.StatusCode.UNKNOWN), (r.code(), r.details())
                assert len(r.details()) <= MESSAGE_LIMIT and "Traceback" not in r.details()
        # whatever the order, a forced delete finishes the job
        deadline = time.monotonic() + 30
        while True:
            try:
                tasks.Delete(tpb.DeleteTaskRequest(container_id=cid), metadata=NS, timeout=60)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    break
                # the shim's plain "cannot delete a running process" while the kill lands
                assert exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNKNOWN), exc.details()
            assert time.monotonic() < deadline
            time.sleep(0.2)
    world.d.ctr("containers", "rm", cid)
    _remove_client_fifos(cid)  # ctr's, which only a client's own Delete removes
    assert world.settled_residue() == {}


# -- operator config ----------------------------------------------------------------------------


@pytest.mark.parametrize("shim, text", [
    ("/usr/bin", "failed to start shim: fork/exec /usr/bin: permission denied"),
    ("bin/containerd-shim", "failed to start shim"),
])
def test_a_shim_config_naming_a_directory_or_a_relative_path_is_refused(daemon, shim, text):
    _need_root_and_tools()
    w = HostileWorld(daemon, config={"plugins": {V1: {"shim": shim}}})
    try:
        cid = _v1_container(w, "cfg")
        err = _create(w, cid)
        _assert_clean_error(err, grpc.StatusCode.UNKNOWN, text)
        assert _nothing_of(w, cid) == {}
    finally:
        w.close()


# -- pycontainerd publish ------------------------------------------------------------------------------


def _publish(address: str, stdin, *, topic: str = "/v1h/t", namespace: str = "default", timeout: float = 60):
    return subprocess.run([PYCONTAINERD, "--address", address, "publish", "--topic", topic, "--namespace", namespace],
                          stdin=stdin if not isinstance(stdin, bytes) else None,
                          input=stdin if isinstance(stdin, bytes) else None, capture_output=True, timeout=timeout)


def _event(size: int = 0) -> bytes:
    from google.protobuf import any_pb2

    return any_pb2.Any(type_url="types.v1h/x", value=b"x" * size).SerializeToString()


def _bounded_failure(out) -> None:
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert out.stderr.startswith(b"pycontainerd: "), out.stderr[-2000:]
    assert len(out.stderr) <= MESSAGE_LIMIT and b"Traceback" not in out.stderr, out.stderr[-2000:]


def test_publish_refuses_garbage_an_invalid_namespace_and_an_oversized_event(daemon):
    d = daemon()
    assert _publish(d.address, _event(10)).returncode == 0
    for out in (_publish(d.address, b"\xff\xfe garbage"),
                _publish(d.address, _event(10), namespace="not a namespace!"),
                _publish(d.address, _event(10), namespace=""),
                _publish(d.address, _event(10), topic="no-leading-slash"),
                _publish(d.address, _event(10), topic="/" + "t" * 100_000),
                _publish(d.address, _event(10), namespace="n" * 100_000),
                _publish(d.address, _event(17 * 1024 * 1024))):
        _bounded_failure(out)
    assert _publish(d.address, _event(10)).returncode == 0  # still serving


def test_publish_to_something_that_is_not_a_daemon_fails_with_a_line(daemon, tmp_path):
    d = daemon()
    regular = os.path.join(d.dir, "file")
    open(regular, "w").close()
    for address in (regular, d.dir, os.path.join(d.dir, "absent.sock"), os.path.join(d.dir, "a" * 5000)):
        _bounded_failure(_publish(address, _event(1)))


def test_publish_with_stdin_that_never_closes_does_not_hang(daemon):
    d = daemon()
    r, w_ = os.pipe()
    try:
        os.write(w_, _event(1)[:3])
        proc = subprocess.Popen([PYCONTAINERD, "--address", d.address, "publish", "--topic", "/v1h/t",
                                 "--namespace", "default"], stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 1, err
        assert err.startswith(b"pycontainerd: reading the event from stdin: no end after"), err
        assert len(err) <= MESSAGE_LIMIT and b"Traceback" not in err
    finally:
        os.close(r)
        os.close(w_)


# -- a shim that stops answering, then dies ------------------------------------------------------------


def test_a_shim_sigkilled_during_an_exec_answers_it_with_a_code_and_its_task_goes(world):
    cid = world.id("midexec")
    world.d.ctr("run", "-d", "--runtime", V1, NAME, cid, "/bin/sleep", "600", stdin=subprocess.DEVNULL)
    from test_e2e_runtime_v1 import shim_pid

    pid = shim_pid(world.d, cid)
    channel, _, _, tasks, tpb, _, _ = _stubs(world.d)
    result: list = []
    with channel:
        spec = tasks.Get(tpb.GetRequest(container_id=cid), metadata=NS)  # reachable before the stop
        assert spec.process.pid > 0
        os.kill(pid, 19)  # SIGSTOP: the shim takes the request and never answers

        def execute() -> None:
            from google.protobuf import any_pb2

            process = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
                                  value=b'{"args": ["/bin/true"], "cwd": "/"}')
            try:
                tasks.Exec(tpb.ExecProcessRequest(container_id=cid, exec_id="e1", spec=process), metadata=NS,
                           timeout=60)
                result.append("ok")
            except grpc.RpcError as exc:
                result.append(exc)

        thread = threading.Thread(target=execute)
        thread.start()
        # the daemon keeps serving others while this shim does not answer
        _still_serving(world)
        time.sleep(0.5)
        os.kill(pid, 9)
        thread.join(90)
        assert not thread.is_alive()
        err = result[0]
        assert isinstance(err, grpc.RpcError), result
        assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.NOT_FOUND), (
            err.code(), err.details())
        assert len(err.details()) <= MESSAGE_LIMIT and "Traceback" not in err.details()
        deadline = time.monotonic() + 30
        while True:  # the dead shim's cleanup takes the task away
            try:
                tasks.Get(tpb.GetRequest(container_id=cid), metadata=NS)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND, (exc.code(), exc.details())
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
    _remove_client_fifos(cid)
    _wait_cleaned_up(world)  # State answers NotFound at once; the dead shim's cleanup runs on
    world.d.ctr("containers", "rm", cid)
    assert world.settled_residue() == {}, world.d.log()[-6000:]


def test_a_stopped_shim_does_not_hold_the_task_list(world):
    cid = world.id("stopped")
    world.d.ctr("run", "-d", "--runtime", V1, NAME, cid, "/bin/sleep", "600", stdin=subprocess.DEVNULL)
    from test_e2e_runtime_v1 import shim_pid

    pid = shim_pid(world.d, cid)
    os.kill(pid, 19)
    try:
        out = world.d.ctr("tasks", "ls", check=False, timeout=120)
        assert out.returncode == 0, out.stderr
        _still_serving(world)
    finally:
        os.kill(pid, 18)


# -- one id, two runtimes -------------------------------------------------------------------------


def test_a_v2_task_of_the_id_of_a_running_v1_task_leaves_the_v1_task_alone(world):
    """The container record of a running v1 task is deleted under it (the
    Containers service lets a client do that) and made again for runc v2:
    the v2 Create fails, and the v1 task runs on, listed once."""
    cid = world.id("both")
    world.d.ctr("run", "-d", "--runtime", V1, NAME, cid, "/bin/sleep", "600", stdin=subprocess.DEVNULL)
    channel, containers, cpb, tasks, tpb, _, _ = _stubs(world.d)
    with channel:
        c = containers.Get(cpb.GetContainerRequest(id=cid), metadata=NS).container
        v1_pid = tasks.Get(tpb.GetRequest(container_id=cid), metadata=NS).process.pid
        containers.Delete(cpb.DeleteContainerRequest(id=cid), metadata=NS)
        c.runtime.name = "io.containerd.runc.v2"
        containers.Create(cpb.CreateContainerRequest(container=c), metadata=NS)
        err = _create(world, cid, _rootfs(world, cid))
        assert isinstance(err, grpc.RpcError), err
        assert len(err.details()) <= MESSAGE_LIMIT and "Traceback" not in err.details()
        os.kill(v1_pid, 0)  # still there
        with open(f"/proc/{v1_pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == b"/bin/sleep"
        listed = [p.id for p in tasks.List(tpb.ListTasksRequest(), metadata=NS).tasks]
        assert listed.count(cid) == 1, listed
        # put the record back as it was, and end the v1 task the usual way
        containers.Delete(cpb.DeleteContainerRequest(id=cid), metadata=NS)
        c.runtime.name = V1
        containers.Create(cpb.CreateContainerRequest(container=c), metadata=NS)
    world.d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
    deadline = time.monotonic() + 30
    while world.d.ctr("tasks", "rm", cid, check=False).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    world.d.ctr("containers", "rm", cid)
    _remove_client_fifos(cid)
    assert world.settled_residue() == {}


@pytest.mark.parametrize("key, value", [
    ("shim", ""),
    ("runtime_root", "/dev/null/runc"),  # under a file: runc cannot make its state there
    ("runtime", "/nonexistent/runc"),
])
def test_odd_runtime_config_gives_an_error_and_leaves_nothing(daemon, key, value):
    _need_root_and_tools()
    w = HostileWorld(daemon, config={"plugins": {V1: {key: value}}})
    try:
        cid = _v1_container(w, "odd")
        err = _create(w, cid, _rootfs(w, cid))
        assert isinstance(err, grpc.RpcError), err
        assert err.code() == grpc.StatusCode.UNKNOWN, (err.code(), err.details())
        assert len(err.details()) <= MESSAGE_LIMIT and "Traceback" not in err.details()
        assert "internal error" not in err.details(), err.details()
        assert cs.mounts_under(w.d.root, w.d.state) == []
        assert _nothing_of(w, cid) == {}
        _still_serving(w)
    finally:
        w.close()


# -- hostile requests on a running v1 task --------------------------------------------------------


def test_hostile_requests_on_a_running_v1_task_get_codes_and_the_task_runs_on(world):
    from google.protobuf import any_pb2

    cid = world.id("calls")
    world.d.ctr("run", "-d", "--runtime", V1, NAME, cid, "/bin/sleep", "600", stdin=subprocess.DEVNULL)
    channel, _, _, tasks, tpb, _, _ = _stubs(world.d)
    garbage = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Process", value=b"\xff{not")
    calls = {
        "kill a huge signal": lambda: tasks.Kill(tpb.KillRequest(container_id=cid, signal=2**32 - 1), metadata=NS),
        "kill an unknown exec": lambda: tasks.Kill(tpb.KillRequest(container_id=cid, exec_id="nope", signal=9),
                                                  metadata=NS),
        "exec a garbage spec": lambda: tasks.Exec(tpb.ExecProcessRequest(container_id=cid, exec_id="g1",
                                                                         spec=garbage), metadata=NS),
        "exec a path id": lambda: tasks.Exec(tpb.ExecProcessRequest(container_id=cid, exec_id="../../x",
                                                                    spec=garbage), metadata=NS),
        "exec no spec": lambda: tasks.Exec(tpb.ExecProcessRequest(container_id=cid, exec_id="g2"), metadata=NS),
        "resize no terminal": lambda: tasks.ResizePty(tpb.ResizePtyRequest(container_id=cid, width=2**32 - 1,
                                                                           height=2**32 - 1), metadata=NS),
        "update garbage": lambda: tasks.Update(tpb.UpdateTaskRequest(container_id=cid, resources=any_pb2.Any(
            type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", value=b"\x00\xff")),
            metadata=NS),
        "update no resources": lambda: tasks.Update(tpb.UpdateTaskRequest(container_id=cid), metadata=NS),
        "start the init again": lambda: tasks.Start(tpb.StartRequest(container_id=cid), metadata=NS),
        "delete an unknown exec": lambda: tasks.DeleteProcess(tpb.DeleteProcessRequest(container_id=cid,
                                                                                       exec_id="nope"), metadata=NS),
        "start an unknown exec": lambda: tasks.Start(tpb.StartRequest(container_id=cid, exec_id="nope"),
                                                     metadata=NS),
    }
    answers = {}
    with channel:
        for name, call in calls.items():
            try:
                call()
                answers[name] = "ok"
            except grpc.RpcError as exc:
                assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
                                          grpc.StatusCode.DEADLINE_EXCEEDED), (name, exc.code(), exc.details())
                assert len(exc.details()) <= MESSAGE_LIMIT, name
                assert "Traceback" not in exc.details() and "internal error" not in exc.details(), (name, exc.details())
                answers[name] = exc.code()
        assert answers["exec a path id"] == grpc.StatusCode.INVALID_ARGUMENT, answers
        assert answers["delete an unknown exec"] == grpc.StatusCode.NOT_FOUND, answers
        # containerd-shim would dereference a missing spec or resources and die, taking the task with it
        assert answers["exec no spec"] == grpc.StatusCode.INVALID_ARGUMENT, answers
        assert answers["update no resources"] == grpc.StatusCode.INVALID_ARGUMENT, answers
        state = tasks.Get(tpb.GetRequest(container_id=cid), metadata=NS).process
        assert state.status == 2, (state, answers)  # RUNNING: none of it hurt the task
    world.d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
    deadline = time.monotonic() + 30
    while world.d.ctr("tasks", "rm", cid, check=False).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    world.d.ctr("containers", "rm", cid)
    _remove_client_fifos(cid)
    assert world.settled_residue() == {}


# -- a bundle tampered with while no daemon ran ------------------------------------------------


def test_restart_with_a_tampered_bundle_deletes_only_the_bundle(daemon):
    """A bundle left by a dead daemon whose `address` names a regular file
    and the daemon's own socket, and whose `shim.pid` names a process that
    is no shim: the next daemon cleans the bundle up and touches neither."""
    _need_root_and_tools()
    from pycontainerd.plugins.runtimes.v1.bundle import Bundle

    w = HostileWorld(daemon)
    bystander = subprocess.Popen(["/bin/sleep", "600"])
    try:
        d = w.d
        root, state = d.root, d.state
        d.stop()
        victim = os.path.join(d.dir, "victim")
        with open(victim, "w") as f:
            f.write("keep me")
        made = []
        for target in (victim, d.address):
            cid = w.id("tampered")
            bundle = Bundle.create(os.path.join(root, V1), os.path.join(state, V1), "default", cid, b"{}")
            bundle.write("address", "unix://" + target)
            bundle.write("shim.pid", str(bystander.pid))
            made.append(cid)
        w.restart()
        with open(victim) as f:
            assert f.read() == "keep me"
        assert os.path.exists(w.d.address)
        assert bystander.poll() is None
        _still_serving(w)
        for cid in made:
            deadline = time.monotonic() + 60
            while bundle_dirs(w.d, cid):  # the one at the daemon's own socket is found to be no shim
                assert time.monotonic() < deadline, bundle_dirs(w.d, cid)
                time.sleep(0.2)
        assert os.path.exists(w.d.address)
        _still_serving(w)
    finally:
        bystander.kill()
        bystander.wait()
        w.close()


def test_a_relative_runtime_root_is_the_shims_and_its_dead_shim_is_cleaned_up(daemon):
    """`runtime_root = "rel-runc"`: the shim (running in the bundle) keeps
    runc's state there; when the shim is SIGKILLed, the cleanup finds the
    container there too, and nothing is left (no container process, no
    cgroup, no mount)."""
    _need_root_and_tools()
    from test_e2e_runtime_v1 import shim_pid

    w = HostileWorld(daemon, config={"plugins": {V1: {"runtime_root": "rel-runc"}}})
    try:
        cid = w.id("rel")
        out = w.d.ctr("run", "--runtime", V1, "--rm", NAME, cid, "/bin/echo", "hi", check=False,
                      stdin=subprocess.DEVNULL, timeout=60)
        assert (out.returncode, out.stdout) == (0, b"hi\n"), out.stderr
        cid = w.id("reldead")
        w.d.ctr("run", "-d", "--null-io", "--runtime", V1, NAME, cid, "/bin/sleep", "600", stdin=subprocess.DEVNULL)
        channel, _, _, tasks, tpb, _, _ = _stubs(w.d)
        with channel:
            pid = tasks.Get(tpb.GetRequest(container_id=cid), metadata=NS).process.pid
        os.kill(shim_pid(w.d, cid), 9)
        _wait_cleaned_up(w)
        deadline = time.monotonic() + 30
        while cs._alive(pid):
            assert time.monotonic() < deadline, "the container outlived its dead shim"
            time.sleep(0.1)
        w.d.ctr("containers", "rm", cid)
        assert w.settled_residue() == {}
    finally:
        w.close()


def test_two_deletes_of_a_stopped_v1_task_at_once_one_gets_the_exit(world):
    cid = world.id("deltwice")
    world.d.ctr("run", "-d", "--null-io", "--runtime", V1, NAME, cid, "/bin/sh", "-c", "exit 7",
                stdin=subprocess.DEVNULL)
    channel, _, _, tasks, tpb, _, _ = _stubs(world.d)
    results: list = [None, None]
    barrier = threading.Barrier(2)

    def delete(i: int) -> None:
        barrier.wait()
        try:
            results[i] = tasks.Delete(tpb.DeleteTaskRequest(container_id=cid), metadata=NS, timeout=60)
        except grpc.RpcError as exc:
            results[i] = exc

    with channel:
        deadline = time.monotonic() + 30
        while tasks.Get(tpb.GetRequest(container_id=cid), metadata=NS).process.status != 3:  # STOPPED
            assert time.monotonic() < deadline
            time.sleep(0.1)
        threads = [threading.Thread(target=delete, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    answers = [r for r in results if not isinstance(r, grpc.RpcError)]
    errors = [r for r in results if isinstance(r, grpc.RpcError)]
    assert [a.exit_status for a in answers] == [7], results
    assert [e.code() for e in errors] == [grpc.StatusCode.NOT_FOUND], [(e.code(), e.details()) for e in errors]
    world.d.ctr("containers", "rm", cid)
    assert world.settled_residue() == {}


@pytest.mark.parametrize("script", [
    "exit 3",  # a binary that is no shim: it ends at once
    "while :; do /bin/sleep 1; done",  # one that never answers: the client's deadline ends the Create
])
def test_a_shim_that_is_no_shim_fails_the_create_and_leaves_nothing(daemon, script):
    _need_root_and_tools()
    d0 = daemon.tempdir()
    fake = os.path.join(d0, "fake-shim")
    with open(fake, "w") as f:
        f.write(f"#!/bin/sh\n{script}\n")
    os.chmod(fake, 0o755)
    w = HostileWorld(daemon, config={"plugins": {V1: {"shim": fake}}})
    try:
        cid = _v1_container(w, "fake")
        channel, _, _, tasks, tpb, _, _ = _stubs(w.d)
        with channel:
            with pytest.raises(grpc.RpcError) as info:
                tasks.Create(tpb.CreateTaskRequest(container_id=cid), metadata=NS, timeout=5)
        err = info.value
        assert err.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
                              grpc.StatusCode.DEADLINE_EXCEEDED), (err.code(), err.details())
        assert len(err.details()) <= MESSAGE_LIMIT and "Traceback" not in err.details()
        deadline = time.monotonic() + 30
        while _nothing_of(w, cid) or _fakes(fake):  # a cancelled Create cleans up as it unwinds
            assert time.monotonic() < deadline, (_nothing_of(w, cid), _fakes(fake))
            time.sleep(0.2)
        _still_serving(w)
    finally:
        for pid in _fakes(fake):
            os.kill(pid, 9)
        w.close()


def _fakes(path: str) -> list[int]:
    """Processes running the script `path` (the fake shim)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if os.fsencode(path) in argv:
                found.append(int(entry))
    return found
