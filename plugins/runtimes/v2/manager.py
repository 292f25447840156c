"""io.containerd.runtime.v2.task: the PlatformRuntime over v2 shims.

Create makes the bundle, runs the shim binary's `start` action, connects to
the address it prints, and sends Create; a failure on the way runs the
shim's `delete` action and removes the bundle, so nothing is left. Delete
asks the shim to delete the task, then to shut down, then removes the
bundle.

A shim whose connection drops is dead: its `delete` action cleans up after
it, TaskExit and TaskDelete are published (status 255 if it could not say),
and the task leaves the list. When the daemon starts again, every bundle in
the state directory is reconnected through its `address` file; those whose
shim is gone are cleaned up the same way, those whose shim serves no task
(a daemon died between starting it and its Create) are shut down and
cleaned up without an event, and work directories with no task are removed.

The last exit of each task's init process (from its shim's /tasks/exit
events, or from Wait) is kept as its exit record until the task is deleted.
[timeouts] io.containerd.timeout.shim.load (reconnecting),
.shim.shutdown (Shutdown), .shim.cleanup (the `delete` action) and
.task.state (State) bound those calls.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import structlog

from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import errdefs, goduration
from pycontainerd.pkg.runtime import CreateOpts, Exit
from pycontainerd.pkg.ttrpc import Client, StatusError

from .. import statedirs
from .binary import Binary, ShimError, resolve
from . import orphans
from .bundle import ADDRESS, BINARY_PATH, CONFIG, LOG, Bundle
from .runc_root import with_runc_root
from .shim import ShimTask

log = structlog.get_logger(__name__)

PLUGIN_ID = "io.containerd.runtime.v2.task"
TOPIC_EXIT = "/tasks/exit"
TOPIC_DELETE = "/tasks/delete"
TIMEOUT_KEYS = {
    "load": "io.containerd.timeout.shim.load",
    "shutdown": "io.containerd.timeout.shim.shutdown",
    "cleanup": "io.containerd.timeout.shim.cleanup",
    "state": "io.containerd.timeout.task.state",
}
DEFAULT_TIMEOUTS = {"load": 5.0, "shutdown": 3.0, "cleanup": 5.0, "state": 2.0}


@dataclass
class Config:
    """[plugins."io.containerd.runtime.v2.task"], containerd's keys."""

    platforms: list[str] = field(default_factory=lambda: [_default_platform()])
    sched_core: bool = False


