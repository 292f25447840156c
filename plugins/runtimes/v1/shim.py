"""Starting Debian's `containerd-shim` (shim v1) as containerd 1.6's
runtime/v1/shim/client does, and holding on to it.

The daemon makes the shim's socket itself (bound at the bundle's address,
mode 0600; a stale file there is removed first) and hands the listening
socket to the shim as fd 3. The shim runs in the bundle directory, in a
process group of its own, with the daemon's environment plus GOMAXPROCS=2:

    containerd-shim -namespace <ns> -workdir <work dir> -address <daemon socket>
                    -containerd-binary <pycontainerd> [-criu-path P]
                    [-runtime-root R] [-systemd-cgroup] [-debug]

Its stdout and stderr go to the FIFOs `shim.stdout.log` and
`shim.stderr.log` in the work directory, which the daemon reads (and logs
only with `shim_debug`); a restarted daemon opens them again. The shim's
OOM score is the daemon's plus one, so the kernel takes a shim before the
daemon. `address` and `shim.pid` are written to the bundle for the next
daemon. The shim publishes its events by running `-containerd-binary
--address <daemon socket> publish --topic T --namespace N`.

To put the socket at fd 3 without running Python between fork and exec
(unsafe in a threaded daemon), the shim is exec'd by `/bin/sh` with the
socket as its stdin: `exec shim ... 3<&0 </dev/null`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import socket
import subprocess

import structlog

from pycontainerd.pkg import errdefs
from pycontainerd.pkg.executable import daemon_executable

from .bundle import ADDRESS, SHIM_PID, SOCKET_PATH_LIMIT, STDERR_LOG, STDOUT_LOG, Bundle, remove_socket, socket_path

log = structlog.get_logger(__name__)

EXEC_WITH_FD3 = 'exec "$0" "$@" 3<&0 </dev/null'
MAX_LOG_LINE = 4096


class ShimError(errdefs.Unknown):
    """An error containerd reports plainly (gRPC UNKNOWN, its text alone)."""

    sentinel = ""


def resolve(binary: str) -> str:
    """Where the shim binary is, as Go's exec.Command finds it: a bare name
    on PATH, anything with a slash as it is."""
    if os.sep in binary:
        if not os.path.exists(binary):
            raise ShimError(f"failed to start shim: fork/exec {errdefs.cut(binary)}: no such file or directory")
        if not os.access(binary, os.X_OK) or os.path.isdir(binary):
            raise ShimError(f"failed to start shim: fork/exec {errdefs.cut(binary)}: permission denied")
        return os.path.abspath(binary)
    found = shutil.which(binary)
    if found is None:
        raise ShimError(f'failed to start shim: exec: "{errdefs.cut(binary)}": executable file not found in $PATH')
    return os.path.abspath(found)


class ShimLog:
    """A shim's log FIFO, held open read-write (so opening never blocks and
    the shim never sees a broken pipe while the daemon runs), drained on the
    loop; lines are logged with `debug`, else dropped, as containerd does."""

    def __init__(self, path: str, stream: str, bound, debug: bool):
        if not os.path.exists(path):
            os.mkfifo(path, 0o700)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.stream = stream
        self.log = bound
        self.debug = debug
        self._partial = b""
        asyncio.get_running_loop().add_reader(self.fd, self._read)

    def writer(self) -> int:
        """A blocking write-only descriptor for the shim's stdout or stderr:
        when no daemon holds the FIFO, the shim's writes fail instead of
        filling it."""
        fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(fd, True)
        return fd

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if not self.debug:
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if line.strip():
                self.log.info("shim", stream=self.stream, line=line.decode(errors="replace")[:MAX_LOG_LINE])
        self._partial = self._partial[-65536:]

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class ShimLogs:
    """Both of a shim's log FIFOs."""

    def __init__(self, bundle: Bundle, debug: bool):
        bound = log.bind(id=bundle.id, namespace=bundle.namespace)
        self.stdout = ShimLog(os.path.join(bundle.work_dir, STDOUT_LOG), "stdout", bound, debug)
        try:
            self.stderr = ShimLog(os.path.join(bundle.work_dir, STDERR_LOG), "stderr", bound, debug)
        except BaseException:
            self.stdout.close()
            raise

    def close(self) -> None:
        self.stdout.close()
        self.stderr.close()


