"""A v1 task: pkg/runtime's Task and ExecProcess over one containerd-shim's
`containerd.runtime.linux.shim.v1.Shim` service (containerd 1.6's
runtime/v1/linux task.go and process.go).

The v1 shim publishes only its processes' exits (/tasks/exit, through
`pycontainerd publish`); the other task events are the daemon's to
publish, as containerd's v1 runtime does: /tasks/create (by the runtime),
/tasks/start, /tasks/exec-started, /tasks/paused, /tasks/resumed,
/tasks/delete. No /tasks/exec-added: containerd's v1 runtime sends none.

Requests name the process by its id (the container id for the init
process, else the exec id). A connection that is gone means the shim is
gone: State answers NotFound, and the init process's Wait answers with the
exit the dead-shim cleanup recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf import empty_pb2

from pycontainerd.pkg import errdefs, identifiers, timestamps
from pycontainerd.pkg.runtime import ConsoleSize, ExecOpts, Exit, ProcessInfo, State, Status
from pycontainerd.pkg.ttrpc import Client, Closed

from .bundle import Bundle
from .shim import ShimLogs, ShimProcess

SERVICE = "containerd.runtime.linux.shim.v1.Shim"
RUNTIME_NAME = "io.containerd.runtime.v1.linux"

TOPIC_START = "/tasks/start"
TOPIC_DELETE = "/tasks/delete"
TOPIC_PAUSED = "/tasks/paused"
TOPIC_RESUMED = "/tasks/resumed"
TOPIC_EXEC_STARTED = "/tasks/exec-started"

# containerd.v1.types.Status (the shim's numbers) -> runtime Status
_STATUS = {1: Status.CREATED, 2: Status.RUNNING, 3: Status.STOPPED, 4: Status.PAUSED, 5: Status.PAUSING}


def _pb():
    from pycontainerd.api.runtime.v1.shim.v1 import shim_pb2

    return shim_pb2


def _events():
    from pycontainerd.api.events import task_pb2

    return task_pb2


class V1Task:
    """runtime.Task over one v1 shim."""

    def __init__(self, bundle: Bundle, client: Client, pid: int, events: Any, process: ShimProcess | None,
                 logs: ShimLogs | None, kill_timeout: float):
        self.bundle = bundle
        self.client = client
        self._pid = pid
        self.events = events
        self.process_watch = process  # the shim process, when its pid is known
        self.logs = logs
        self.kill_timeout = kill_timeout
        self.exited: asyncio.Future = asyncio.get_running_loop().create_future()  # the dead-shim cleanup's Exit
        self.cgroup = None  # pkg.cgroups.TaskCgroup, found from the init pid
        # the init process's /tasks/exit, once the shim's publish of it has
        # reached the daemon (`expect_exit`: it ran under this daemon, so the
        # shim will send one); Delete waits for it before killing the shim
        self.exit_seen = asyncio.Event()
        # one Delete at a time: a second one must not reach a shim the first
        # has already killed (its Closed would wait for a cleanup that never comes)
        self.delete_lock = asyncio.Lock()
        self.expect_exit = False

    # identity

    @property
    def id(self) -> str:
        return self.bundle.id

    @property
    def namespace(self) -> str:
        return self.bundle.namespace

    @property
    def runtime(self) -> str:
        return RUNTIME_NAME

    async def call(self, method: str, request: Any, response_type: Any = empty_pb2.Empty):
        return await self.client.call(SERVICE, method, request, response_type, namespace=self.namespace)

    def publish(self, topic: str, event: Any) -> None:
        self.events.publish(self.namespace, topic, event)

    # lifecycle

    async def pid(self) -> int:
        return self._pid

    async def start(self) -> None:
        pb = _pb()
        resp = await self.call("Start", pb.StartRequest(id=self.id), pb.StartResponse)
        self._pid = resp.pid
        self.expect_exit = True
        await self._find_cgroup()
        self.publish(TOPIC_START, _events().TaskStart(container_id=self.id, pid=self._pid))

    async def _find_cgroup(self) -> None:
        """The init process's cgroup, for Stats (containerd loads it from the pid)."""
        if self.cgroup is not None or not self._pid:
            return
        from pycontainerd.pkg import cgroups

        try:
            self.cgroup = await asyncio.to_thread(cgroups.load, self._pid)
        except errdefs.ContainerdError:
            self.cgroup = None  # gone already, or no cgroups here: Stats says so

    async def state(self) -> State:
        return await _state(self, self.id)

    async def kill(self, signal: int, all: bool = False) -> None:
        await self.call("Kill", _pb().KillRequest(id=self.id, signal=signal, all=all))

    async def resize_pty(self, size: ConsoleSize) -> None:
        await self.call("ResizePty", _pb().ResizePtyRequest(id=self.id, width=size.width, height=size.height))

    async def close_io(self) -> None:
        await self.call("CloseIO", _pb().CloseIORequest(id=self.id, stdin=True))

    async def pause(self) -> None:
        await self.call("Pause", empty_pb2.Empty())
        self.publish(TOPIC_PAUSED, _events().TaskPaused(container_id=self.id))

    async def resume(self) -> None:
        await self.call("Resume", empty_pb2.Empty())
        self.publish(TOPIC_RESUMED, _events().TaskResumed(container_id=self.id))

    async def wait(self) -> Exit:
        pb = _pb()
        try:
            resp = await self.call("Wait", pb.WaitRequest(id=self.id), pb.WaitResponse)
        except Closed:
            return await asyncio.shield(self.exited)
        return Exit(pid=self._pid, status=resp.exit_status, exited_at=timestamps.from_pb(resp.exited_at))

    async def exec(self, exec_id: str, opts: ExecOpts) -> "V1Process":
        try:
            identifiers.validate(exec_id)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"invalid exec id: {exc.message}") from None
        if opts.spec is None:
            # containerd passes this on, and containerd-shim dereferences the missing
            # spec and dies with the task; refused as the v2 runtime refuses it
            raise errdefs.InvalidArgument("exec: process spec must be set")
        req = _pb().ExecProcessRequest(id=exec_id, stdin=opts.io.stdin, stdout=opts.io.stdout,
                                       stderr=opts.io.stderr, terminal=opts.io.terminal)
        if opts.spec is not None:
            req.spec.CopyFrom(opts.spec)
        await self.call("Exec", req)
        return V1Process(self, exec_id)

    async def pids(self) -> list[ProcessInfo]:
        pb = _pb()
        resp = await self.call("ListPids", pb.ListPidsRequest(id=self.id), pb.ListPidsResponse)
        return [ProcessInfo(pid=p.pid, info=p.info if p.HasField("info") else None) for p in resp.processes]

    async def checkpoint(self, path: str, options: Any | None) -> None:
        req = _pb().CheckpointTaskRequest(path=path)
        if options is not None:
            req.options.CopyFrom(options)
        await self.call("Checkpoint", req)
        self.publish("/tasks/checkpointed", _events().TaskCheckpointed(container_id=self.id))

    async def update(self, resources: Any | None, annotations: dict[str, str]) -> None:
        if resources is None:
            # containerd-shim would dereference the missing resources and die with the
            # task; refused as the v2 runtime refuses it (v1 has no annotations: dropped)
            raise errdefs.InvalidArgument("update: resources must be set")
        req = _pb().UpdateTaskRequest()
        req.resources.CopyFrom(resources)
        await self.call("Update", req)

    async def process(self, exec_id: str) -> "V1Process":
        proc = V1Process(self, exec_id)
        await proc.state()  # NotFound for an exec id the shim does not know
        return proc

    async def stats(self) -> Any:
        await self._find_cgroup()
        if self.cgroup is None:
            raise errdefs.NotFound("cgroup does not exist")
        try:
            return await asyncio.to_thread(self.cgroup.stat_any)
        except FileNotFoundError:
            raise errdefs.NotFound("cgroup does not exist") from None

    # the runtime's side

    async def delete_in_shim(self) -> Exit | None:
        """The shim's Delete of the init process; None when the shim
        answers NotFound (nothing to delete). `Closed` when it is gone."""
        pb = _pb()
        try:
            resp = await self.call("Delete", empty_pb2.Empty(), pb.DeleteResponse)
        except errdefs.NotFound:
            return None
        return Exit(pid=resp.pid, status=resp.exit_status, exited_at=timestamps.from_pb(resp.exited_at))

    async def kill_shim(self) -> None:
        """containerd's KillShim: the shim's pid from ShimInfo, SIGKILL,
        and wait (bounded) until it is gone."""
        pb = _pb()
        if self.process_watch is None:
            try:
                info = await self.call("ShimInfo", empty_pb2.Empty(), pb.ShimInfoResponse)
            except errdefs.ContainerdError:
                return  # gone already
            self.process_watch = ShimProcess(info.shim_pid)
        await self.process_watch.kill(self.kill_timeout)


