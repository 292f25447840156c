"""Giving memory back once a burst is over.

After 20 clients ingested and snapshotted at once, the daemon's idle RSS
stayed at two to three times its start, although nothing the burst
allocated was still referenced. The memory was free inside glibc's malloc,
not returned to the kernel:

- Blob data travels in 1 MiB messages, so the daemon allocates and frees
  1 MiB buffers (protobuf bytes, the hashing/writing copies) from several
  threads. glibc serves such a size with mmap at first, but every mmapped
  chunk freed raises its mmap threshold (up to 32 MiB), so after the first
  few the buffers come from the heaps instead: the main heap and one arena
  per worker thread (asyncio's pool, gRPC's threads).
- A heap only shrinks from its top; one small live allocation above a freed
  megabyte keeps all of it resident. Per-thread arenas multiply that.

Remedies, all glibc's own knobs (nothing happens on another libc):

- `tune_allocator()` fixes the mmap threshold at 256 KiB (M_MMAP_THRESHOLD),
  which also stops it from moving: large buffers are always mmapped and go
  back to the kernel the moment they are freed. An explicit
  MALLOC_MMAP_THRESHOLD_ in the environment wins.
- It also caps malloc's arenas at two (M_ARENA_MAX). glibc gives threads
  arenas of their own, up to eight per CPU, and the daemon has about a
  dozen threads (gRPC's event engine and timer, asyncio's worker pool):
  each arena keeps its own free pages and its own fragmentation. The
  daemon's Python runs under one lock anyway: with two arenas its CPU per
  `ctr run --rm` did not change, and its RSS once containers had run was
  ~0.5 MiB lower (bench/run.py). An explicit MALLOC_ARENA_MAX in the
  environment wins. glibc reads the cap when a second thread first needs
  an arena, so it is set before any thread starts.
- `Settler` (a background task of the daemon) watches the RSS once a second;
  when it has stopped growing and sits well above what it was after the last
  trim, it calls malloc_trim(0) (in a thread), which hands every free page
  of every arena back, not only the heaps' tops.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os

import structlog

log = structlog.get_logger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameter numbers (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 << 10
ARENA_MAX = 2
SETTLE_INTERVAL = 1.0  # seconds between RSS looks
SETTLE_SLACK = 8 << 20  # growth over the last settled RSS worth a trim
_PAGE = os.sysconf("SC_PAGE_SIZE")


@functools.cache
def _glibc():
    """The process's glibc, or None (musl and others have no malloc_trim)."""
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def tune_allocator() -> bool:
    """Fix malloc's mmap threshold and cap its arenas (see the module
    docstring), each unless the environment sets it. Call it before any
    thread starts. True if malloc took every setting made."""
    libc = _glibc()
    if libc is None:
        return False
    ok = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and ok
    if "MALLOC_ARENA_MAX" not in os.environ:
        ok = bool(libc.mallopt(M_ARENA_MAX, ARENA_MAX)) and ok
    return ok


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def trim() -> None:
    """Hand every free page of malloc's heaps and arenas back to the OS
    (glibc's malloc_trim); nothing on another libc. Blocking: a few ms."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


class Settler:
    """Trims malloc's free memory after activity stops: `run()` is the
    loop, spawned as one of the daemon's background tasks (cancelled when
    the daemon stops)."""

    def __init__(self, interval: float = SETTLE_INTERVAL, slack: int = SETTLE_SLACK):
        self.interval = interval
        self.slack = slack
        self.trims = 0

    async def run(self) -> None:
        if _glibc() is None or not os.path.exists("/proc/self/statm"):
            return
        settled = previous = rss_bytes()
        while True:
            await asyncio.sleep(self.interval)
            now = rss_bytes()
            if now <= previous and now > settled + self.slack:
                # no longer growing, and well above the last quiet level
                await asyncio.to_thread(trim)
                self.trims += 1
                after = rss_bytes()
                log.debug("returned free memory to the system", rss_before=now, rss_after=after)
                now = after
                settled = after
            elif now < settled:
                settled = now
            previous = now
