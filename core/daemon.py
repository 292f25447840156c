"""Boot and shutdown: config -> discover -> order -> init -> serve.

Plugins are initialised one at a time in graph order; each gets a status,
an error and an init duration (an init slower than SLOW_INIT_SECONDS is
logged as a warning). An instance that lacks what its type's contract
requires (core/contracts.py) is an error row, not a plugin others get.
`required_plugins` that fail or never load stop the start with every
reason listed. Before anything is created, the config is checked whole
(every plugin's section included) and the socket path must be free or hold
a socket. Then a lock in the root (and one in the state directory) keeps a
second daemon off them, and the gRPC server binds the socket only after a
lock beside it is taken, so a second daemon on the same path fails instead
of silently deleting the first one's socket (grpc #17122). Nothing at the
socket path but a stale socket is ever removed. The debug socket ([debug]
address, core/debugserver.py) is guarded the same way: its lock is taken
and a live socket there refused before any plugin runs; it is bound once
gRPC serves. Plugins may put interceptors on the gRPC server
(`server_interceptors`, outside the errdefs one: the metrics plugin counts
calls there).
On stop, serving ends first, then the background tasks plugins spawned are
cancelled newest first, then plugins close in reverse init order.
"""

from __future__ import annotations

import asyncio
import fcntl
import inspect
import os
import socket
import stat
import time
from typing import Any, Iterable

import grpc
import structlog

from . import config as configmod
from . import contracts, graph, proxy
from .context import InitContext, Meta, Plugin, PluginSet, SkipPlugin
from .events import Exchange
from .registry import LoadFailure, PluginType, Registration
from .service import ErrdefsInterceptor
from .tasks import TaskGroup

log = structlog.get_logger(__name__)

STARTUP_SETTLE_SECONDS = 0.5
SLOW_INIT_SECONDS = 1.0  # a plugin init taking longer is logged as slow
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes, NUL included
CONTAINERD_METADATA = "io.containerd.metadata.v1.bolt"  # what marks a root as containerd's


class StartError(RuntimeError):
    """The daemon cannot start; the message says why."""


class LoadError(Exception):
    """Why a plugin source or registration could not be loaded."""


async def _never(_ic: InitContext) -> None:  # placeholder init for failure rows
    return None


def _release_startup_memory() -> None:
    """Hand the heap that start-up (imports, protobuf descriptors) freed back
    to the OS: glibc keeps it otherwise, and idle RSS is what users see."""
    import gc

    from . import memory

    gc.collect()
    memory.trim()


def _not_a_socket(path: str, mode: int) -> StartError:
    from pycontainerd.pkg.socketpath import kind_of

    return StartError(f"socket path {path} is not a socket ({kind_of(mode)}); refusing to start (it is left as it is)")


class FileLock:
    """An exclusive flock on a lock file holding the holder's pid.

    The file is removed on release, so neither a clean stop nor a refused
    start leaves one behind (one left by a killed daemon is not held, and
    is taken over). Because the file may be unlinked by its holder, the lock
    counts only if, once taken, the path still names the file we locked.
    """

    def __init__(self, path: str, refusal: str):
        self.path = path
        self.refusal = refusal  # "is serving <socket>", "uses the root <dir>"
        self.action = "start"  # what is refused: "refusing to <action>" (fsck: "check it")
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StartError(f"cannot create lock {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise StartError(
                    f"another daemon (pid {holder}) {self.refusal}; refusing to {self.action} (lock {self.path} is held)"
                ) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder removed it meanwhile: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None


class SocketLock(FileLock):
    """`<socket>.lock`, held while serving: gRPC would otherwise silently
    replace another daemon's socket (grpc #17122)."""

    def __init__(self, socket_path: str):
        super().__init__(socket_path + ".lock", f"is serving {socket_path}")
        self.socket_path = socket_path


class DirLock(FileLock):
    """`<dir>/pycontainerd.lock`, held from before any plugin touches the
    directory until the daemon stops.

    The root needs it for the same reason containerd locks its metadata
    database: two daemons on one root would each garbage-collect the
    other's content and snapshots. The state directory gets one too: what
    plugins keep there (mounts, sockets, runtime state) belongs to one live
    daemon, and another one starting on it would clean it up as stale.
    """

    NAME = "pycontainerd.lock"

    def __init__(self, directory: str, what: str):
        super().__init__(os.path.join(directory, self.NAME), f"uses the {what} directory {directory}")