class V1Process:
    """runtime.ExecProcess: an exec'd process of a v1 task."""

    def __init__(self, task: V1Task, exec_id: str):
        self.task = task
        self._id = exec_id

    @property
    def id(self) -> str:
        return self._id

    async def state(self) -> State:
        return await _state(self.task, self._id)

    async def kill(self, signal: int, all: bool = False) -> None:
        await self.task.call("Kill", _pb().KillRequest(id=self._id, signal=signal))

    async def resize_pty(self, size: ConsoleSize) -> None:
        await self.task.call("ResizePty", _pb().ResizePtyRequest(id=self._id, width=size.width, height=size.height))

    async def close_io(self) -> None:
        await self.task.call("CloseIO", _pb().CloseIORequest(id=self._id, stdin=True))

    async def start(self) -> None:
        pb = _pb()
        resp = await self.task.call("Start", pb.StartRequest(id=self._id), pb.StartResponse)
        self.task.publish(TOPIC_EXEC_STARTED,
                          _events().TaskExecStarted(container_id=self.task.id, exec_id=self._id, pid=resp.pid))

    async def wait(self) -> Exit:
        pb = _pb()
        try:
            resp = await self.task.call("Wait", pb.WaitRequest(id=self._id), pb.WaitResponse)
        except Closed:
            raise errdefs.NotFound(f"process {self._id} of task {self.task.id}: the shim is gone") from None
        return Exit(pid=0, status=resp.exit_status, exited_at=timestamps.from_pb(resp.exited_at))

    async def delete(self) -> Exit:
        pb = _pb()
        resp = await self.task.call("DeleteProcess", pb.DeleteProcessRequest(id=self._id), pb.DeleteResponse)
        return Exit(pid=resp.pid, status=resp.exit_status, exited_at=timestamps.from_pb(resp.exited_at))


async def _state(task: V1Task, process_id: str) -> State:
    pb = _pb()
    try:
        resp = await task.call("State", pb.StateRequest(id=process_id), pb.StateResponse)
    except Closed:
        raise errdefs.NotFound(f"task {task.id}") from None
    return State(
        status=_STATUS.get(resp.status, Status.STOPPED), pid=resp.pid, exit_status=resp.exit_status,
        exited_at=timestamps.from_pb(resp.exited_at) if resp.HasField("exited_at") else 0,
        stdin=resp.stdin, stdout=resp.stdout, stderr=resp.stderr, terminal=resp.terminal,
    )
