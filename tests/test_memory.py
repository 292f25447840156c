"""core/memory.py: the allocator settings the daemon makes for itself.

glibc's malloc gives each new thread an arena of its own, up to eight per
CPU: a heap that reserves 64 MiB (HEAP_MAX_SIZE) at a 64 MiB-aligned address
and makes it writable as it fills. Each test runs
a fresh interpreter (the cap is read once per process), starts 8 threads
that all hold memory at once, and counts those heaps in /proc/self/maps."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not os.path.exists("/proc/self/maps") or sys.maxsize < 2**32,
    reason="glibc's arenas on 64-bit Linux",
)

PROGRAM = r"""
import os, sys, threading
from pycontainerd.core import memory

if sys.argv[1] == "tuned":
    assert memory.tune_allocator()

HEAP = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: reserved whole, made writable as it fills

def thread_heaps():
    maps = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        maps.append((lo, hi, fields[1], len(fields) == 5))
    count = 0
    for i, (lo, hi, perms, anonymous) in enumerate(maps):
        if not (anonymous and perms.startswith("rw") and lo % HEAP == 0):
            continue
        rest = maps[i + 1] if i + 1 < len(maps) else None
        if hi - lo == HEAP or (rest and rest[0] == hi and rest[2].startswith("---") and rest[1] == lo + HEAP):
            count += 1
    return count

together = threading.Barrier(9)
held = []

def work():
    held.append([bytes(2000) for _ in range(100)])  # > 512 bytes: from malloc, not Python's pools
    together.wait()

threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
together.wait()
print(thread_heaps())
for t in threads:
    t.join()
"""


def heaps(mode: str, env: dict[str, str] | None = None) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], env={**clean, **(env or {})},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_threads_share_two_arenas_once_tuned():
    # untouched, 8 threads holding memory get an arena (a heap) each, while
    # glibc's limit allows (8 per CPU, the main arena included)...
    assert heaps("untouched") == min(8, 8 * os.cpu_count() - 1)
    # ...tuned as the daemon tunes itself, they share two: the main one and one heap
    assert heaps("tuned") == 1


def test_the_environment_wins():
    assert heaps("tuned", {"MALLOC_ARENA_MAX": "4"}) == 3
