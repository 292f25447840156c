"""The tasks service: containerd.services.tasks.v1.Tasks.

`io.containerd.service.v1.tasks-service` turns requests about a
container's task into calls on the runtime (pkg/runtime.PlatformRuntime),
as containerd 1.6's services/tasks/local.go does: a container whose
runtime name is a loaded io.containerd.runtime.v1 plugin's id
(`io.containerd.runtime.v1.linux`) goes to that plugin, every other name
to io.containerd.runtime.v2.task. It it reads the container from the metadata
plugin's container store (its spec, runtime name and options), hands the
runtime the request's rootfs mounts, stdio paths, terminal flag and task
options, and translates what comes back into the API's messages.
`io.containerd.grpc.v1.tasks` serves it.

What it does not do, as in containerd: publish events (the shim publishes
/tasks/create, /tasks/start, /tasks/exit, /tasks/delete, /tasks/exec-*,
/tasks/paused... and the runtime forwards them), or filter List (1.6
ignores ListTasksRequest.filter).

Where it differs from containerd 1.6, on purpose:
- containerd will not start its tasks service without a runtime v2
  plugin; here the service loads anyway and each call that needs the
  runtime fails with the lookup's error (`runtime for task <name>: ...`),
  so a daemon whose runtime was skipped still answers clearly. List and
  Metrics answer empty.
- Checkpoint and restore need CRIU, which this daemon does not drive:
  both are refused with UNIMPLEMENTED after the container and task
  lookups containerd does first, instead of failing inside runc.

Errors keep containerd's wording: `container "x" in namespace "y": not
found` from the store, `task x not found` (a bare NOT_FOUND) when the
container has no task, `task x: already exists` on a second Create; what
the runtime raises is mapped by the gRPC edge.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import structlog
from google.protobuf import empty_pb2

from pycontainerd.api.services.tasks.v1 import tasks_pb2 as pb
from pycontainerd.api.services.tasks.v1 import tasks_pb2_grpc as pb_grpc
from pycontainerd.api.types import metrics_pb2
from pycontainerd.api.types.task import task_pb2
from pycontainerd.core import filters
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.core.service import namespace, service_pair
from pycontainerd.pkg import errdefs, goduration
from pycontainerd.pkg import runtime as rt
from pycontainerd.pkg.containerstore import Container
from pycontainerd.pkg.mount import Mount
from pycontainerd.pkg.timestamps import to_pb as ts_to_pb

log = structlog.get_logger(__name__)

SERVICE_ID = "tasks-service"
RUNTIME_ID = "task"  # io.containerd.runtime.v2.task
STATE_TIMEOUT = "io.containerd.timeout.task.state"
RUNC_OPTIONS = "containerd.runc.v1.Options"
RUNC_V1 = "io.containerd.runc.v1"

# runtime.Status -> containerd.v1.types.Status (the numbers differ: the
# API has no "deleted")
_STATUS = {
    rt.Status.CREATED: task_pb2.CREATED,
    rt.Status.RUNNING: task_pb2.RUNNING,
    rt.Status.STOPPED: task_pb2.STOPPED,
    rt.Status.PAUSED: task_pb2.PAUSED,
    rt.Status.PAUSING: task_pb2.PAUSING,
}


# -- containerd's bare answers (a status built by hand: no sentinel appended) --------


class TaskNotFound(errdefs.NotFound):
    sentinel = ""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {errdefs.cut(task_id)} not found")


class ExecIDRequired(errdefs.InvalidArgument):
    sentinel = ""

    def __init__(self) -> None:
        super().__init__("exec id cannot be empty")


class InvalidCreateOption(errdefs.Unknown):
    """containerd returns this one unwrapped: gRPC's UNKNOWN, its text alone."""

    sentinel = ""

    def __init__(self, runtime: str) -> None:
        super().__init__(f"invalid task create option for {errdefs.cut(runtime)}")


def _criu_refused(what: str) -> errdefs.NotImplementedErr:
    return errdefs.NotImplementedErr(f"{what} needs CRIU, which pycontainerd does not support")


