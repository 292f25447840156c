"""A TEST DOUBLE of the runtime v2 plugin, for the tasks service's tests
only: `io.containerd.runtime.v2.task` implemented in-process on
pkg/runtime's contract, so the tasks service's translation (requests in,
runtime calls, answers out) is tested while the real plugin (shims over
ttrpc) is built elsewhere.

It behaves like a shim with runc, minus the isolation: a task's process is
a real host process, created blocked (as `runc create` leaves `runc init`
waiting on its exec FIFO: here a shell waits on a pipe) and released by
start, so pids, exit codes, signals, SIGSTOP/SIGCONT pause, waits and stdio
files are real. The spec's `process.args` are run as they are, on the
host. It records what it was handed (`created`, `resized`, `closed_io`,
`updated`) for the tests to check, can play a shim that stops answering
(`unresponsive`), and raises pkg.errdefs errors with the
shim's wording where a test looks at them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from typing import Any

from google.protobuf import any_pb2

from pycontainerd.core.registry import PluginType, Registration
from pycontainerd.pkg import errdefs
from pycontainerd.pkg import runtime as rt
from pycontainerd.testing import plugin_module

INSTANCES: list["DoubleRuntime"] = []
STATS_URL = "test.double/Stats"

# The shell blocks opening the FIFO for writing until start opens it for
# reading (runc's exec.fifo, the other way round), then becomes the
# command (same pid).
_GATE = ': > "$0"; exec "$@"'


class DoubleProcess:
    def __init__(self, owner: "DoubleTask", pid_id: str, args: list[str], io: rt.IO):
        self.owner = owner
        self._id = pid_id
        self.args = args
        self.io = io
        self.proc: asyncio.subprocess.Process | None = None
        self._gate_dir = ""
        self._gate = ""
        self.started = False
        self.paused = False
        self.exit: rt.Exit | None = None
        self._exited = asyncio.Event()

    @property
    def id(self) -> str:
        return self._id

    async def create(self) -> None:
        self._gate_dir = tempfile.mkdtemp(prefix="double-", dir="/tmp")
        self._gate = os.path.join(self._gate_dir, "exec.fifo")
        os.mkfifo(self._gate, 0o600)
        stdout = open(self.io.stdout, "ab") if self.io.stdout else asyncio.subprocess.DEVNULL
        stderr = open(self.io.stderr, "ab") if self.io.stderr else asyncio.subprocess.DEVNULL
        stdin = open(self.io.stdin, "rb") if self.io.stdin else asyncio.subprocess.DEVNULL
        try:
            self.proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", _GATE, self._gate, *self.args, stdin=stdin, stdout=stdout, stderr=stderr)
        finally:
            for f in (stdout, stderr, stdin):
                if hasattr(f, "close"):
                    f.close()
        asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        assert self.proc is not None
        code = await self.proc.wait()
        status = 128 - code if code < 0 else code  # killed by a signal: 128 + its number, as runc reports
        self.exit = rt.Exit(pid=self.proc.pid, status=status, exited_at=time.time_ns())
        self._exited.set()
        shutil.rmtree(self._gate_dir, ignore_errors=True)

    async def start(self) -> None:
        if self.started:
            raise errdefs.FailedPrecondition(f"process {self._id} already started")
        self.started = True

        def release() -> None:
            # the open waits for the shell's open for writing (or finds it
            # waiting); the shell's close then gives us EOF
            fd = os.open(self._gate, os.O_RDONLY)
            try:
                while os.read(fd, 1):
                    pass
            finally:
                os.close(fd)

        await asyncio.to_thread(release)

    async def state(self) -> rt.State:
        if (self.owner.namespace, self.owner.id) in self.owner.manager.unresponsive:
            await asyncio.Event().wait()  # a shim that never answers
        if self.exit is not None:
            status = rt.Status.STOPPED
        elif self.paused:
            status = rt.Status.PAUSED
        else:
            status = rt.Status.RUNNING if self.started else rt.Status.CREATED
        return rt.State(status=status, pid=self.proc.pid if self.proc else 0,
                        exit_status=self.exit.status if self.exit else 0,
                        exited_at=self.exit.exited_at if self.exit else 0,
                        stdin=self.io.stdin, stdout=self.io.stdout, stderr=self.io.stderr, terminal=self.io.terminal)

    async def kill(self, sig: int, all: bool = False) -> None:
        if self.exit is not None or self.proc is None:
            raise errdefs.NotFound("process already finished")
        os.kill(self.proc.pid, sig)
        if self.paused and sig in (signal.SIGKILL, signal.SIGTERM):
            os.kill(self.proc.pid, signal.SIGCONT)

    async def resize_pty(self, size: rt.ConsoleSize) -> None:
        self.owner.manager.resized.append((self.owner.id, self._id, size.width, size.height))

    async def close_io(self) -> None:
        self.owner.manager.closed_io.append((self.owner.id, self._id))

    async def wait(self) -> rt.Exit:
        await self._exited.wait()
        assert self.exit is not None
        return self.exit

    async def delete(self) -> rt.Exit:
        if self.exit is None:
            raise errdefs.FailedPrecondition(f"cannot delete running process {self._id}")
        del self.owner.execs[self._id]
        return self.exit


class DoubleTask(DoubleProcess):
    def __init__(self, runtime: "DoubleRuntime", namespace: str, task_id: str, opts: rt.CreateOpts):
        spec = json.loads(opts.spec.value)
        super().__init__(self, task_id, spec["process"]["args"], opts.io)
        self.manager = runtime
        self._namespace = namespace
        self.opts = opts
        self.execs: dict[str, DoubleProcess] = {}

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def runtime(self) -> str:
        return self.opts.runtime

    async def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    async def pause(self) -> None:
        if self.proc is None or self.exit is not None:
            raise errdefs.FailedPrecondition(f"task {self._id} is not running")
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    async def resume(self) -> None:
        if not self.paused or self.proc is None:
            raise errdefs.FailedPrecondition(f"task {self._id} is not paused")
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    async def exec(self, exec_id: str, opts: rt.ExecOpts) -> DoubleProcess:
        if exec_id in self.execs:
            raise errdefs.AlreadyExists(f"id {exec_id}")
        if self.exit is not None:
            raise errdefs.FailedPrecondition("container must be running to exec")
        p = DoubleProcess(self, exec_id, json.loads(opts.spec.value)["args"], opts.io)
        await p.create()
        self.execs[exec_id] = p
        return p

    async def pids(self) -> list[rt.ProcessInfo]:
        live = [self] + list(self.execs.values())
        return [rt.ProcessInfo(pid=p.proc.pid) for p in live if p.proc is not None and p.exit is None]

    async def checkpoint(self, path: str, options: Any | None) -> None:
        raise errdefs.NotImplementedErr("the test double cannot checkpoint")

    async def update(self, resources: Any | None, annotations: dict[str, str]) -> None:
        self.manager.updated.append((self._id, resources, annotations))

    async def process(self, exec_id: str) -> DoubleProcess:
        try:
            return self.execs[exec_id]
        except KeyError:
            raise errdefs.NotFound(f"process {exec_id} does not exist") from None

    async def stats(self) -> Any:
        return any_pb2.Any(type_url=STATS_URL, value=f"pid={await self.pid()}".encode())


class DoubleRuntime:
    id = "io.containerd.runtime.v2.task"

    def __init__(self) -> None:
        self.tasks_by_key: dict[tuple[str, str], DoubleTask] = {}
        self.created: list[tuple[str, str, rt.CreateOpts]] = []
        self.resized: list[tuple[str, str, int, int]] = []
        self.closed_io: list[tuple[str, str]] = []
        self.updated: list[tuple[str, Any, dict[str, str]]] = []
        self.unresponsive: set[tuple[str, str]] = set()  # (namespace, task id) whose state never answers
        INSTANCES.append(self)

    async def create(self, namespace: str, task_id: str, opts: rt.CreateOpts) -> DoubleTask:
        if (namespace, task_id) in self.tasks_by_key:
            raise errdefs.AlreadyExists(f"task {task_id}")
        self.created.append((namespace, task_id, opts))
        t = DoubleTask(self, namespace, task_id, opts)
        await t.create()
        self.tasks_by_key[(namespace, task_id)] = t
        return t

    async def get(self, namespace: str, task_id: str) -> DoubleTask:
        try:
            return self.tasks_by_key[(namespace, task_id)]
        except KeyError:
            raise errdefs.NotFound(f"task {task_id}") from None

    async def tasks(self, namespace: str | None, all: bool = False) -> list[DoubleTask]:
        return [t for (ns, _), t in sorted(self.tasks_by_key.items()) if all or ns == namespace]

    async def delete(self, namespace: str, task_id: str) -> rt.Exit:
        t = await self.get(namespace, task_id)
        if t.exit is None:
            if t.started:
                raise errdefs.FailedPrecondition(f"cannot delete running task {task_id}")
            await t.kill(signal.SIGKILL)  # created, never started: deleting it ends it
            await t.wait()
        del self.tasks_by_key[(namespace, task_id)]
        assert t.exit is not None
        return t.exit

    def close(self) -> None:
        for t in self.tasks_by_key.values():
            for p in [t, *t.execs.values()]:
                if p.proc is not None and p.exit is None:
                    try:
                        os.kill(p.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                shutil.rmtree(p._gate_dir, ignore_errors=True)


async def _init(ic) -> DoubleRuntime:
    return DoubleRuntime()


MODULE = plugin_module(
    "runtime_double",
    Registration(type=PluginType.RUNTIME_V2, id="task", init=_init),
)
