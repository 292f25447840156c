"""io.containerd.runtime.v1.linux: the PlatformRuntime over Debian's
`containerd-shim` (shim v1), as containerd 1.6's runtime/v1/linux/runtime.go.

Create makes the bundle, starts a shim for it (shim.py), sends Create with
the OCI runtime to run (`runtime`, or the container's RuncOptions.Runtime)
and publishes /tasks/create; a failure on the way kills the shim and
removes the bundle. Delete deletes the task in the shim, kills the shim
(SIGKILL, as containerd does: a v1 shim never exits by itself), removes
the bundle and publishes /tasks/delete.

A shim that dies while its task is listed is cleaned up as containerd's
cleanupAfterDeadShim does: `runc delete --force` of the container, the
rootfs unmounted, /tasks/exit with status 137 (128 + SIGKILL) and
/tasks/delete published, the bundle removed.

After a restart every bundle under the state directory is reconnected
through its `address` file; one whose shim does not answer is cleaned up
as dead. A reconnected task keeps what its shim knows: a container that
exited while the daemon was away is STOPPED with its exit status until it
is deleted.

runc's state root: `runtime_root`, or the container's RuncOptions
.RuntimeRoot, or (both empty, where containerd's shim would use
/run/containerd/runc, shared with every containerd on the host) this
daemon's own `<state>/runc`, as the v2 plugin does for its runc tasks.

`no_shim` (containerd runs the shim's service inside the daemon) has no
Python counterpart: the plugin refuses to load with it set.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable

import structlog

from pycontainerd.core.context import InitContext, SkipPlugin
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import errdefs
from pycontainerd.pkg.mount import mounts_to_pb, unmount_all
from pycontainerd.pkg.runtime import CreateOpts, Exit, Status
from pycontainerd.pkg.ttrpc import Client, Closed

from .. import statedirs
from . import shim as shimmod
from .bundle import INIT_PID, SHIM_PID, Bundle, socket_path
from .options import create_options, runc_options
from .task import TOPIC_DELETE, V1Task

log = structlog.get_logger(__name__)

PLUGIN_ID = f"{PluginType.RUNTIME}.linux"
TOPIC_CREATE = "/tasks/create"
TOPIC_EXIT = "/tasks/exit"
KILLED_STATUS = 128 + 9  # what a task whose shim died is said to have exited with
CONNECT_TIMEOUT = 10.0
KILL_TIMEOUT = 10.0
CLEANUP_TIMEOUT = 60.0  # containerd's cleanupTimeout
EXIT_EVENT_TIMEOUT = 5.0  # how long Delete waits for the shim to publish the task's exit


@dataclass
class Config:
    """[plugins."io.containerd.runtime.v1.linux"], containerd's keys and defaults."""

    shim: str = "containerd-shim"  # the shim binary: a name on PATH or a path
    runtime: str = "runc"  # the OCI runtime the shim runs
    runtime_root: str = ""  # runc's --root
    no_shim: bool = False
    shim_debug: bool = False


