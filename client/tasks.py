"""Tasks and processes from the client side: the Tasks API, and the
objects containerd's client gives (container.NewTask, task.Start, Wait,
Kill, Exec, Delete), with stdio through FIFOs (client/stdio.py).

    task = new_task(client, container)  # its stdout and stderr: ours
    task.start(); code = task.wait().exit_status; task.delete()

Errors come back as errdefs classes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2

from pycontainerd.api.services.tasks.v1 import tasks_pb2 as pb
from pycontainerd.api.services.tasks.v1 import tasks_pb2_grpc as pb_grpc
from pycontainerd.api.types.task import task_pb2
from pycontainerd.pkg import errdefs, errgrpc, timestamps
from pycontainerd.pkg.mount import mounts_to_pb
from pycontainerd.pkg.oci import spec as ocispec

from .client import _errors
from .containers import Container
from .snapshots import Snapshots
from .stdio import FIFOSet, StdioCopier, new_fifo_set, remove_fifo_dir

PROCESS_SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"

# containerd's ProcessStatus strings, by the API's enum
STATUS = {task_pb2.UNKNOWN: "unknown", task_pb2.CREATED: "created", task_pb2.RUNNING: "running",
          task_pb2.STOPPED: "stopped", task_pb2.PAUSED: "paused", task_pb2.PAUSING: "pausing"}


@dataclass
class ExitStatus:
    exit_status: int
    exited_at: int  # nanoseconds


@dataclass
class ProcessState:
    """A process as the Tasks service reports it."""

    container_id: str
    id: str
    pid: int
    status: str  # containerd's lowercase status
    stdin: str
    stdout: str
    stderr: str
    terminal: bool
    exit_status: int
    exited_at: int


def _state(p: Any) -> ProcessState:
    return ProcessState(p.container_id, p.id, p.pid, STATUS.get(p.status, "unknown"), p.stdin, p.stdout,
                        p.stderr, p.terminal, p.exit_status, timestamps.from_pb(p.exited_at))


class TasksService:
    """The Tasks service, one call per method."""

    def __init__(self, client: Any):
        self.client = client
        self.stub = pb_grpc.TasksStub(client.channel)

    def _call(self, name: str, request: Any) -> Any:
        return self.client._call(getattr(self.stub, name), request)

    @_errors
    def create(self, request: pb.CreateTaskRequest) -> int:
        return self._call("Create", request).pid

    @_errors
    def start(self, container_id: str, exec_id: str = "") -> int:
        return self._call("Start", pb.StartRequest(container_id=container_id, exec_id=exec_id)).pid

    @_errors
    def get(self, container_id: str, exec_id: str = "") -> ProcessState:
        return _state(self._call("Get", pb.GetRequest(container_id=container_id, exec_id=exec_id)).process)

    @_errors
    def list(self, filter: str = "") -> list[ProcessState]:
        return [_state(t) for t in self._call("List", pb.ListTasksRequest(filter=filter)).tasks]

    @_errors
    def delete(self, container_id: str) -> ExitStatus:
        r = self._call("Delete", pb.DeleteTaskRequest(container_id=container_id))
        return ExitStatus(r.exit_status, timestamps.from_pb(r.exited_at))

    @_errors
    def delete_process(self, container_id: str, exec_id: str) -> ExitStatus:
        r = self._call("DeleteProcess", pb.DeleteProcessRequest(container_id=container_id, exec_id=exec_id))
        return ExitStatus(r.exit_status, timestamps.from_pb(r.exited_at))

    @_errors
    def kill(self, container_id: str, signal: int, exec_id: str = "", all: bool = False) -> None:
        self._call("Kill", pb.KillRequest(container_id=container_id, exec_id=exec_id, signal=signal, all=all))

    @_errors
    def exec(self, request: pb.ExecProcessRequest) -> None:
        self._call("Exec", request)

    @_errors
    def resize_pty(self, container_id: str, exec_id: str, width: int, height: int) -> None:
        self._call("ResizePty", pb.ResizePtyRequest(container_id=container_id, exec_id=exec_id,
                                                     width=width, height=height))

    @_errors
    def close_io(self, container_id: str, exec_id: str = "") -> None:
        self._call("CloseIO", pb.CloseIORequest(container_id=container_id, exec_id=exec_id, stdin=True))

    @_errors
    def pause(self, container_id: str) -> None:
        self._call("Pause", pb.PauseTaskRequest(container_id=container_id))

    @_errors
    def resume(self, container_id: str) -> None:
        self._call("Resume", pb.ResumeTaskRequest(container_id=container_id))

    @_errors
    def pids(self, container_id: str) -> list[tuple[int, any_pb2.Any | None]]:
        r = self._call("ListPids", pb.ListPidsRequest(container_id=container_id))
        return [(p.pid, p.info if p.HasField("info") else None) for p in r.processes]

    @_errors
    def metrics(self, *filters: str) -> list[Any]:
        return list(self._call("Metrics", pb.MetricsRequest(filters=list(filters))).metrics)

    def wait(self, container_id: str, exec_id: str = "") -> ExitStatus:
        """Blocks until the process exits (no total timeout: a task may run for days)."""
        try:
            r = self.stub.Wait(pb.WaitRequest(container_id=container_id, exec_id=exec_id),
                               metadata=self.client._metadata)
        except grpc.RpcError as exc:
            raise errgrpc.from_grpc(exc.code(), exc.details()) from None
        return ExitStatus(r.exit_status, timestamps.from_pb(r.exited_at))


class Process:
    """A task's process (the init process when exec_id is "")."""

    def __init__(self, client: Any, container_id: str, exec_id: str = "", stdio: StdioCopier | None = None):
        self.client = client
        self.service = TasksService(client)
        self.container_id = container_id
        self.exec_id = exec_id
        self.stdio = stdio
        self._waiter: threading.Thread | None = None
        self._exit: ExitStatus | BaseException | None = None

    @property
    def id(self) -> str:
        return self.exec_id or self.container_id

    def start(self) -> int:
        return self.service.start(self.container_id, self.exec_id)

    def watch(self) -> None:
        """Start waiting for the exit in the background (before Start, as
        ctr does, so no exit can be missed)."""
        def wait() -> None:
            try:
                self._exit = self.service.wait(self.container_id, self.exec_id)
            except BaseException as exc:  # handed to wait()
                self._exit = exc
        self._waiter = threading.Thread(target=wait, daemon=True)
        self._waiter.start()

    def wait(self) -> ExitStatus:
        """The exit status, once the process exited and its output is copied."""
        if self._waiter is None:
            self.watch()
        while self._waiter.is_alive():
            self._waiter.join(0.5)  # in slices, so Ctrl-C reaches the caller
        if isinstance(self._exit, BaseException):
            raise self._exit
        if self.stdio is not None:
            self.stdio.wait(timeout=10)
        return self._exit

    def kill(self, signal: int, all: bool = False) -> None:
        self.service.kill(self.container_id, signal, self.exec_id, all)

    def resize(self, width: int, height: int) -> None:
        self.service.resize_pty(self.container_id, self.exec_id, width, height)

    def close_stdin(self) -> None:
        self.service.close_io(self.container_id, self.exec_id)

    def state(self) -> ProcessState:
        return self.service.get(self.container_id, self.exec_id)

    def delete(self) -> ExitStatus:
        try:
            state = self.state()
            if self.exec_id:
                status = self.service.delete_process(self.container_id, self.exec_id)
            else:
                if state.status not in ("stopped", "unknown") and not (state.status == "created" and state.pid == 0):
                    raise errdefs.FailedPrecondition(f"task must be stopped before deletion: {state.status}")
                status = self.service.delete(self.container_id)
        except errdefs.NotFound:
            # the process is gone already (its shim was killed, say): there
            # is nothing left to copy, and our FIFO directory must not stay
            self.close_io()
            raise
        if self.stdio is None:  # a loaded task: its FIFO directory, when it is one of ours
            remove_fifo_dir(state.stdout or state.stdin or state.stderr)
        self.close_io()
        return status

    def close_io(self) -> None:
        if self.stdio is not None:
            self.stdio.close()
            self.stdio = None