def _is_runtime(current: str, expected: str) -> bool:
    """containerd's checkRuntime: `expected`'s dotted parts begin `current`."""
    have = current.split(".")
    want = expected.split(".")
    return len(have) >= len(want) and have[: len(want)] == want


def _restore_path(runtime_name: str, options: Any | None) -> str:
    """containerd's getRestorePath: the CRIU image path a runc task's create
    options ask to restore from ("" for none)."""
    if options is None or not _is_runtime(runtime_name, "io.containerd.runc"):
        return ""
    if options.type_url.rsplit("/", 1)[-1] != RUNC_OPTIONS:
        raise InvalidCreateOption(runtime_name)
    from pycontainerd.api.runtime.runc.options import oci_pb2

    opts = oci_pb2.Options()
    try:
        opts.ParseFromString(options.value)
    except Exception:  # DecodeError: the payload is not what its type says
        raise InvalidCreateOption(runtime_name) from None
    return opts.criu_image_path


@dataclass
class Local:
    """The service's work, on the container store and the runtime. `runtime`
    is None when no runtime v2 plugin could be had; `runtime_error` says why."""

    containers: Any
    runtime: Any | None
    runtime_error: errdefs.ContainerdError | None
    state_timeout: float
    monitor: Any | None = None  # pkg.monitor.TaskMonitor, when one is loaded
    v1_runtimes: dict[str, Any] = field(default_factory=dict)  # io.containerd.runtime.v1 instances by id

    # -- lookups ----------------------------------------------------------------------

    async def container(self, ns: str, cid: str) -> Container:
        return await self.containers.get(ns, cid)

    def runtime_for(self, name: str) -> Any:
        """containerd's getRuntime: a v1 runtime's own id picks it; every
        other name goes to the v2 runtime."""
        v1 = self.v1_runtimes.get(name)
        if v1 is not None:
            return v1
        if self.runtime is None:
            err = self.runtime_error or errdefs.NotFound(f"no plugins registered for {PluginType.RUNTIME_V2}")
            raise type(err)(f"runtime for task {errdefs.cut(name)}: {err.message}")
        return self.runtime

    async def task_of(self, ns: str, c: Container) -> Any:
        runtime = self.runtime_for(c.runtime.name)
        try:
            return await runtime.get(ns, c.id)
        except errdefs.NotFound:
            raise TaskNotFound(c.id) from None

    async def task(self, ns: str, cid: str) -> Any:
        return await self.task_of(ns, await self.container(ns, cid))

    async def process(self, ns: str, cid: str, exec_id: str) -> Any:
        """The task's init process, or its exec'd process `exec_id`."""
        t = await self.task(ns, cid)
        return await t.process(exec_id) if exec_id else t

    def all_runtimes(self) -> list[Any]:
        return [*self.v1_runtimes.values(), *([self.runtime] if self.runtime is not None else [])]

    async def process_state(self, p: Any) -> task_pb2.Process:
        """containerd's getProcessState: NotFound passes through (the
        process went away); any other failure, a timeout included, is
        logged and answered with an UNKNOWN status."""
        try:
            state = await asyncio.wait_for(p.state(), self.state_timeout)
        except errdefs.NotFound:
            raise
        except (Exception, asyncio.TimeoutError) as exc:
            log.error("get state failed", id=p.id, error=str(exc) or type(exc).__name__)
            return task_pb2.Process(id=p.id, status=task_pb2.UNKNOWN)
        out = task_pb2.Process(id=p.id, pid=state.pid, status=_STATUS.get(state.status, task_pb2.UNKNOWN),
                               stdin=state.stdin, stdout=state.stdout, stderr=state.stderr,
                               terminal=state.terminal, exit_status=state.exit_status)
        if state.exited_at:
            out.exited_at.CopyFrom(ts_to_pb(state.exited_at))
        return out

    # -- create -----------------------------------------------------------------------

    async def create(self, ns: str, r: Any) -> tuple[str, int]:
        c = await self.container(ns, r.container_id)
        task_options = r.options if r.HasField("options") else None
        if _restore_path(c.runtime.name, task_options) or r.HasField("checkpoint"):
            raise _criu_refused(f"restoring task {errdefs.cut(r.container_id)} from a checkpoint")
        opts = rt.CreateOpts(
            spec=c.spec,
            rootfs=[Mount(m.type, m.source, list(m.options)) for m in r.rootfs],
            io=rt.IO(stdin=r.stdin, stdout=r.stdout, stderr=r.stderr, terminal=r.terminal),
            runtime_options=c.runtime.options,
            task_options=task_options,
            runtime=r.runtime_path or c.runtime.name,
        )
        if c.runtime.name.startswith("io.containerd.runtime.v1."):
            log.warning("runtime v1 is deprecated since containerd v1.4, consider using runtime v2")
        elif c.runtime.name == RUNC_V1:
            log.warning("runtime is deprecated, consider io.containerd.runc.v2", runtime=RUNC_V1)
        runtime = self.runtime_for(c.runtime.name)
        try:
            await runtime.get(ns, r.container_id)
        except errdefs.NotFound:
            pass
        else:
            raise errdefs.AlreadyExists(f"task {errdefs.cut(r.container_id)}")
        task = await runtime.create(ns, r.container_id, opts)
        pid = await task.pid()
        await self._monitor(ns, r.container_id, pid, _cgroups_path(c.spec), {"runtime": c.runtime.name},
                            watch_oom=runtime in self.v1_runtimes.values())
        return r.container_id, pid

    async def _monitor(self, ns: str, cid: str, pid: int, cgroups_path: str, labels: dict[str, str],
                       watch_oom: bool = False) -> None:
        """Hand a task to the task monitor (its cgroup metrics). containerd
        fails the Create when this fails; here the task runs on unmonitored
        and the reason is logged: metrics are not worth a container. A v2
        shim publishes its task's OOMs itself; a v1 task's are the
        monitor's to watch (`watch_oom`), as containerd's cgroups monitor
        does for v1 tasks only."""
        if self.monitor is None:
            return
        from pycontainerd.pkg.monitor import TaskInfo

        info = TaskInfo(ns, cid, pid=pid, cgroups_path=cgroups_path, labels=labels, watch_oom=watch_oom)
        try:
            await self.monitor.monitor(info)
        except errdefs.ContainerdError as exc:
            log.warning("task not monitored", namespace=ns, id=cid, error=str(exc))

    async def monitor_running(self) -> None:
        """At start, monitor the tasks the runtime found still running."""
        if self.monitor is None:
            return
        for runtime in self.all_runtimes():
            for task in await runtime.tasks(None, True):
                try:
                    pid = await task.pid()
                except errdefs.ContainerdError:
                    continue
                await self._monitor(task.namespace, task.id, pid, "", {},
                                    watch_oom=runtime in self.v1_runtimes.values())

    # -- the rest, in the API's order -------------------------------------------------

    async def start(self, ns: str, cid: str, exec_id: str) -> int:
        p = await self.process(ns, cid, exec_id)
        await p.start()
        return (await p.state()).pid

    async def delete(self, ns: str, cid: str) -> rt.Exit:
        c = await self.container(ns, cid)
        runtime = self.runtime_for(c.runtime.name)
        try:
            await runtime.get(ns, c.id)
        except errdefs.NotFound:
            raise TaskNotFound(c.id) from None
        exit = await runtime.delete(ns, cid)
        if self.monitor is not None:
            from pycontainerd.pkg.monitor import TaskInfo

            await self.monitor.stop(TaskInfo(ns, cid))
        return exit

    async def delete_process(self, ns: str, cid: str, exec_id: str) -> rt.Exit:
        t = await self.task(ns, cid)
        return await (await t.process(exec_id)).delete()

    async def get(self, ns: str, cid: str, exec_id: str) -> task_pb2.Process:
        return await self.process_state(await self.process(ns, cid, exec_id))

    async def list(self, ns: str) -> list[task_pb2.Process]:
        out = []
        for runtime in self.all_runtimes():
            for t in await runtime.tasks(ns, False):
                try:
                    out.append(await self.process_state(t))
                except errdefs.NotFound:
                    continue  # deleted while we listed
        return out

    async def exec(self, ns: str, r: Any) -> None:
        if not r.exec_id:
            raise ExecIDRequired()
        t = await self.task(ns, r.container_id)
        spec = r.spec if r.HasField("spec") else None
        io = rt.IO(stdin=r.stdin, stdout=r.stdout, stderr=r.stderr, terminal=r.terminal)
        await t.exec(r.exec_id, rt.ExecOpts(spec=spec, io=io))

    async def checkpoint(self, ns: str, cid: str) -> None:
        c = await self.container(ns, cid)
        await self.task_of(ns, c)
        raise _criu_refused(f"checkpointing task {errdefs.cut(cid)}")

    async def metrics(self, ns: str, filter_strings: list[str]) -> list[metrics_pb2.Metric]:
        flt = await filters.parse_all_off_loop(*filter_strings)
        out = []
        for runtime in self.all_runtimes():
            for t in await runtime.tasks(ns, False):
                if not await filters.match_off_loop(flt, _task_adaptor(t)):
                    continue
                collected = time.time_ns()
                try:
                    stats = await t.stats()
                except errdefs.NotFound:
                    continue
                except Exception as exc:
                    log.error("collecting metrics failed", id=t.id, error=str(exc))
                    continue
                metric = metrics_pb2.Metric(timestamp=ts_to_pb(collected), id=t.id)
                if stats is not None:
                    metric.data.CopyFrom(stats)
                out.append(metric)
        return out


