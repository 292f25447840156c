"""The runtime contract (containerd's runtime package): what a plugin of type
io.containerd.runtime.v2 (and, later, io.containerd.runtime.v1) hands the
Tasks service, and the types that cross between them.

The Tasks service speaks gRPC to clients and knows nothing of shims; a
runtime knows shims (their binaries, bundles, ttrpc) and nothing of gRPC.
Between them sit these plain objects, so a second runtime (v1's shim) is a
second implementation of the same three protocols.

Concurrency: every method is a coroutine, called on the daemon's event loop
(a runtime talks ttrpc to its shims on that loop). Errors are pkg.errdefs
classes with containerd's wording (NotFound for an unknown task or process,
AlreadyExists for a duplicate id, FailedPrecondition for a wrong state,
Unimplemented for what the shim cannot do); the gRPC edge maps them.
`Any` fields are protobuf `google.protobuf.Any` messages, passed through
unread where containerd passes them through (spec, runtime options,
resources, stats).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from .mount import Mount

# what the daemon checks on an io.containerd.runtime.v2 instance
RUNTIME_METHODS = ("create", "get", "tasks", "delete")


class Status(enum.IntEnum):
    """A process's state; the numbers are containerd's (runtime.Status)."""

    CREATED = 1
    RUNNING = 2
    STOPPED = 3
    DELETED = 4
    PAUSED = 5
    PAUSING = 6


@dataclass
class IO:
    """Where a process's stdio goes: paths the client created (FIFOs, or
    files), empty when unused; `terminal` asks the shim for a console."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass
class CreateOpts:
    """What Tasks.Create hands the runtime. `runtime` is the container's
    runtime name (`io.containerd.runc.v2`), which picks the shim binary."""

    spec: Any  # google.protobuf.Any holding the OCI spec JSON
    rootfs: list[Mount] = field(default_factory=list)
    io: IO = field(default_factory=IO)
    checkpoint: str = ""
    runtime_options: Any | None = None  # google.protobuf.Any, or None
    task_options: Any | None = None
    runtime: str = ""


@dataclass
class ExecOpts:
    spec: Any  # google.protobuf.Any holding the OCI process JSON
    io: IO = field(default_factory=IO)


@dataclass
class Exit:
    """How a process ended: pid, exit status, when (ns since the epoch)."""

    pid: int
    status: int
    exited_at: int


@dataclass
class State:
    status: Status
    pid: int = 0
    exit_status: int = 0
    exited_at: int = 0  # ns since the epoch; 0 while running
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass
class ProcessInfo:
    pid: int
    info: Any | None = None  # google.protobuf.Any from the shim, or None


@dataclass
class ConsoleSize:
    width: int
    height: int


class Process(Protocol):
    """A task's init process or one of its exec'd processes."""

    @property
    def id(self) -> str: ...

    async def state(self) -> State: ...

    async def kill(self, signal: int, all: bool = False) -> None: ...

    async def resize_pty(self, size: ConsoleSize) -> None: ...

    async def close_io(self) -> None: ...

    async def start(self) -> None: ...

    async def wait(self) -> Exit: ...


class ExecProcess(Process, Protocol):
    async def delete(self) -> Exit: ...


class Task(Process, Protocol):
    """A container's running (or created, or stopped) task, in a namespace."""

    @property
    def namespace(self) -> str: ...

    @property
    def runtime(self) -> str: ...  # the runtime name it was created with

    async def pid(self) -> int: ...

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    async def exec(self, exec_id: str, opts: ExecOpts) -> ExecProcess: ...

    async def pids(self) -> list[ProcessInfo]: ...

    async def checkpoint(self, path: str, options: Any | None) -> None: ...

    async def update(self, resources: Any | None, annotations: dict[str, str]) -> None: ...

    async def process(self, exec_id: str) -> ExecProcess: ...

    async def stats(self) -> Any: ...  # google.protobuf.Any (cgroup metrics)


class PlatformRuntime(Protocol):
    """A runtime plugin's instance. Task ids are container ids; every call
    acts in the namespace given (tasks of two namespaces never meet)."""

    @property
    def id(self) -> str: ...  # the plugin's full id, io.containerd.runtime.v2.task

    async def create(self, namespace: str, task_id: str, opts: CreateOpts) -> Task: ...

    async def get(self, namespace: str, task_id: str) -> Task: ...

    async def tasks(self, namespace: str | None, all: bool = False) -> list[Task]: ...

    async def delete(self, namespace: str, task_id: str) -> Exit: ...