class ShimProcess:
    """A running shim's pid, and (for a shim this daemon started) the child
    to reap. Its end is seen through a pidfd, which works for a shim a
    previous daemon started as well."""

    def __init__(self, pid: int, child: subprocess.Popen | None = None):
        self.pid = pid
        self.child = child
        self.exited = asyncio.get_running_loop().create_future()
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd = -1
            self._ended()
            return
        asyncio.get_running_loop().add_reader(self._pidfd, self._ended)

    def _ended(self) -> None:
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self.child is not None:
            self.child.poll()  # reap it: a shim of ours must not linger as a zombie
        if not self.exited.done():
            self.exited.set_result(None)

    async def kill(self, timeout: float) -> None:
        """SIGKILL, then wait (bounded) until it is gone."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        except asyncio.TimeoutError:
            log.warning("timed out while waiting for shim to exit", pid=self.pid)

    def release(self) -> None:
        """Stop watching (the daemon stops; the shim keeps running)."""
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if not self.exited.done():
            self.exited.cancel()


def shim_args(bundle: Bundle, daemon_address: str, runtime_root: str, criu: str, systemd_cgroup: bool,
              debug: bool) -> list[str]:
    args = ["-namespace", bundle.namespace, "-workdir", bundle.work_dir, "-address", daemon_address,
            "-containerd-binary", daemon_executable()]
    if criu:
        args += ["-criu-path", criu]
    if runtime_root:
        args += ["-runtime-root", runtime_root]
    if systemd_cgroup:
        args.append("-systemd-cgroup")
    if debug:
        args.append("-debug")
    return args


def listen(address: str) -> socket.socket:
    """Blocking: containerd's newSocket, with its retry over a stale file."""
    if len(address) > SOCKET_PATH_LIMIT:
        raise ShimError(f"{address!r}: unix socket path too long (> {SOCKET_PATH_LIMIT})")
    path = socket_path(address)
    if not path.startswith("\0"):
        os.makedirs(os.path.dirname(path), mode=0o600, exist_ok=True)
    for attempt in (1, 2):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE and attempt == 1 and not path.startswith("\0"):
                remove_socket(address)
                continue
            raise ShimError(f"failed to listen to unix socket {address!r}: {exc.strerror or exc}") from None
        break
    try:
        if not path.startswith("\0"):
            os.chmod(path, 0o600)
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock


def spawn(binary: str, args: list[str], bundle: Bundle, sock: socket.socket, stdout: int, stderr: int) -> subprocess.Popen:
    """Blocking: start the shim with `sock` as its fd 3."""
    env = {**os.environ, "GOMAXPROCS": "2"}
    try:
        return subprocess.Popen(["/bin/sh", "-c", EXEC_WITH_FD3, binary, *args], stdin=sock.fileno(), stdout=stdout,
                                stderr=stderr, cwd=bundle.path, env=env, process_group=0, close_fds=True)
    except OSError as exc:
        raise ShimError(f"failed to start shim: {exc.strerror or exc}") from None


def adjust_oom_score(pid: int) -> None:
    """Blocking: the shim's OOM score is the daemon's plus one."""
    with open("/proc/self/oom_score_adj") as f:
        score = int(f.read().strip() or 0)
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(min(score + 1, 1000)))
    except OSError as exc:
        raise ShimError(f"set shim OOM score: {exc.strerror or exc}") from None


def join_cgroup(pid: int, cgroup: str) -> None:
    """Blocking: move the shim into the (v1) cgroup the task options name."""
    from pycontainerd.pkg.cgroups import paths

    try:
        found = paths.load(cgroups_path=cgroup)
        for directory in (found.v1_dirs.values() if found.version == 1 else [found.v2_dir]):
            with open(os.path.join(directory, "cgroup.procs"), "w") as f:
                f.write(str(pid))
    except (OSError, errdefs.ContainerdError) as exc:
        raise ShimError(f"failed to join cgroup {errdefs.cut(cgroup)}: {exc}") from None


async def start(binary: str, bundle: Bundle, daemon_address: str, args: list[str], cgroup: str,
                debug: bool) -> tuple[str, ShimProcess, ShimLogs]:
    """Start a shim for `bundle`; its address, its process and its logs.
    On failure nothing is left running."""
    address = bundle.shim_address(daemon_address)
    sock = await asyncio.to_thread(listen, address)
    logs = None
    try:
        logs = ShimLogs(bundle, debug)
        out, err = logs.stdout.writer(), logs.stderr.writer()
        try:
            child = await asyncio.to_thread(spawn, binary, args, bundle, sock, out, err)
        finally:
            os.close(out)
            os.close(err)
    except BaseException:
        sock.close()
        remove_socket(address)
        if logs is not None:
            logs.close()
        raise
    sock.close()  # the shim holds it now
    process = ShimProcess(child.pid, child)
    log.info("shim started", binary=binary, pid=child.pid, address=address, debug=debug, id=bundle.id,
             namespace=bundle.namespace)
    try:
        await asyncio.to_thread(bundle.write, ADDRESS, address)
        await asyncio.to_thread(bundle.write, SHIM_PID, str(child.pid))
        if cgroup:
            await asyncio.to_thread(join_cgroup, child.pid, cgroup)
        await asyncio.to_thread(adjust_oom_score, child.pid)
    except BaseException:
        await process.kill(5.0)
        logs.close()
        raise
    return address, process, logs


def is_shim_of(pid: int, bundle: Bundle) -> bool:
    """Whether `pid` is still the shim of `bundle` (its -workdir), so a pid
    a dead shim left in shim.pid and the kernel gave to another process is
    never signalled."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return any(a == b"-workdir" and b == os.fsencode(bundle.work_dir) for a, b in zip(argv, argv[1:]))
