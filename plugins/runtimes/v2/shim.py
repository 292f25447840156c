"""A connected shim: the task (its init process) and its exec'd processes,
each call one containerd.task.v2.Task request over ttrpc, carrying the
task's namespace in `containerd-namespace-ttrpc` as containerd's client does.

Errors come back as the shim's status, already turned into errdefs classes
by pkg.ttrpc. A connection that is gone (`Closed`) means the shim is gone:
State then answers NotFound (as containerd's does), and Wait answers with
the exit the dead-shim cleanup recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from google.protobuf import empty_pb2

from pycontainerd.pkg import errdefs, identifiers, timestamps
from pycontainerd.pkg.mount import mounts_to_pb
from pycontainerd.pkg.runtime import ConsoleSize, CreateOpts, ExecOpts, Exit, ProcessInfo, State, Status
from pycontainerd.pkg.ttrpc import Client, Closed

from .bundle import Bundle

log = structlog.get_logger(__name__)

SERVICE = "containerd.task.v2.Task"

# containerd.v1.types.Status (the shim's numbers) -> runtime Status
_STATUS = {1: Status.CREATED, 2: Status.RUNNING, 3: Status.STOPPED, 4: Status.PAUSED, 5: Status.PAUSING}


def _pb():
    from pycontainerd.api.runtime.task.v2 import shim_pb2

    return shim_pb2


class ShimTask:
    """runtime.Task over one shim connection."""

    def __init__(self, bundle: Bundle, client: Client, runtime: str, timeouts: dict[str, float]):
        self.bundle = bundle
        self.client = client
        self._runtime = runtime
        self.timeouts = timeouts
        self.exited: asyncio.Future = asyncio.get_running_loop().create_future()  # the dead-shim cleanup's Exit

    # identity

    @property
    def id(self) -> str:
        return self.bundle.id

    @property
    def namespace(self) -> str:
        return self.bundle.namespace

    @property
    def runtime(self) -> str:
        return self._runtime

    async def call(self, method: str, request: Any, response_type: Any = empty_pb2.Empty, timeout: float | None = None):
        return await self.client.call(SERVICE, method, request, response_type, timeout=timeout, namespace=self.namespace)

    # lifecycle

    async def create(self, opts: CreateOpts) -> int:
        pb = _pb()
        options = opts.task_options if opts.task_options is not None else opts.runtime_options
        req = pb.CreateTaskRequest(
            id=self.id, bundle=self.bundle.path, stdin=opts.io.stdin, stdout=opts.io.stdout,
            stderr=opts.io.stderr, terminal=opts.io.terminal, checkpoint=opts.checkpoint,
        )
        if options is not None:
            req.options.CopyFrom(options)
        req.rootfs.extend(mounts_to_pb(opts.rootfs))
        resp = await self.call("Create", req, pb.CreateTaskResponse)
        return resp.pid

    async def start(self) -> None:
        pb = _pb()
        await self.call("Start", pb.StartRequest(id=self.id), pb.StartResponse)

    async def connect(self, timeout: float | None = None) -> Any:
        pb = _pb()
        return await self.call("Connect", pb.ConnectRequest(id=self.id), pb.ConnectResponse, timeout=timeout)

    async def pid(self) -> int:
        return (await self.connect()).task_pid

    async def state(self) -> State:
        return await _state(self, "")

    async def kill(self, signal: int, all: bool = False) -> None:
        await self.call("Kill", _pb().KillRequest(id=self.id, signal=signal, all=all))

    async def resize_pty(self, size: ConsoleSize) -> None:
        await self.call("ResizePty", _pb().ResizePtyRequest(id=self.id, width=size.width, height=size.height))

    async def close_io(self) -> None:
        await self.call("CloseIO", _pb().CloseIORequest(id=self.id, stdin=True))

    async def pause(self) -> None:
        await self.call("Pause", _pb().PauseRequest(id=self.id))

    async def resume(self) -> None:
        await self.call("Resume", _pb().ResumeRequest(id=self.id))

    async def wait(self) -> Exit:
        return await _wait(self, "")

    async def exec(self, exec_id: str, opts: ExecOpts) -> "ShimProcess":
        try:
            identifiers.validate(exec_id)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"invalid exec id {exec_id}: {exc.message}") from None
        if opts.spec is None:  # the runc shim reads it unchecked (Init.exec): without one, it panics
            raise errdefs.InvalidArgument("exec: process spec must be set")
        req = _pb().ExecProcessRequest(
            id=self.id, exec_id=exec_id, stdin=opts.io.stdin, stdout=opts.io.stdout,
            stderr=opts.io.stderr, terminal=opts.io.terminal,
        )
        req.spec.CopyFrom(opts.spec)
        await self.call("Exec", req)
        return ShimProcess(self, exec_id)

    async def pids(self) -> list[ProcessInfo]:
        pb = _pb()
        resp = await self.call("Pids", pb.PidsRequest(id=self.id), pb.PidsResponse)
        return [ProcessInfo(pid=p.pid, info=p.info if p.HasField("info") else None) for p in resp.processes]

    async def checkpoint(self, path: str, options: Any | None) -> None:
        req = _pb().CheckpointTaskRequest(id=self.id, path=path)
        if options is not None:
            req.options.CopyFrom(options)
        await self.call("Checkpoint", req)

    async def update(self, resources: Any | None, annotations: dict[str, str]) -> None:
        # containerd passes an Update without resources on, and the runc
        # shim (pkg/process's Init.update) reads them unchecked: it panics,
        # and the task loses its shim (the fuzz found it). Refused here.
        if resources is None:
            raise errdefs.InvalidArgument("update: resources must be set")
        req = _pb().UpdateTaskRequest(id=self.id, annotations=annotations)
        req.resources.CopyFrom(resources)
        await self.call("Update", req)

    async def process(self, exec_id: str) -> "ShimProcess":
        proc = ShimProcess(self, exec_id)
        await proc.state()  # NotFound for an exec id the shim does not know
        return proc

    async def stats(self) -> Any:
        pb = _pb()
        return (await self.call("Stats", pb.StatsRequest(id=self.id), pb.StatsResponse)).stats

    async def delete_in_shim(self) -> Exit | None:
        """The shim's Delete of the init process; None when the shim is gone."""
        pb = _pb()
        try:
            resp = await self.call("Delete", pb.DeleteRequest(id=self.id), pb.DeleteResponse)
        except Closed:
            return None
        return Exit(pid=resp.pid, status=resp.exit_status, exited_at=timestamps.from_pb(resp.exited_at))

    async def shutdown(self) -> None:
        """Ask the shim to exit (it does once it serves no task); a closed
        connection is what success looks like too."""
        try:
            await self.call("Shutdown", _pb().ShutdownRequest(id=self.id), timeout=self.timeouts["shutdown"])
        except Closed:
            pass