class ShimLog:
    """The bundle's `log` FIFO, held open for reading (the shim opens it for
    writing and fails if nobody created it); each line goes to our log."""

    def __init__(self, bundle: Bundle):
        path = bundle.file(LOG)
        if not os.path.exists(path):
            os.mkfifo(path, 0o700)
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.log = log.bind(id=bundle.id, namespace=bundle.namespace)
        self._partial = b""
        asyncio.get_running_loop().add_reader(self.fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if line.strip():
                self.log.info("shim", line=line.decode(errors="replace")[:4096])
        self._partial = self._partial[-65536:]

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class TaskManager:
    def __init__(self, root: str, state: str, address: str, ttrpc_address: str, events: Any,
                 timeouts: dict[str, float], runc_root: str, sched_core: bool = False):
        self.sched_core = sched_core
        self.runc_root = runc_root  # runc's state for this daemon's runc tasks: see runc_root.py
        self.root = root
        self.state = state
        self.address = address
        self.ttrpc_address = ttrpc_address
        self.events = events
        self.timeouts = timeouts
        self._tasks: dict[tuple[str, str], ShimTask] = {}
        self._logs: dict[tuple[str, str], ShimLog] = {}
        self._exits: dict[tuple[str, str], Exit] = {}
        self._creating: set[tuple[str, str]] = set()
        self._cleanups: set[asyncio.Task] = set()
        self._cleaning: dict[tuple[str, str], asyncio.Task] = {}  # dead shims' cleanups, by task
        self._binaries: dict[tuple[str, str], Binary] = {}  # the shim binary of each watched task
        self._closing = False

    @property
    def id(self) -> str:
        return PLUGIN_ID

    # -- PlatformRuntime -----------------------------------------------------

    async def create(self, namespace: str, task_id: str, opts: CreateOpts) -> ShimTask:
        key = (namespace, task_id)
        if key in self._tasks or key in self._creating:
            raise errdefs.AlreadyExists(f"task {task_id}")
        self._creating.add(key)
        opts = with_runc_root(opts, self.runc_root)
        try:
            await self._after_cleanup(key)
            try:
                task = await self._start_shim(namespace, task_id, opts)
            except errdefs.ContainerdError as exc:
                raise _wrap(exc, "failed to start shim") from None
            try:
                await task.create(opts)
            except BaseException as exc:
                await self._abandon(task)
                if isinstance(exc, errdefs.ContainerdError):
                    raise _wrap(exc, "failed to create shim task") from None
                raise
            self._exits.pop(key, None)
            self._tasks[key] = task
            return task
        finally:
            self._creating.discard(key)

    async def get(self, namespace: str, task_id: str) -> ShimTask:
        task = self._tasks.get((namespace, task_id))
        if task is None:
            raise errdefs.NotFound(f"task {task_id}")
        return task

    async def tasks(self, namespace: str | None, all: bool = False) -> list[ShimTask]:
        return [t for (ns, _), t in sorted(self._tasks.items()) if all or namespace is None or ns == namespace]

    async def delete(self, namespace: str, task_id: str) -> Exit:
        task = await self.get(namespace, task_id)
        key = (namespace, task_id)
        try:
            exit_ = await task.delete_in_shim()
        except errdefs.NotFound:
            exit_ = None
        except errdefs.ContainerdError as exc:
            raise _wrap(exc, "failed to delete task") from None
        if exit_ is None:
            return await self._delete_dead(task)
        self._tasks.pop(key, None)
        await self._shutdown_and_remove(task)
        self._exits.pop(key, None)
        return exit_

    async def _delete_dead(self, task: ShimTask) -> Exit:
        """The Delete of a task whose shim is gone, or no longer knows it
        (its init was deleted alone). containerd leaves that to the cleanup
        after a dead shim, started when the shim's connection closes: its
        `delete` action takes runc's container and its processes away,
        then the bundle. This Delete shuts a shim still up down (which
        closes the connection) and waits for that cleanup, so the task is
        gone when it answers and a new task of the id never races it. (It
        used to forget the connection and remove the bundle itself: runc's
        container and its process stayed, and the next Create of the id
        failed in runc.)"""
        key = (task.namespace, task.id)
        if key not in self._cleaning:
            try:
                await task.shutdown()
            except errdefs.ContainerdError:
                pass  # gone already
            try:
                await asyncio.wait_for(asyncio.shield(task.client.wait_closed()), self.timeouts["shutdown"])
            except asyncio.TimeoutError:
                pass
            binary = self._binaries.get(key)
            if key not in self._cleaning and binary is not None:  # a shim that stays: clean up without it
                self._forget_connection(task)
                await task.client.close()
                self._start_cleanup(task, binary)
        job = self._cleaning.get(key)
        if job is not None:
            await asyncio.wait([job])
        if self._tasks.get(key) is task:
            self._tasks.pop(key)
        return self._exits.pop(key, None) or Exit(pid=0, status=255, exited_at=time.time_ns())

    # -- exit records ----------------------------------------------------------

    def exit_of(self, namespace: str, task_id: str) -> Exit | None:
        """The recorded exit of a task's init process, if it has exited."""
        return self._exits.get((namespace, task_id))

    async def watch_exits(self) -> None:
        """Keep the exit record from the shims' /tasks/exit events."""
        from pycontainerd.api.events import task_pb2

        with self.events.subscribe(f'topic=="{TOPIC_EXIT}"') as sub:
            async for env in sub:
                try:
                    ev = task_pb2.TaskExit.FromString(env.event.value)
                except Exception:  # a publisher's bytes that do not decode
                    continue
                key = (env.namespace, ev.container_id)
                if ev.id == ev.container_id and key in self._tasks:
                    from pycontainerd.pkg import timestamps

                    self._exits[key] = Exit(pid=ev.pid, status=ev.exit_status, exited_at=timestamps.from_pb(ev.exited_at))

    # -- shims -------------------------------------------------------------------

    async def _start_shim(self, namespace: str, task_id: str, opts: CreateOpts) -> ShimTask:
        spec = opts.spec.value if opts.spec is not None else b""
        bundle = await asyncio.to_thread(Bundle.create, self.root, self.state, namespace, task_id, spec)
        shim_log = None
        try:
            try:
                path = resolve(opts.runtime)
            except ShimError as exc:
                raise ShimError(f"failed to resolve runtime path: {exc.message}") from None
            binary = Binary(bundle, path, self.address, self.ttrpc_address, self.sched_core)
            # written before the shim starts, so a daemon that dies while it
            # starts leaves a bundle the next one can clean up with this binary
            await asyncio.to_thread(bundle.write, BINARY_PATH, path)
            shim_log = ShimLog(bundle)
            options = opts.task_options if opts.task_options is not None else opts.runtime_options
            try:
                address = await binary.start(options.SerializeToString() if options is not None else None)
            except ShimError as exc:
                raise ShimError(f"start failed: {exc.message}") from None
            try:
                client = await Client.connect(address, timeout=self.timeouts["load"])
            except errdefs.ContainerdError:
                await self._run_delete_action(binary)
                raise
        except BaseException:
            if shim_log is not None:
                shim_log.close()
            await asyncio.to_thread(bundle.delete)
            raise
        task = ShimTask(bundle, client, opts.runtime, self.timeouts)
        self._watch(task, binary, shim_log)
        return task

    async def _after_cleanup(self, key: tuple[str, str]) -> None:
        """A shim of this task id that died may still be being cleaned up
        (its `delete` action, its bundle removed): a new task of the id
        waits for that, or the cleanup would remove the new task's bundle,
        and what was mounted on it, under the new shim (the fuzz met it:
        a Create right after a shim crashed failed on a bundle gone)."""
        job = self._cleaning.get(key)
        if job is not None:
            await asyncio.wait([job])

    def _watch(self, task: ShimTask, binary: Binary, shim_log: ShimLog) -> None:
        key = (task.namespace, task.id)
        self._logs[key] = shim_log
        self._binaries[key] = binary

        def closed() -> None:
            if not self._closing:
                self._start_cleanup(task, binary)

        task.client.on_close(closed)

    def _start_cleanup(self, task: ShimTask, binary: Binary) -> None:
        """The cleanup after a dead shim, in the background, found by task
        id in `_cleaning` until it ends."""
        key = (task.namespace, task.id)
        job = asyncio.get_running_loop().create_task(self._cleanup_dead_shim(task, binary))
        self._cleanups.add(job)
        job.add_done_callback(self._cleanups.discard)
        self._cleaning[key] = job
        job.add_done_callback(lambda j: self._cleaning.pop(key) if self._cleaning.get(key) is j else None)

    async def _abandon(self, task: ShimTask) -> None:
        """A shim whose Create failed: delete in it, run the binary's
        `delete` action, shut it down, clean up.

        The `delete` action is ours, not containerd's: the runc shim runs
        `runc create` before it opens the stdio paths, and when opening them
        fails (a path that does not exist, a directory) it answers the error
        with the container left created in runc, its `runc init` process
        waiting in its cgroup for ever. The action's `runc delete --force`
        takes it away; when nothing was created it finds nothing."""
        key = (task.namespace, task.id)
        try:
            await asyncio.wait_for(task.delete_in_shim(), self.timeouts["cleanup"])
        except (errdefs.ContainerdError, asyncio.TimeoutError):
            pass
        try:
            path = await asyncio.to_thread(task.bundle.read, BINARY_PATH)
        except OSError:
            path = ""
        if path:
            binary = Binary(task.bundle, path, self.address, self.ttrpc_address, self.sched_core)
            await self._run_delete_action(binary, remove_bundle=False)
        await self._shutdown_and_remove(task)
        self._exits.pop(key, None)

    async def _shutdown_and_remove(self, task: ShimTask) -> None:
        key = (task.namespace, task.id)
        self._tasks.pop(key, None)
        self._forget_connection(task)  # the shim exiting now is what we asked for
        try:
            await task.shutdown()
        except errdefs.ContainerdError as exc:
            log.warning("failed to shutdown shim task", id=task.id, namespace=task.namespace, error=str(exc))
        ended = asyncio.shield(task.client.wait_closed())
        try:
            await asyncio.wait_for(ended, self.timeouts["shutdown"])
        except asyncio.TimeoutError:
            pass
        await task.client.close()
        shim_log = self._logs.pop(key, None)
        if shim_log is not None:
            shim_log.close()
        self._binaries.pop(key, None)
        try:
            await asyncio.to_thread(task.bundle.delete)
        except OSError as exc:
            log.error("failed to delete bundle", id=task.id, namespace=task.namespace, error=str(exc))

    def _forget_connection(self, task: ShimTask) -> None:
        """Our own closing of a shim's connection is not its death."""
        task.client._on_close.clear()

    async def _run_delete_action(self, binary: Binary, remove_bundle: bool = True) -> Exit | None:
        try:
            return await asyncio.wait_for(binary.delete(remove_bundle), self.timeouts["cleanup"])
        except (errdefs.ContainerdError, asyncio.TimeoutError, OSError) as exc:
            log.warning("failed to clean up after shim disconnected", id=binary.bundle.id,
                        namespace=binary.bundle.namespace, error=str(exc) or type(exc).__name__)
            return None

    async def _cleanup_dead_shim(self, task: ShimTask | None, binary: Binary, announce: bool = True) -> None:
        """containerd's cleanupAfterDeadShim: the `delete` action, then
        TaskExit and TaskDelete for a task that was still listed (unless
        `announce` is False: a task that never existed)."""
        from pycontainerd.api.events import task_pb2
        from pycontainerd.pkg import timestamps

        bundle = binary.bundle
        key = (bundle.namespace, bundle.id)
        log.warning("cleaning up after shim disconnected", id=bundle.id, namespace=bundle.namespace)
        if self._binaries.get(key) is binary:
            self._binaries.pop(key)
        shim_log = self._logs.pop(key, None)
        if shim_log is not None:
            shim_log.close()
        try:
            address = bundle.read(ADDRESS)
        except OSError:
            address = ""
        exit_ = await self._run_delete_action(binary)
        if address:  # a killed shim cannot remove its socket, and `delete` does not
            await asyncio.to_thread(_remove_stale_socket, address)
        listed = self._tasks.get(key) is task if task is not None else True
        self._tasks.pop(key, None)
        if exit_ is None:
            exit_ = Exit(pid=0, status=255, exited_at=time.time_ns())
            await asyncio.to_thread(statedirs.delete_quietly, bundle)
        if task is not None and not task.exited.done():
            task.exited.set_result(exit_)
        if not listed or not announce:
            return
        self._exits[key] = exit_
        when = timestamps.to_pb(exit_.exited_at)
        self.events.publish(bundle.namespace, TOPIC_EXIT, task_pb2.TaskExit(
            container_id=bundle.id, id=bundle.id, pid=exit_.pid, exit_status=exit_.status, exited_at=when))
        self.events.publish(bundle.namespace, TOPIC_DELETE, task_pb2.TaskDelete(
            container_id=bundle.id, pid=exit_.pid, exit_status=exit_.status, exited_at=when))

    # -- after a restart ---------------------------------------------------------

    async def load_existing(self) -> None:
        """Reconnect to every shim a previous daemon left running."""
        for ns in statedirs.subdirs(self.state):
            for task_id in statedirs.subdirs(os.path.join(self.state, ns)):
                await self._load(Bundle.load(self.state, ns, task_id))
            for task_id in statedirs.subdirs(os.path.join(self.root, ns)):
                if (ns, task_id) not in self._tasks:
                    await asyncio.to_thread(statedirs.remove_tree, os.path.join(self.root, ns, task_id))

    async def _load(self, bundle: Bundle) -> None:
        bound = log.bind(id=bundle.id, namespace=bundle.namespace)
        if not os.listdir(bundle.path):
            await asyncio.to_thread(statedirs.delete_quietly, bundle)
            return
        try:
            path = resolve(bundle.read(BINARY_PATH))
        except (OSError, ShimError) as exc:
            bound.error("failed to resolve runtime path", error=str(exc))
            await asyncio.to_thread(statedirs.delete_quietly, bundle)
            return
        binary = Binary(bundle, path, self.address, self.ttrpc_address, self.sched_core)
        # the log FIFO is held open before the first call, as containerd's
        # loadShim does: a shim a dead daemon left starting blocks in opening
        # it for writing until a reader comes, and serves nothing until then
        shim_log = ShimLog(bundle)
        try:
            address = bundle.read(ADDRESS)
            client = await Client.connect(address, timeout=self.timeouts["load"])
        except (OSError, errdefs.ContainerdError) as exc:
            bound.warning("shim is gone", error=str(exc))
            shim_log.close()
            await self._cleanup_dead_shim(None, binary)
            return
        task = ShimTask(bundle, client, _runtime_name(path), self.timeouts)
        try:
            connected = await task.connect(timeout=self.timeouts["load"])
        except errdefs.ContainerdError as exc:
            bound.warning("shim does not answer", error=str(exc))
            self._forget_connection(task)
            await client.close()
            shim_log.close()
            await self._cleanup_dead_shim(None, binary)
            return
        if not connected.task_pid and await _never_created(task):
            bound.info("cleaning leaked shim process")
            shim_log.close()
            await self._clean_leaked_shim(task, binary)
            return
        self._tasks[(bundle.namespace, bundle.id)] = task
        self._watch(task, binary, shim_log)
        bound.info("reconnected to shim")

    async def _clean_leaked_shim(self, task: ShimTask, binary: Binary) -> None:
        """A shim serving no task: a daemon died between starting it and
        its Create (or between a Delete and the Shutdown). Shut it down, run
        its `delete` action (runc's half-made container, its cgroups, the
        rootfs mount) and remove the bundle; the task was never listed, so
        nothing is published (containerd 1.7's cleanup of leaked shims)."""
        try:
            cgroup = orphans.cgroups_path(await asyncio.to_thread(_read_bytes, task.bundle.file(CONFIG)))
        except OSError:
            cgroup = ""
        self._forget_connection(task)
        try:
            await task.shutdown()
        except errdefs.ContainerdError as exc:
            log.warning("failed to shutdown leaked shim", id=task.id, namespace=task.namespace, error=str(exc))
        try:
            await asyncio.wait_for(asyncio.shield(task.client.wait_closed()), self.timeouts["shutdown"])
        except asyncio.TimeoutError:
            pass
        await task.client.close()
        await self._cleanup_dead_shim(None, binary, announce=False)
        await asyncio.to_thread(orphans.remove_empty_cgroups, cgroup)

    async def close(self) -> None:
        """The daemon stops: let go of the shims (they keep running, and the
        next daemon reconnects), without treating that as their death."""
        self._closing = True
        for job in list(self._cleanups):
            job.cancel()
        for task in list(self._tasks.values()):
            self._forget_connection(task)
            await task.client.close()
            task.exited.cancel()  # a Wait still pending ends with the daemon
        for shim_log in self._logs.values():
            shim_log.close()
        self._logs.clear()


def _wrap(exc: errdefs.ContainerdError, context: str) -> errdefs.ContainerdError:
    """The same class with `context` in front, as Go's %w wrapping reads."""
    message = f"{context}: {exc.message}" if exc.message else context
    if isinstance(exc, StatusError):
        return StatusError(exc.code, message)
    return type(exc)(message)


def _default_platform() -> str:
    from pycontainerd.pkg.platforms import default_string

    return default_string()


async def _never_created(task: ShimTask) -> bool:
    """Whether a shim that answers Connect with no task pid has no task at
    all (its State of the task is NotFound)."""
    try:
        await task.state()
    except errdefs.NotFound:
        return True
    except errdefs.ContainerdError:
        return False
    return False


def _runtime_name(path: str) -> str:
    """The runtime name a shim binary stands for (containerd-shim-runc-v2 ->
    io.containerd.runc.v2), for tasks found again after a restart."""
    name = os.path.basename(path)
    if name.startswith("containerd-shim-"):
        parts = name.removeprefix("containerd-shim-").rsplit("-", 1)
        if len(parts) == 2:
            return f"io.containerd.{parts[0]}.{parts[1]}"
    return path


def _remove_stale_socket(address: str) -> None:
    """Unlink a shim's socket file if nothing listens on it any more."""
    import socket

    path = address.removeprefix("unix://")
    if not path.startswith("/"):  # abstract socket: nothing on disk
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    except OSError:
        pass
    finally:
        probe.close()


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _timeouts(daemon_config: Any) -> dict[str, float]:
    configured = getattr(daemon_config, "timeouts", None) or {}
    out = dict(DEFAULT_TIMEOUTS)
    for short, key in TIMEOUT_KEYS.items():
        if key in configured:
            out[short] = goduration.parse(configured[key]) / 1e9
    return out


async def init(ic: InitContext) -> TaskManager:
    if os.geteuid() != 0:
        from pycontainerd.core.context import SkipPlugin

        raise SkipPlugin("runtime v2 shims need root")
    ic.meta.platforms = list(ic.config.platforms)
    manager = TaskManager(
        root=ic.root, state=ic.state, address=ic.address, ttrpc_address=ic.ttrpc_address,
        events=ic.get(PluginType.EVENT), timeouts=_timeouts(ic.daemon_config), sched_core=ic.config.sched_core,
        runc_root=os.path.join(ic.daemon_config.state, "runc"),
    )
    await manager.load_existing()
    ic.spawn("exits", manager.watch_exits())
    return manager


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [Registration(type=PluginType.RUNTIME_V2, id="task", requires=(PluginType.EVENT, PluginType.METADATA),
                         config=Config, init=init)]