def _task_adaptor(t: Any):
    """containerd's metrics filter: a task's id and namespace."""

    def field_of(path: list[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] == "id":
            return t.id, True
        if path[0] == "namespace":
            return t.namespace, True
        return "", False

    return field_of


def _delete_response(exit: rt.Exit, exec_id: str = "") -> pb.DeleteResponse:
    return pb.DeleteResponse(id=exec_id, pid=exit.pid, exit_status=exit.status, exited_at=ts_to_pb(exit.exited_at))


class Service(pb_grpc.TasksServicer):
    def __init__(self, local: Local):
        self.local = local

    def register(self, server) -> None:
        pb_grpc.add_TasksServicer_to_server(self, server)

    async def Create(self, request, context):
        cid, pid = await self.local.create(namespace(context), request)
        return pb.CreateTaskResponse(container_id=cid, pid=pid)

    async def Start(self, request, context):
        pid = await self.local.start(namespace(context), request.container_id, request.exec_id)
        return pb.StartResponse(pid=pid)

    async def Delete(self, request, context):
        return _delete_response(await self.local.delete(namespace(context), request.container_id))

    async def DeleteProcess(self, request, context):
        exit = await self.local.delete_process(namespace(context), request.container_id, request.exec_id)
        return _delete_response(exit, request.exec_id)

    async def Get(self, request, context):
        process = await self.local.get(namespace(context), request.container_id, request.exec_id)
        return pb.GetResponse(process=process)

    async def List(self, request, context):
        return pb.ListTasksResponse(tasks=await self.local.list(namespace(context)))

    async def Kill(self, request, context):
        p = await self.local.process(namespace(context), request.container_id, request.exec_id)
        await p.kill(request.signal, request.all)
        return empty_pb2.Empty()

    async def Exec(self, request, context):
        await self.local.exec(namespace(context), request)
        return empty_pb2.Empty()

    async def ResizePty(self, request, context):
        p = await self.local.process(namespace(context), request.container_id, request.exec_id)
        await p.resize_pty(rt.ConsoleSize(width=request.width, height=request.height))
        return empty_pb2.Empty()

    async def CloseIO(self, request, context):
        p = await self.local.process(namespace(context), request.container_id, request.exec_id)
        if request.stdin:
            await p.close_io()
        return empty_pb2.Empty()

    async def Pause(self, request, context):
        await (await self.local.task(namespace(context), request.container_id)).pause()
        return empty_pb2.Empty()

    async def Resume(self, request, context):
        await (await self.local.task(namespace(context), request.container_id)).resume()
        return empty_pb2.Empty()

    async def ListPids(self, request, context):
        t = await self.local.task(namespace(context), request.container_id)
        processes = []
        for info in await t.pids():
            p = task_pb2.ProcessInfo(pid=info.pid)
            if info.info is not None:
                p.info.CopyFrom(info.info)
            processes.append(p)
        return pb.ListPidsResponse(processes=processes)

    async def Checkpoint(self, request, context):
        await self.local.checkpoint(namespace(context), request.container_id)
        return pb.CheckpointTaskResponse()  # not reached: checkpoint always refuses

    async def Update(self, request, context):
        t = await self.local.task(namespace(context), request.container_id)
        resources = request.resources if request.HasField("resources") else None
        await t.update(resources, dict(request.annotations))
        return empty_pb2.Empty()

    async def Metrics(self, request, context):
        return pb.MetricsResponse(metrics=await self.local.metrics(namespace(context), list(request.filters)))

    async def Wait(self, request, context):
        p = await self.local.process(namespace(context), request.container_id, request.exec_id)
        exit = await p.wait()
        return pb.WaitResponse(exit_status=exit.status, exited_at=ts_to_pb(exit.exited_at))


def _cgroups_path(spec: Any) -> str:
    """The OCI spec's linux.cgroupsPath ("" when absent or unreadable)."""
    import json

    try:
        linux = json.loads(spec.value).get("linux") or {}
        path = linux.get("cgroupsPath", "")
    except (ValueError, AttributeError):
        return ""
    return path if isinstance(path, str) else ""


def _monitor(ic: InitContext) -> Any | None:
    """The task monitor, or None when none is loaded (disabled, skipped)."""
    try:
        return ic.get(PluginType.TASK_MONITOR)
    except errdefs.ContainerdError:
        return None


def _runtime(ic: InitContext) -> Any:
    """The runtime v2 plugin's instance; when there is none, containerd's
    lookup errors (its InitContext.GetByID), or why the plugin is unusable."""
    registered = [p.registration.id for p in ic.plugins if p.registration.type == PluginType.RUNTIME_V2]
    if not registered:
        raise errdefs.NotFound(f"no plugins registered for {PluginType.RUNTIME_V2}")
    if RUNTIME_ID not in registered:
        raise errdefs.NotFound(f"no {PluginType.RUNTIME_V2} plugins with id {RUNTIME_ID}")
    return ic.get(PluginType.RUNTIME_V2, RUNTIME_ID)  # skipped or failed: that says why


def _v1_runtimes(ic: InitContext) -> dict[str, Any]:
    """containerd's loadV1Runtimes: every io.containerd.runtime.v1 plugin
    that loaded, by its id; one that failed is logged and left out."""
    found = {}
    for p in ic.plugins:
        if p.registration.type != PluginType.RUNTIME:
            continue
        try:
            instance = ic.get(PluginType.RUNTIME, p.registration.id)
        except errdefs.ContainerdError as exc:
            log.warning("could not load runtime instance due to initialization error", error=str(exc))
            continue
        found[instance.id] = instance
    return found


async def init_local(ic: InitContext) -> Local:
    runtime, runtime_error = None, None
    try:
        runtime = _runtime(ic)
    except errdefs.ContainerdError as exc:
        runtime_error = exc
        log.warning("no runtime: tasks cannot be created", error=str(exc))
    timeouts = getattr(ic.daemon_config, "timeouts", None) or {}
    state_timeout = goduration.parse(timeouts.get(STATE_TIMEOUT, "2s")) / 1e9
    local = Local(ic.get(PluginType.METADATA).containers, runtime, runtime_error, state_timeout, _monitor(ic),
                  v1_runtimes=_v1_runtimes(ic))
    await local.monitor_running()
    return local


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return service_pair(SERVICE_ID, "tasks", init_local, Service,
                        requires=(PluginType.EVENT, PluginType.RUNTIME, PluginType.RUNTIME_V2, PluginType.METADATA,
                                  PluginType.TASK_MONITOR))