class Runtime:
    def __init__(self, root: str, state: str, address: str, events: Any, containers: Any, config: Config,
                 default_runtime_root: str):
        self.root = root
        self.state = state
        self.address = address
        self.events = events
        self.containers = containers
        self.config = config
        self.default_runtime_root = default_runtime_root
        self._tasks: dict[tuple[str, str], V1Task] = {}
        self._creating: set[tuple[str, str]] = set()
        self._cleanups: set[asyncio.Task] = set()
        self._closing = False

    @property
    def id(self) -> str:
        return PLUGIN_ID

    # -- PlatformRuntime ----------------------------------------------------------------

    async def create(self, namespace: str, task_id: str, opts: CreateOpts) -> V1Task:
        key = (namespace, task_id)
        if key in self._tasks or key in self._creating:
            raise errdefs.AlreadyExists(f"task {task_id}")
        self._creating.add(key)
        try:
            task = await self._create(namespace, task_id, opts)
        finally:
            self._creating.discard(key)
        self._tasks[key] = task
        self._watch(task)
        from pycontainerd.api.events import task_pb2

        self.events.publish(namespace, TOPIC_CREATE, task_pb2.TaskCreate(
            container_id=task_id, bundle=task.bundle.path, rootfs=mounts_to_pb(opts.rootfs),
            io=task_pb2.TaskIO(stdin=opts.io.stdin, stdout=opts.io.stdout, stderr=opts.io.stderr,
                               terminal=opts.io.terminal),
            checkpoint=opts.checkpoint, pid=await task.pid()))
        return task

    async def _create(self, namespace: str, task_id: str, opts: CreateOpts) -> V1Task:
        from pycontainerd.api.runtime.v1.shim.v1 import shim_pb2

        ropts = runc_options(opts.runtime_options)
        cgroup = create_options(opts.task_options).shim_cgroup if opts.task_options is not None else ""
        binary = shimmod.resolve(self.config.shim)
        spec = opts.spec.value if opts.spec is not None else b""
        bundle = await asyncio.to_thread(Bundle.create, self.root, self.state, namespace, task_id, spec)
        process = logs = client = None
        try:
            args = shimmod.shim_args(bundle, self.address, self._runtime_root(ropts), ropts.criu_path,
                                     ropts.systemd_cgroup, self.config.shim_debug)
            address, process, logs = await shimmod.start(binary, bundle, self.address, args, cgroup,
                                                         self.config.shim_debug)
            try:
                client = await Client.connect(socket_path(address), timeout=CONNECT_TIMEOUT)
            except errdefs.ContainerdError as exc:
                raise shimmod.ShimError(f"failed to connect: {exc.message}") from None
            req = shim_pb2.CreateTaskRequest(
                id=task_id, bundle=bundle.path, runtime=ropts.runtime or self.config.runtime,
                stdin=opts.io.stdin, stdout=opts.io.stdout, stderr=opts.io.stderr, terminal=opts.io.terminal,
                checkpoint=opts.checkpoint, rootfs=mounts_to_pb(opts.rootfs))
            if opts.task_options is not None:
                req.options.CopyFrom(opts.task_options)
            resp = await client.call("containerd.runtime.linux.shim.v1.Shim", "Create", req,
                                     shim_pb2.CreateTaskResponse, namespace=namespace)
        except BaseException:
            if client is not None:
                await client.close()
            if process is not None:
                await process.kill(KILL_TIMEOUT)
            if logs is not None:
                logs.close()
            await asyncio.to_thread(statedirs.delete_quietly, bundle)
            raise
        task = V1Task(bundle, client, resp.pid, self.events, process, logs, KILL_TIMEOUT)
        await task._find_cgroup()
        return task

    def _runtime_root(self, ropts: Any) -> str:
        return ropts.runtime_root or self.config.runtime_root or self.default_runtime_root

    async def get(self, namespace: str, task_id: str) -> V1Task:
        task = self._tasks.get((namespace, task_id))
        if task is None:
            raise errdefs.NotFound(f"task {task_id}")
        return task

    async def tasks(self, namespace: str | None, all: bool = False) -> list[V1Task]:
        return [t for (ns, _), t in sorted(self._tasks.items()) if all or namespace is None or ns == namespace]

    async def delete(self, namespace: str, task_id: str) -> Exit:
        """containerd's Task.Delete: delete in the shim (any error but
        NotFound stops here, the task stays), forget the task, kill the
        shim, remove the bundle, publish /tasks/delete."""
        task = await self.get(namespace, task_id)
        key = (namespace, task_id)
        async with task.delete_lock:
            if self._tasks.get(key) is not task:  # another Delete got there first
                raise errdefs.NotFound(f"task {task_id}")
            return await self._delete(task, key)

    async def _delete(self, task: V1Task, key: tuple[str, str]) -> Exit:
        namespace, task_id = key
        from pycontainerd.api.events import task_pb2
        from pycontainerd.pkg import timestamps

        try:
            exit_ = await task.delete_in_shim()
        except Closed:  # the shim died: its cleanup (already under way) says how the task ended
            return await asyncio.wait_for(asyncio.shield(task.exited), CLEANUP_TIMEOUT)
        if exit_ is not None and task.expect_exit:
            await self._exit_published(task)
        self._tasks.pop(key, None)
        self._forget_connection(task)
        await task.kill_shim()
        await task.client.close()
        if task.logs is not None:
            task.logs.close()
        await asyncio.to_thread(statedirs.delete_quietly, task.bundle)
        if exit_ is None:  # the shim had no task to delete
            raise errdefs.NotFound(f"task {task_id}")
        self.events.publish(namespace, TOPIC_DELETE, task_pb2.TaskDelete(
            container_id=task_id, pid=exit_.pid, exit_status=exit_.status, exited_at=timestamps.to_pb(exit_.exited_at)))
        return exit_

    async def _exit_published(self, task: V1Task) -> None:
        """Wait (bounded) until the shim's /tasks/exit of the init process
        has arrived. The shim sends its events one at a time, each by
        running `pycontainerd publish`, which takes a good part of a second
        here: killing the shim as soon as its task is deleted (as
        containerd does, whose `publish` is quicker) would lose the exits
        still queued in it."""
        try:
            await asyncio.wait_for(task.exit_seen.wait(), EXIT_EVENT_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("the shim did not publish the task's exit in time", id=task.id, namespace=task.namespace)

    async def watch_exits(self) -> None:
        """Note each v1 task's init exit as its shim's event arrives."""
        from pycontainerd.api.events import task_pb2

        with self.events.subscribe(f'topic=="{TOPIC_EXIT}"') as sub:
            async for env in sub:
                try:
                    ev = task_pb2.TaskExit.FromString(env.event.value)
                except Exception:  # a publisher's bytes that do not decode
                    continue
                task = self._tasks.get((env.namespace, ev.container_id))
                if task is not None and ev.id == ev.container_id:
                    task.exit_seen.set()

    # -- dead shims ------------------------------------------------------------------------

    def _watch(self, task: V1Task) -> None:
        def closed() -> None:
            if self._closing:
                return
            job = asyncio.get_running_loop().create_task(self._shim_died(task))
            self._cleanups.add(job)
            job.add_done_callback(self._cleanups.discard)

        task.client.on_close(closed)

    def _forget_connection(self, task: V1Task) -> None:
        """Our own closing of a shim's connection is not its death."""
        task.client._on_close.clear()

    async def _shim_died(self, task: V1Task) -> None:
        key = (task.namespace, task.id)
        if self._tasks.get(key) is not task:
            return  # deleted meanwhile: nothing to clean up after
        log.info("shim reaped", id=task.id, namespace=task.namespace)
        if task.logs is not None:
            task.logs.close()
        await task.client.close()
        exit_ = await self.cleanup_after_dead_shim(task.bundle, task)
        if not task.exited.done():
            task.exited.set_result(exit_)

    async def cleanup_after_dead_shim(self, bundle: Bundle, task: V1Task | None = None) -> Exit:
        """containerd's cleanupAfterDeadShim."""
        from pycontainerd.api.events import task_pb2
        from pycontainerd.pkg import timestamps

        ns, task_id = bundle.namespace, bundle.id
        log.warning("cleaning up after shim dead", id=task_id, namespace=ns)
        pid = await asyncio.to_thread(bundle.read_pid, INIT_PID)
        try:
            await asyncio.wait_for(self._terminate(bundle), CLEANUP_TIMEOUT)
        except (asyncio.TimeoutError, OSError, errdefs.ContainerdError) as exc:
            log.warning("failed to terminate task", id=task_id, namespace=ns, error=str(exc) or type(exc).__name__)
        exit_ = Exit(pid=pid, status=KILLED_STATUS, exited_at=time.time_ns())
        when = timestamps.to_pb(exit_.exited_at)
        self.events.publish(ns, TOPIC_EXIT, task_pb2.TaskExit(
            container_id=task_id, id=task_id, pid=pid, exit_status=KILLED_STATUS, exited_at=when))
        if task is None or self._tasks.get((ns, task_id)) is task:
            self._tasks.pop((ns, task_id), None)
        shim_pid = await asyncio.to_thread(bundle.read_pid, SHIM_PID)
        if shim_pid > 0 and await asyncio.to_thread(shimmod.is_shim_of, shim_pid, bundle):
            try:
                os.kill(shim_pid, 9)
            except ProcessLookupError:
                pass
        await asyncio.to_thread(statedirs.delete_quietly, bundle)
        self.events.publish(ns, TOPIC_DELETE, task_pb2.TaskDelete(
            container_id=task_id, pid=pid, exit_status=KILLED_STATUS, exited_at=when))
        return exit_

    async def _terminate(self, bundle: Bundle) -> None:
        """`runc delete --force` of the container and the rootfs unmounted."""
        ropts = runc_options(await self._container_options(bundle.namespace, bundle.id))
        command = ropts.runtime or self.config.runtime
        # a relative root is the shim's, which runs in the bundle: it is found from there
        root = os.path.join(bundle.path, self._runtime_root(ropts), bundle.namespace)
        argv = [command, "--root", root, "--log-format", "json"]
        if self.config.shim_debug:
            argv.append("--debug")
        proc = await asyncio.create_subprocess_exec(
            *argv, "delete", "--force", bundle.id, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            log.warning("delete runtime state", id=bundle.id, error=errdefs.cut(err.decode(errors="replace")))
        rootfs = os.path.join(bundle.path, "rootfs")
        if os.path.isdir(rootfs):
            await asyncio.to_thread(unmount_all, rootfs)

    async def _container_options(self, namespace: str, container_id: str) -> Any | None:
        """The container's runtime options (containerd's getRuncOptions reads
        them from the container store); None when it is gone."""
        try:
            return (await self.containers.get(namespace, container_id)).runtime.options
        except errdefs.ContainerdError:
            return None

    # -- after a restart ---------------------------------------------------------------------

    async def load_existing(self) -> None:
        """containerd's restoreTasks: reconnect to every shim a previous
        daemon left; clean up after those that are gone."""
        for ns in statedirs.subdirs(self.state):
            for task_id in statedirs.subdirs(os.path.join(self.state, ns)):
                await self._load(Bundle.load(self.root, self.state, ns, task_id))
            for task_id in statedirs.subdirs(os.path.join(self.root, ns)):  # work dirs a crash left without a bundle
                if (ns, task_id) not in self._tasks:
                    await asyncio.to_thread(statedirs.remove_tree, os.path.join(self.root, ns, task_id))

    async def _load(self, bundle: Bundle) -> None:
        bound = log.bind(id=bundle.id, namespace=bundle.namespace)
        address = await asyncio.to_thread(bundle.decide_address)
        try:
            client = await Client.connect(socket_path(address), timeout=CONNECT_TIMEOUT)
        except errdefs.ContainerdError as exc:
            bound.error("connecting to shim", error=str(exc))
            await self.cleanup_after_dead_shim(bundle)
            return
        pid = await asyncio.to_thread(bundle.read_pid, INIT_PID)
        try:
            logs = shimmod.ShimLogs(bundle, self.config.shim_debug)
        except OSError as exc:
            bound.error("opening shim log pipes", error=str(exc))
            logs = None
        shim_pid = await asyncio.to_thread(bundle.read_pid, SHIM_PID)
        process = None
        if shim_pid > 0 and await asyncio.to_thread(shimmod.is_shim_of, shim_pid, bundle):
            process = shimmod.ShimProcess(shim_pid)
        task = V1Task(bundle, client, pid, self.events, process, logs, KILL_TIMEOUT)
        try:  # a task still running will send its exit to this daemon; one that ended while none ran will not
            task.expect_exit = (await asyncio.wait_for(task.state(), CONNECT_TIMEOUT)).status != Status.STOPPED
        except errdefs.NotFound:
            await self._clean_shim_without_task(task)
            return
        except (errdefs.ContainerdError, asyncio.TimeoutError):
            task.expect_exit = False
        await task._find_cgroup()
        self._tasks[(bundle.namespace, bundle.id)] = task
        self._watch(task)
        bound.info("reconnected to shim", pid=pid)

    async def _clean_shim_without_task(self, task: V1Task) -> None:
        """A shim that knows no task: a daemon died between starting it and
        its Create. Kill it, take away what runc may have half made, remove
        the bundle; the task was never listed, so nothing is published."""
        log.info("cleaning up a shim that serves no task", id=task.id, namespace=task.namespace)
        self._forget_connection(task)
        await task.kill_shim()
        await task.client.close()
        if task.logs is not None:
            task.logs.close()
        try:
            await asyncio.wait_for(self._terminate(task.bundle), CLEANUP_TIMEOUT)
        except (asyncio.TimeoutError, OSError, errdefs.ContainerdError) as exc:
            log.warning("failed to terminate task", id=task.id, namespace=task.namespace, error=str(exc) or type(exc).__name__)
        await asyncio.to_thread(statedirs.delete_quietly, task.bundle)

    async def close(self) -> None:
        """The daemon stops: let go of the shims (they keep running, and the
        next daemon reconnects), without treating that as their death."""
        self._closing = True
        for job in list(self._cleanups):
            job.cancel()
        for task in list(self._tasks.values()):
            self._forget_connection(task)
            await task.client.close()
            if task.process_watch is not None:
                task.process_watch.release()
            if task.logs is not None:
                task.logs.close()
            task.exited.cancel()  # a Wait still pending ends with the daemon


async def init(ic: InitContext) -> Runtime:
    if os.geteuid() != 0:
        raise SkipPlugin("runtime v1 shims need root")
    config: Config = ic.config
    if config.no_shim:
        raise errdefs.NotImplementedErr("no_shim: running the shim inside the daemon is not supported by pycontainerd")
    from pycontainerd.pkg.platforms import default_string

    ic.meta.platforms = [default_string()]
    for directory in (ic.root, ic.state):
        os.chmod(directory, 0o711)  # as containerd makes them: shims of other users' mappings walk through
    try:
        shimmod.resolve(config.shim)
    except shimmod.ShimError as exc:  # containerd loads anyway; every Create will say this
        log.warning("the v1 shim is not installed: tasks cannot be created", error=exc.message)
    runtime = Runtime(root=ic.root, state=ic.state, address=ic.address, events=ic.get(PluginType.EVENT),
                      containers=ic.get(PluginType.METADATA).containers, config=config,
                      default_runtime_root=os.path.join(ic.daemon_config.state, "runc"))
    await runtime.load_existing()
    ic.spawn("exits", runtime.watch_exits())
    return runtime


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.RUNTIME, id="linux", requires=(PluginType.EVENT, PluginType.METADATA),
                         config=Config, init=init)]