class ShimProcess:
    """runtime.ExecProcess: an exec'd process in a shim's task."""

    def __init__(self, task: ShimTask, exec_id: str):
        self.task = task
        self._id = exec_id

    @property
    def id(self) -> str:
        return self._id

    async def state(self) -> State:
        return await _state(self.task, self._id)

    async def kill(self, signal: int, all: bool = False) -> None:
        await self.task.call("Kill", _pb().KillRequest(id=self.task.id, exec_id=self._id, signal=signal, all=all))

    async def resize_pty(self, size: ConsoleSize) -> None:
        req = _pb().ResizePtyRequest(id=self.task.id, exec_id=self._id, width=size.width, height=size.height)
        await self.task.call("ResizePty", req)

    async def close_io(self) -> None:
        await self.task.call("CloseIO", _pb().CloseIORequest(id=self.task.id, exec_id=self._id, stdin=True))

    async def start(self) -> None:
        pb = _pb()
        await self.task.call("Start", pb.StartRequest(id=self.task.id, exec_id=self._id), pb.StartResponse)

    async def wait(self) -> Exit:
        return await _wait(self.task, self._id)

    async def delete(self) -> Exit:
        pb = _pb()
        resp = await self.task.call("Delete", pb.DeleteRequest(id=self.task.id, exec_id=self._id), pb.DeleteResponse)
        return Exit(pid=resp.pid, status=resp.exit_status, exited_at=timestamps.from_pb(resp.exited_at))


async def _state(task: ShimTask, exec_id: str) -> State:
    pb = _pb()
    try:
        resp = await task.call("State", pb.StateRequest(id=task.id, exec_id=exec_id), pb.StateResponse,
                               timeout=task.timeouts["state"])
    except Closed:
        raise errdefs.NotFound(f"task {task.id}") from None
    return State(
        status=_STATUS.get(resp.status, Status.STOPPED), pid=resp.pid, exit_status=resp.exit_status,
        exited_at=timestamps.from_pb(resp.exited_at) if resp.HasField("exited_at") else 0,
        stdin=resp.stdin, stdout=resp.stdout, stderr=resp.stderr, terminal=resp.terminal,
    )


async def _wait(task: ShimTask, exec_id: str) -> Exit:
    """The shim's Wait; if the shim dies meanwhile, the init process's exit
    as the dead-shim cleanup recorded it."""
    pb = _pb()
    try:
        pid = (await _state(task, exec_id)).pid if exec_id else (await task.connect()).task_pid
        resp = await task.call("Wait", pb.WaitRequest(id=task.id, exec_id=exec_id), pb.WaitResponse)
    except Closed:
        if exec_id:
            raise errdefs.NotFound(f"process {exec_id} of task {task.id}: the shim is gone") from None
        return await asyncio.shield(task.exited)
    return Exit(pid=pid, status=resp.exit_status, exited_at=timestamps.from_pb(resp.exited_at))

