"""The client's own terminal for `run -t`, `tasks exec -t`, `tasks
attach`, as containerd's console package and ctr use it: raw mode for
the session (restored after), its size sent to the task's pty at start
and on every SIGWINCH (ResizePty)."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import sys
import termios
import tty
from typing import Callable


def terminal_size(fd: int) -> tuple[int, int]:
    """(width, height) of the terminal on `fd`."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return cols, rows


class Console:
    """`with Console() as con:` the current terminal (stdin) in raw mode."""

    def __init__(self, fd: int | None = None):
        self.fd = sys.stdin.fileno() if fd is None else fd
        if not os.isatty(self.fd):
            raise OSError("provided file is not a console")
        self._saved: list | None = None
        self._old_handler = None

    def __enter__(self) -> "Console":
        self._saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc) -> None:
        if self._old_handler is not None:
            signal.signal(signal.SIGWINCH, self._old_handler)
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)

    def size(self) -> tuple[int, int]:
        return terminal_size(self.fd)

    def follow_resizes(self, resize: Callable[[int, int], None]) -> None:
        """ctr's HandleConsoleResize: the size now, then on every SIGWINCH.
        The handler goes in first: a window resized between the first send
        and the handler would otherwise never reach the container."""
        def send(*_: object) -> None:
            try:
                resize(*self.size())
            except Exception as exc:  # a resize that fails is reported, never fatal
                print(f"pyctr: resize pty: {exc}", file=sys.stderr)
        self._old_handler = signal.signal(signal.SIGWINCH, send)
        send()
