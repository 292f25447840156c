"""OOM notifications of cgroups, delivered on the daemon's event loop.

v1: the kernel's memory.oom_control notification: an eventfd registered
through cgroup.event_control (`<eventfd> <fd of memory.oom_control>`); the
eventfd becomes readable on every OOM in the cgroup, and also when the
cgroup is removed (then the watch ends), as containerd's oomCollector
handles it. v2: inotify on memory.events (and cgroup.events, to see the
cgroup empty); an OOM is a rise of its `oom_kill` count.

The fds are read with `loop.add_reader`, so no thread waits on them; the
few file writes and reads a notification needs run in worker threads.
Callbacks run on the loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import struct
from dataclasses import dataclass, field
from typing import Callable

import structlog

from . import v2 as v2stats
from .paths import TaskCgroup

log = structlog.get_logger(__name__)

IN_MODIFY = 0x00000002
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_libc = None


def _inotify():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        _libc = libc
    return _libc


def _inotify_fd(paths: list[str]) -> int:
    """An inotify fd watching each path for modification (blocking: call in a thread)."""
    libc = _inotify()
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    for path in paths:
        if libc.inotify_add_watch(fd, os.fsencode(path), IN_MODIFY) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify watch on {path}: {os.strerror(err)}")
    return fd


def _v1_eventfd(memory_dir: str) -> int:
    """Register for v1 OOM notification; returns the eventfd (blocking: call in a thread)."""
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        control = os.open(os.path.join(memory_dir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            with open(os.path.join(memory_dir, "cgroup.event_control"), "w") as f:
                f.write(f"{efd} {control}")
        finally:
            os.close(control)  # the kernel keeps its own reference
    except BaseException:
        os.close(efd)
        raise
    return efd


def _v2_oom_kills(directory: str) -> int | None:
    """memory.events' oom_kill now, or None when the cgroup is gone."""
    try:
        events = v2stats.read_kv(os.path.join(directory, "memory.events"))
    except (FileNotFoundError, OSError):
        return None
    value = events.get("oom_kill", 0)
    return value if isinstance(value, int) else 0


@dataclass
class _Watch:
    key: str
    version: int
    directory: str
    fd: int
    callback: Callable[[], None]
    count: int = 0  # OOMs seen so far
    last_kills: int = 0  # v2: memory.events oom_kill last read
    pending: set = field(default_factory=set)


class OOMWatcher:
    """Watches cgroups for OOM, calls a watch's callback (on the loop) for
    each one, and counts them. Create it on the loop that will run it."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._watches: dict[str, _Watch] = {}

    async def add(self, key: str, cgroup: TaskCgroup, callback: Callable[[], None]) -> bool:
        """Watch `cgroup` under `key` (a second add for the key is a no-op).
        False when the cgroup has no memory controller to watch."""
        if key in self._watches:
            return True
        directory = cgroup.memory_dir
        if not directory:
            return False
        if cgroup.version == 1:
            fd = await asyncio.to_thread(_v1_eventfd, directory)
            watch = _Watch(key, 1, directory, fd, callback)
        else:
            kills = await asyncio.to_thread(_v2_oom_kills, directory)
            if kills is None:
                return False  # no memory.events: the memory controller is off here
            fd = await asyncio.to_thread(
                _inotify_fd, [os.path.join(directory, "memory.events"), os.path.join(directory, "cgroup.events")])
            watch = _Watch(key, 2, directory, fd, callback, last_kills=kills)
        if key in self._watches:  # added meanwhile
            os.close(fd)
            return True
        self._watches[key] = watch
        self._loop.add_reader(fd, self._readable, watch)
        return True

    def count(self, key: str) -> int | None:
        watch = self._watches.get(key)
        return None if watch is None else watch.count

    def counts(self) -> dict[str, int]:
        return {key: w.count for key, w in list(self._watches.items())}

    def remove(self, key: str) -> None:
        watch = self._watches.pop(key, None)
        if watch is None:
            return
        self._loop.remove_reader(watch.fd)
        os.close(watch.fd)
        for task in list(watch.pending):
            task.cancel()

    def close(self) -> None:
        for key in list(self._watches):
            self.remove(key)

    def _readable(self, watch: _Watch) -> None:
        """The fd is readable: drain it, then judge in a thread what happened."""
        try:
            data = os.read(watch.fd, 8 if watch.version == 1 else 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("oom watch failed", key=watch.key, error=str(exc))
            self.remove(watch.key)
            return
        # v1: the eventfd's counter is the number of notifications since the last read
        times = struct.unpack("=Q", data)[0] if watch.version == 1 and len(data) == 8 else 1
        task = self._loop.create_task(self._judge(watch, times))
        watch.pending.add(task)
        task.add_done_callback(watch.pending.discard)

    async def _judge(self, watch: _Watch, times: int) -> None:
        if watch.version == 1:
            # a removed cgroup signals too: that is the end of the watch, not an OOM
            if not await asyncio.to_thread(os.path.isdir, watch.directory):
                self.remove(watch.key)
                return
            self._fire(watch, times)
            return
        kills = await asyncio.to_thread(_v2_oom_kills, watch.directory)
        if kills is None:
            self.remove(watch.key)
            return
        if kills > watch.last_kills:
            new = kills - watch.last_kills
            watch.last_kills = kills
            self._fire(watch, new)

    def _fire(self, watch: _Watch, times: int) -> None:
        if self._watches.get(watch.key) is not watch:
            return
        for _ in range(times):
            watch.count += 1
            try:
                watch.callback()
            except Exception as exc:  # one bad callback must not end the watch
                log.error("oom callback failed", key=watch.key, error=str(exc))

