"""A task's stdio as containerd's cio package gives it: FIFOs the client
creates in a private directory (0700, NewFIFOSetInDir) under the FIFO
root (/run/containerd/fifo, as ctr), named `<id>-stdin`, `<id>-stdout`,
`<id>-stderr`; the shim opens their other ends. Threads copy our streams
to and from them; `wait()` returns once stdout and stderr reached their
end (the shim closed them), `close()` removes the directory.

A FIFO opened for reading with O_NONBLOCK does not report a hang-up to
poll(2) until a writer has come and gone, so a copier waits quietly for
the shim instead of seeing an early end of file.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Callable

DEFAULT_FIFO_DIR = "/run/containerd/fifo"  # containerd's defaults.DefaultFIFODir
COPY_SIZE = 32 << 10


@dataclass
class FIFOSet:
    """The paths a task is created with ("" for a stream it does not have)."""

    dir: str
    stdin: str
    stdout: str
    stderr: str
    terminal: bool


def new_fifo_set(container_id: str, terminal: bool, fifo_dir: str = "", stdin: bool = True,
                 stdout: bool = True, stderr: bool = True) -> FIFOSet:
    root = fifo_dir or DEFAULT_FIFO_DIR
    os.makedirs(root, 0o700, exist_ok=True)
    d = tempfile.mkdtemp(dir=root, prefix="")  # 0700, as Go's MkdirTemp
    paths = {name: os.path.join(d, f"{container_id}-{name}") if want else ""
             for name, want in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr and not terminal))}
    for p in paths.values():
        if p:
            os.mkfifo(p, 0o700)
    return FIFOSet(d, paths["stdin"], paths["stdout"], paths["stderr"], terminal)


def remove_fifo_dir(path: str, fifo_dir: str = "") -> None:
    """Remove the FIFO directory holding `path` (a task's stdio path), but
    only one that is directly inside the FIFO root: a path a task reports
    is never trusted to name anything else."""
    if not path:
        return
    root = os.path.realpath(fifo_dir or DEFAULT_FIFO_DIR)
    d = os.path.dirname(os.path.abspath(path))
    if os.path.dirname(d) == root and os.path.isdir(d) and not os.path.islink(d):
        shutil.rmtree(d, ignore_errors=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class StdioCopier:
    """Copies between our streams (file descriptors) and a FIFO set."""

    def __init__(self, fifos: FIFOSet, stdin: int | None = None, stdout: int | None = 1, stderr: int | None = 2,
                 on_stdin_eof: Callable[[], None] | None = None):
        self.fifos = fifos
        self._out_threads: list[threading.Thread] = []
        self._stdin_fd: int | None = None
        self._stdin_src = stdin
        self._on_stdin_eof = on_stdin_eof
        if fifos.stdin and stdin is not None:
            # read-write: the open does not wait for the shim, and our close is its end of file
            self._stdin_fd = os.open(fifos.stdin, os.O_RDWR | os.O_CLOEXEC)
        for path, dst in ((fifos.stdout, stdout), (fifos.stderr, stderr)):
            if path and dst is not None:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                t = threading.Thread(target=self._copy_out, args=(fd, dst), daemon=True)
                t.start()
                self._out_threads.append(t)

    def begin_stdin(self) -> None:
        """Start copying stdin, once the shim holds the FIFO (after the
        task or exec was created): what we wrote must not die with a pipe
        nobody else had open yet."""
        if self._stdin_fd is not None:
            threading.Thread(target=self._copy_in, args=(self._stdin_src, self._on_stdin_eof), daemon=True).start()

    def _copy_in(self, src: int, on_eof: Callable[[], None] | None) -> None:
        fd = self._stdin_fd
        try:
            while True:
                data = os.read(src, COPY_SIZE)
                if not data:
                    break
                _write_all(fd, data)
        except OSError:
            pass
        finally:
            self._close_stdin()
        if on_eof is not None:
            try:
                on_eof()
            except Exception:  # the task may be gone already
                pass

    def _close_stdin(self) -> None:
        fd, self._stdin_fd = self._stdin_fd, None
        if fd is not None:
            os.close(fd)

    @staticmethod
    def _copy_out(fd: int, dst: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        try:
            while True:
                poller.poll()
                try:
                    data = os.read(fd, COPY_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    return
                try:
                    _write_all(dst, data)
                except OSError as exc:
                    if exc.errno != errno.EPIPE:
                        raise
                    return
        finally:
            os.close(fd)

    def wait(self, timeout: float | None = None) -> None:
        """Until stdout and stderr are at their end."""
        for t in self._out_threads:
            t.join(timeout)

    def close(self) -> None:
        """Stop copying in; remove the FIFO directory when we made it."""
        self._close_stdin()
        if self.fifos.dir:
            shutil.rmtree(self.fifos.dir, ignore_errors=True)