class Task(Process):
    """A container's task: its init process, plus what only a task does."""

    def pause(self) -> None:
        self.service.pause(self.container_id)

    def resume(self) -> None:
        self.service.resume(self.container_id)

    def pids(self) -> list[tuple[int, any_pb2.Any | None]]:
        return self.service.pids(self.container_id)

    def exec(self, exec_id: str, process: dict, terminal: bool = False, stdin: int | None = None,
             stdout: int | None = 1, stderr: int | None = 2, fifo_dir: str = "") -> Process:
        """task.Exec: a new process `exec_id` from an OCI process spec (a
        dict), its stdio through new FIFOs; not started yet."""
        fifos = new_fifo_set(exec_id, terminal, fifo_dir, stdin=stdin is not None, stdout=stdout is not None,
                             stderr=stderr is not None)
        copier = StdioCopier(fifos, stdin, stdout, stderr)
        proc = Process(self.client, self.container_id, exec_id, copier)
        try:
            value = ocispec.go_json(ocispec.shape({"process": process})["process"]).encode()
            self.service.exec(pb.ExecProcessRequest(
                container_id=self.container_id, exec_id=exec_id, stdin=fifos.stdin, stdout=fifos.stdout,
                stderr=fifos.stderr, terminal=terminal, spec=any_pb2.Any(type_url=PROCESS_SPEC_TYPE, value=value)))
        except BaseException:
            copier.close()
            raise
        copier._on_stdin_eof = proc.close_stdin
        copier.begin_stdin()
        return proc


def load_task(client: Any, container_id: str) -> Task:
    """The container's existing task (NotFound when it has none)."""
    TasksService(client).get(container_id)
    return Task(client, container_id)


def new_task(client: Any, container: Container, *, terminal: bool = False, stdin: int | None = None,
             stdout: int | None = 1, stderr: int | None = 2, fifo_dir: str = "",
             options: any_pb2.Any | None = None) -> Task:
    """container.NewTask: the rootfs mounts of the container's snapshot,
    stdio through new FIFOs copied to and from the given descriptors (None:
    no such stream), the terminal flag. The task is created, not started."""
    fifos: FIFOSet = new_fifo_set(container.id, terminal, fifo_dir, stdin=stdin is not None,
                                  stdout=stdout is not None, stderr=stderr is not None)
    task = Task(client, container.id)
    copier = StdioCopier(fifos, stdin, stdout, stderr, on_stdin_eof=lambda: task.close_stdin())
    task.stdio = copier
    try:
        request = pb.CreateTaskRequest(container_id=container.id, stdin=fifos.stdin, stdout=fifos.stdout,
                                       stderr=fifos.stderr, terminal=terminal)
        if container.snapshot_key:
            mounts = Snapshots(client, container.snapshotter).mounts(container.snapshot_key)
            request.rootfs.extend(mounts_to_pb(mounts))
        if options is not None:
            request.options.CopyFrom(options)
        task.service.create(request)
    except BaseException:
        copier.close()
        raise
    copier.begin_stdin()
    return task