def _make_dir(path: str, what: str, created: list[str]) -> None:
    """makedirs 0711, remembering which directories it made."""
    missing = []
    head = os.path.abspath(path)
    while head and not os.path.exists(head):
        missing.append(head)
        head = os.path.dirname(head)
    try:
        os.makedirs(path, mode=0o711, exist_ok=True)
    except OSError as exc:
        raise StartError(f"cannot create the {what} directory {path}: {exc.strerror}") from None
    created += reversed(missing)


def _refuse_live_socket(path: str) -> None:
    """Refuse a socket some process still listens on. Our lock beside it
    keeps other pycontainerd daemons off, but a containerd (or anything else)
    serving the path takes no such lock, and gRPC would silently replace its
    socket. Only a socket nobody listens on (connection refused) is stale."""
    if not os.path.exists(path) or not stat.S_ISSOCK(os.lstat(path).st_mode):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # connect(2) on a UNIX socket answers at once
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return
    except BlockingIOError:  # a full backlog: it is listening
        pass
    except OSError as exc:
        raise StartError(f"cannot use socket path {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise StartError(f"another process is serving {path}; refusing to start (its socket is left as it is)")


def _check_debug_address(address: str) -> None:
    """[debug] address: a UNIX socket path (absolute, as containerd tells
    them apart) that fits sun_path and holds nothing but a socket, or host:port."""
    if not address:
        return
    if not os.path.isabs(address):
        from pycontainerd.pkg.httpserve import split_host_port

        try:
            split_host_port(address)
        except ValueError as exc:
            raise StartError(f"[debug] {exc} (or an absolute path for a UNIX socket)") from None
        return
    if len(os.fsencode(address)) > MAX_SOCKET_PATH:
        raise StartError(f"[debug] address {address}: unix socket path too long (> {MAX_SOCKET_PATH})")
    try:
        st = os.lstat(address)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartError(f"cannot use debug socket path {address}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise _not_a_socket(address, st.st_mode)


def _check_required(required: list[str], known: set[str], disabled: set[str]) -> None:
    """A required plugin that is disabled or that no source registers can be
    refused before anything is created (a typo, most often: say which)."""
    problems = []
    for uri in dict.fromkeys(required):
        if uri in disabled:
            problems.append(f"required plugin {uri} disabled")
        elif uri not in known:
            import difflib  # only when reporting an error

            kind, _, name = uri.rpartition(".")  # the nearest id among the plugins of that type
            same_kind = {k.rpartition(".")[2]: k for k in sorted(known) if k.rpartition(".")[0] == kind}
            near = [same_kind[n] for n in difflib.get_close_matches(name, list(same_kind), n=1, cutoff=0.6)]
            problems.append(f"required plugin {uri} not included" + (f" (did you mean {near[0]}?)" if near else ""))
    if problems:
        raise StartError("; ".join(problems))


class Daemon:
    def __init__(
        self,
        cfg: configmod.Config,
        registrations: Iterable[Registration],
        failures: Iterable[LoadFailure] = (),
        proxy_clients: proxy.ClientFactories | None = None,
    ):
        self.config = cfg
        self.registrations = list(registrations)
        self.failures = list(failures)
        known = {r.uri for r in self.registrations}
        if proxy_clients is None:
            from pycontainerd.plugins.builtins import PROXY_CLIENTS as proxy_clients
        for reg in proxy.registrations(cfg.proxy_plugins, proxy_clients):
            if reg.uri in known:
                self.failures.append(LoadFailure(reg.type, reg.id, f"proxy plugin {reg.uri} already registered"))
            else:
                self.registrations.append(reg)
        self.plugins = PluginSet()
        self.events = Exchange()
        self.tasks = TaskGroup()
        self.server: grpc.aio.Server | None = None
        self.ttrpc_server: Any = None  # pkg.ttrpc.Server on <grpc address>.ttrpc, once serving
        self.interceptor = ErrdefsInterceptor()
        self.debug: Any = None  # core/debugserver.DebugServer, when [debug] address is set
        self._lock: SocketLock | None = None
        self._locks: list[FileLock] = []  # root, state, socket: released on stop
        self._stopped = asyncio.Event()
        self._closed = False

    # -- start ---------------------------------------------------------------

    async def start(self) -> None:
        self._check()  # refuse before anything is created
        cfg = self.config
        created: list[str] = []  # directories this start made, removed again if it fails
        try:
            for path, what in ((cfg.root, "root"), (cfg.state, "state")):
                _make_dir(path, what, created)
                if what == "root" or os.path.realpath(path) != os.path.realpath(cfg.root):
                    self._take(DirLock(path, what))
            sock_dir = os.path.dirname(cfg.grpc.address) or "."  # a bare name is in the working directory
            if not os.path.isdir(sock_dir):
                _make_dir(sock_dir, "socket", created)
                os.chmod(sock_dir, 0o711)  # makedirs' mode is filtered by the umask
            self._lock = self._take(SocketLock(cfg.grpc.address))
            _refuse_live_socket(cfg.grpc.address)  # a process that takes no lock (containerd) may serve it
            if os.path.isabs(cfg.debug.address):  # refused now, before any plugin runs, if another serves it
                debug_dir = os.path.dirname(cfg.debug.address)
                if not os.path.isdir(debug_dir):
                    _make_dir(debug_dir, "debug socket", created)
                self._take(SocketLock(cfg.debug.address))
                _refuse_live_socket(cfg.debug.address)
            await self._init_plugins()
            await self._serve()
            if cfg.debug.address:
                await self._serve_debug()
        except BaseException:
            await self._stop_ttrpc()
            await self._close_debug()
            if self.server is not None:  # bound, then refused (e.g. the socket's owner): no stale socket
                await self.server.stop(0)
                self.server = None
                try:
                    os.unlink(cfg.grpc.address)
                except FileNotFoundError:
                    pass
            await self._close_plugins()
            self._release_locks()
            for path in reversed(created):  # only what is still empty
                try:
                    os.rmdir(path)
                except OSError:
                    pass
            raise

    def _check(self) -> None:
        """Everything that can be refused without touching the filesystem:
        the socket path and what is there, root and state, every plugin's
        config. Then the warnings about what the config sets in vain."""
        cfg = self.config
        cfg.validate()  # loading did, but a Config may also be built in code
        path = cfg.grpc.address
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            from pycontainerd.pkg.errdefs import go_quote  # containerd quotes it as Go's %q does

            raise StartError(f"{go_quote(path)}: unix socket path too long (> {MAX_SOCKET_PATH})")
        if len(os.fsencode(cfg.ttrpc_address)) > MAX_SOCKET_PATH:
            from pycontainerd.pkg.errdefs import go_quote

            raise StartError(f"{go_quote(cfg.ttrpc_address)}: unix socket path too long (> {MAX_SOCKET_PATH})")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StartError(f"cannot use socket path {path}: {exc.strerror}") from None
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise _not_a_socket(path, st.st_mode)
        _check_debug_address(cfg.debug.address)
        for where, what in ((cfg.root, "root"), (cfg.state, "state")):
            if not where:
                raise StartError(f"{what} is empty: it must be a directory path")
            if os.path.exists(where) and not os.path.isdir(where):
                raise StartError(f"{what} {where} is not a directory")
        if os.path.isdir(os.path.join(cfg.root, CONTAINERD_METADATA)):
            # containerd's blobs and snapshots are referenced from its bolt
            # database, which we do not read: our GC would delete them all
            raise StartError(
                f"root {cfg.root} is a containerd root (it holds {CONTAINERD_METADATA}); refusing to start: "
                "pycontainerd needs a root of its own"
            )
        disabled = set(cfg.disabled_plugins)
        for reg in self.registrations:
            if reg.config is not None and reg.uri not in disabled:
                configmod.decode_plugin_config(reg.config, cfg, reg.uri)
        known = {r.uri for r in self.registrations}
        _check_required(cfg.required_plugins, known | {f.uri for f in self.failures}, disabled)
        unknown = sorted(uri for uri in cfg.plugins if uri not in known)
        if unknown:
            log.warning("config for plugins that are not registered is ignored", plugins=unknown)
        for key in cfg.inert_settings():
            log.warning("config setting has no effect in pycontainerd", key=key)

    def _take(self, lock: FileLock) -> Any:
        lock.acquire()
        self._locks.append(lock)
        return lock

    def _release_locks(self) -> None:
        for lock in reversed(self._locks):
            lock.release()
        self._locks = []

    def _configs(self, ordered: list[Registration]) -> dict[str, Any]:
        """Decode every plugin's config before any init runs, so a typo in
        config.toml stops the start before anything happened."""
        return {
            r.uri: configmod.decode_plugin_config(r.config, self.config, r.uri) if r.config else None
            for r in ordered
        }

    async def _init_plugins(self) -> None:
        cfg = self.config
        disabled = set(cfg.disabled_plugins)
        required = list(dict.fromkeys(cfg.required_plugins))
        ordered = graph.order(self.registrations, disabled=lambda r: r.uri in disabled)
        configs = self._configs(ordered)

        for f in self.failures:
            if f.uri in disabled:
                continue
            reg = Registration(type=f.type, id=f.id, init=_never)
            self.plugins.add(Plugin(registration=reg, meta=Meta(), error=LoadError(f.error)))
            log.error("plugin failed to load", plugin=f.uri, error=f.error)

        for reg in ordered:
            ic = InitContext(
                registration=reg,
                config=configs[reg.uri],
                root=os.path.join(cfg.root, reg.uri),
                state=os.path.join(cfg.state, reg.uri),
                address=cfg.grpc.address,
                ttrpc_address=cfg.ttrpc_address,
                events=self.events,
                plugins=self.plugins,
                daemon_config=cfg,
                tasks=self.tasks,
            )
            started = time.perf_counter()
            instance, error = None, None
            try:
                instance = await reg.init(ic)
                contracts.check(reg.type, instance)
            except SkipPlugin as exc:
                error = exc
            except contracts.ContractError as exc:  # unusable: release what it holds
                error = exc
                await _close(reg.uri, instance)
                instance = None
            except Exception as exc:  # one plugin's failure is its own row
                error = exc
            duration = time.perf_counter() - started
            self.plugins.add(Plugin(registration=reg, meta=ic.meta, instance=instance, error=error, duration=duration))
            ms = round(duration * 1000, 3)
            if error is None:
                log.info("loaded plugin", plugin=reg.uri, duration_ms=ms)
            elif isinstance(error, SkipPlugin):
                log.info("skip loading plugin", plugin=reg.uri, reason=error.reason, duration_ms=ms)
            else:
                log.warning("failed to load plugin", plugin=reg.uri, error=str(error), duration_ms=ms)
            if duration > SLOW_INIT_SECONDS:
                log.warning("slow plugin init", plugin=reg.uri, duration_ms=ms, threshold_ms=SLOW_INIT_SECONDS * 1000)

        problems = []
        by_uri = {p.uri: p for p in self.plugins}
        for uri in required:
            p = by_uri.get(uri)
            if p is None:
                why = "disabled" if uri in disabled else "not included"
                problems.append(f"required plugin {uri} {why}")
            elif p.error is not None:
                problems.append(f"required plugin {uri} failed to load: {p.error}")
        if problems:
            raise StartError("; ".join(problems))

    async def _serve(self) -> None:
        cfg = self.config
        # a plugin may watch every call (the metrics plugin's gRPC counters):
        # its interceptors go outside ours, so they see the final status
        watchers = [i for p in self.plugins if p.error is None for i in getattr(p.instance, "server_interceptors", ())]
        self.server = grpc.aio.server(
            interceptors=[*watchers, self.interceptor],
            options=[
                ("grpc.max_receive_message_length", cfg.grpc.max_recv_message_size),
                ("grpc.max_send_message_length", cfg.grpc.max_send_message_size),
                ("grpc.so_reuseport", 0),
            ],
        )
        for p in self.plugins:
            if p.registration.type == PluginType.GRPC and p.error is None and hasattr(p.instance, "register"):
                p.instance.register(self.server)
        path = cfg.grpc.address
        if os.path.exists(path):  # we hold the lock, and nothing listened on it: a stale socket
            mode = os.lstat(path).st_mode
            if not stat.S_ISSOCK(mode):  # appeared since _check: never ours to delete
                raise _not_a_socket(path, mode)
            _refuse_live_socket(path)
            os.unlink(path)
        old_umask = os.umask(0o117)  # the socket is born 0660, never wider
        try:
            try:
                self.server.add_insecure_port("unix:" + path)
            except RuntimeError as exc:  # grpc says only "Failed to bind"
                raise StartError(f"failed to listen on {path}: {exc}") from None
            await self.server.start()
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o660)
        if cfg.grpc.uid or cfg.grpc.gid:
            try:
                os.chown(path, cfg.grpc.uid, cfg.grpc.gid)
            except OSError as exc:
                raise StartError(f"cannot give {path} to uid {cfg.grpc.uid} gid {cfg.grpc.gid}: {exc.strerror}") from None
        log.info("serving", address=path)
        await self._serve_ttrpc()
        # off the path to the first answered request: a full collection
        # costs ~10 ms, and memory can go back to the OS once start-up settles
        asyncio.get_running_loop().call_later(STARTUP_SETTLE_SECONDS, _release_startup_memory)

    async def _serve_ttrpc(self) -> None:
        """The ttrpc socket (`<grpc address>.ttrpc` unless [ttrpc] says),
        where shims publish their events: every plugin instance with
        `register_ttrpc(server)` registers its services on it, as containerd
        serves its TTRPCService plugins. Same discipline as the gRPC socket:
        a lock beside it, a live socket refused, only a stale one removed."""
        from pycontainerd.pkg.ttrpc import Server as TTRPCServer

        cfg = self.config
        path = cfg.ttrpc_address
        self._take(SocketLock(path))
        _refuse_live_socket(path)
        if os.path.exists(path):
            mode = os.lstat(path).st_mode
            if not stat.S_ISSOCK(mode):
                raise _not_a_socket(path, mode)
            os.unlink(path)
        server = TTRPCServer()
        for p in self.plugins:
            if p.error is None and hasattr(p.instance, "register_ttrpc"):
                p.instance.register_ttrpc(server)
        try:
            await server.listen(path, mode=0o660)
        except OSError as exc:
            raise StartError(f"failed to listen on {path}: {exc.strerror}") from None
        self.ttrpc_server = server
        if cfg.ttrpc.uid or cfg.ttrpc.gid:
            try:
                os.chown(path, cfg.ttrpc.uid, cfg.ttrpc.gid)
            except OSError as exc:
                raise StartError(f"cannot give {path} to uid {cfg.ttrpc.uid} gid {cfg.ttrpc.gid}: {exc.strerror}") from None
        log.info("serving ttrpc", address=path)

    async def _stop_ttrpc(self) -> None:
        if self.ttrpc_server is None:
            return
        await self.ttrpc_server.close()
        self.ttrpc_server = None
        try:
            os.unlink(self.config.ttrpc_address)
        except FileNotFoundError:
            pass
    async def _serve_debug(self) -> None:
        """containerd's debug endpoint: an absolute path is a UNIX socket
        guarded like the gRPC one (a lock beside it, a live socket refused,
        born 0660, given to [debug] uid/gid, removed at stop); anything else
        is host:port."""
        from .debugserver import DebugServer

        cfg = self.config.debug
        debug = DebugServer(lambda: self.interceptor.requests)
        path = cfg.address
        if not os.path.isabs(path):
            try:
                await debug.start(path)
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's strerror repeats the address
                raise StartError(f"failed to get listener for debug endpoint: {path}: {reason.lower()}") from None
            self.debug = debug
            log.info("serving debug", address=path)
            return
        # start() holds the lock beside it and found nobody listening
        if os.path.lexists(path):
            mode = os.lstat(path).st_mode
            if not stat.S_ISSOCK(mode):
                raise _not_a_socket(path, mode)
            os.unlink(path)  # stale: we hold its lock and nobody listens
        old_umask = os.umask(0o117)
        try:
            await debug.start(path)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartError(f"failed to get listener for debug endpoint: {path}: {reason.lower()}") from None
        finally:
            os.umask(old_umask)
        self.debug = debug  # from here on, ours to remove at stop
        os.chmod(path, 0o660)
        if cfg.uid or cfg.gid:
            try:
                os.chown(path, cfg.uid, cfg.gid)
            except OSError as exc:
                raise StartError(f"cannot give {path} to uid {cfg.uid} gid {cfg.gid}: {exc.strerror}") from None
        log.info("serving debug", address=path)

    async def _close_debug(self) -> None:
        if self.debug is None:
            return
        await self.debug.close()
        self.debug = None
        if os.path.isabs(self.config.debug.address):
            try:
                os.unlink(self.config.debug.address)
            except FileNotFoundError:
                pass

    # -- stop ----------------------------------------------------------------

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self, grace: float = 2.0) -> None:
        self.events.close()
        await self._stop_ttrpc()
        await self._close_debug()
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
            try:
                os.unlink(self.config.grpc.address)
            except FileNotFoundError:
                pass
        await self._close_plugins()
        self._release_locks()
        self._stopped.set()
        log.info("stopped")

    async def _close_plugins(self) -> None:
        if self._closed:
            return
        await self.tasks.cancel_all()
        for p in reversed(self.plugins.ordered):
            if p.error is None:
                await _close(p.uri, p.instance)
        self._closed = True


async def _close(uri: str, instance: Any) -> None:
    """Call the instance's close, sync or async, if it has one."""
    close = getattr(instance, "close", None)
    if close is None:
        return
    try:
        result = close()
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        log.warning("error closing plugin", plugin=uri, error=str(exc))
