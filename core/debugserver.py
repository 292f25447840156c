"""The debug socket: containerd's `[debug] address`, served with what Python
can honestly give.

containerd serves Go's net/http/pprof and expvar there, and `ctr pprof`
reads from it. The paths are the same here; the answers are Python's:

  /debug/pprof/                    the index (HTML), naming what is served
  /debug/pprof/goroutine?debug=N   every asyncio task and every thread with its
                                   stack: debug=2 each one in full (what
                                   `ctr pprof goroutines` asks for), otherwise
                                   identical stacks counted together (Go's
                                   debug=1 text; Go's binary debug=0 has no
                                   Python counterpart)
  /debug/pprof/heap[?gc=1]         tracemalloc's top allocation sites by size
                                   (debug=2: with their tracebacks); when
                                   tracing is off the answer says so and how
                                   to switch it on: `?tracemalloc=on` (here,
                                   at run time) or PYTHONTRACEMALLOC=<frames>
                                   in the daemon's environment; `=off` stops
  /debug/pprof/profile?seconds=N   a sampled profile: every thread's Python
                                   stack every 10 ms for N seconds (default
                                   30), as folded stacks with counts
  /debug/pprof/cmdline             the command line, NUL-separated
  /debug/pprof/{trace,block,mutex,threadcreate,allocs,symbol}
                                   501: Go runtime features with no Python
                                   counterpart
  /debug/vars                      JSON counters (expvar's place)
  /debug/loglevel                  GET: the log level; PUT or POST a level
                                   name to change it at run time (not in
                                   containerd 1.6, where `[debug] level` is
                                   read once at start)

Everything that takes time (a tracemalloc snapshot, sampling, reading source
lines, /proc) runs in a worker thread; only the copy of the task stacks is
taken on the loop.
"""

from __future__ import annotations

import asyncio
import gc
import html
import json
import os
import sys
import threading
import time
from typing import Callable

import structlog

from pycontainerd.pkg import httpserve
from pycontainerd.pkg.httpserve import Request, Response, text

from . import log as logmod
from . import stacks

log = structlog.get_logger(__name__)

PROFILE_DEFAULT_SECONDS = 30.0  # Go's default, and ctr's
PROFILE_MAX_SECONDS = 600.0
PROFILE_INTERVAL = 0.01
HEAP_TOP_DEFAULT = 50
HEAP_TOP_MAX = 1000
TRACEMALLOC_FRAMES = 25  # frames kept per allocation when tracing is started here

_UNAVAILABLE = {
    "trace": "execution traces are a Go runtime feature; Python has no counterpart",
    "block": "the blocking profile is a Go runtime feature; Python has no counterpart",
    "mutex": "the mutex contention profile is a Go runtime feature; Python has no counterpart",
    "threadcreate": "Python does not record where threads were created; /debug/pprof/goroutine lists every thread",
    "allocs": "Python keeps no record of past allocations; /debug/pprof/heap shows live ones (tracemalloc)",
    "symbol": "there are no program counters to resolve in a Python process",
}

_INDEX = (
    ("goroutine", "Stack traces of every asyncio task and every thread (debug=2: each one in full)."),
    ("heap", "The top live allocation sites, from tracemalloc (?tracemalloc=on|off switches tracing)."),
    ("profile", "Sampled Python stacks of every thread; ?seconds=N (default 30)."),
    ("cmdline", "The command line of the daemon."),
)


class DebugServer:
    """The HTTP handler of the debug socket. `requests_served` says how many
    gRPC requests the daemon has answered (for /debug/vars)."""

    def __init__(self, requests_served: Callable[[], int]):
        self._requests_served = requests_served
        self._started = time.time()
        self._profiling = threading.Lock()
        self.server: httpserve.Server | None = None

    async def start(self, address: str) -> None:
        """Listen on `address`: an absolute path is a UNIX socket (the caller
        has cleared the path and set the umask), anything else host:port."""
        if os.path.isabs(address):
            self.server = await httpserve.serve(self.handle, path=address)
        else:
            host, port = httpserve.split_host_port(address)
            self.server = await httpserve.serve(self.handle, host=host, port=port)

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def handle(self, request: Request) -> Response:
        path = request.path
        if path == "/debug/loglevel":
            return self._loglevel(request)
        if request.method not in ("GET", "HEAD"):
            return text(405, "method not allowed")
        if path == "/debug/vars":
            return await self._vars()
        if path == "/debug/pprof/" or path == "/debug/pprof":
            return self._index()
        if path.startswith("/debug/pprof/"):
            name = path[len("/debug/pprof/"):]
            if name == "goroutine":
                return await self._goroutine(request)
            if name == "heap":
                return await self._heap(request)
            if name == "profile":
                return await self._profile(request)
            if name == "cmdline":
                return Response(200, "\x00".join(sys.argv).encode(errors="replace"))
            if name in _UNAVAILABLE:
                return text(501, f"{name}: not available in pycontainerd: {_UNAVAILABLE[name]}")
            return text(404, "Unknown profile")
        return text(404, "404 page not found")

    # -- /debug/pprof -------------------------------------------------------

    def _index(self) -> Response:
        rows = "\n".join(
            f'<tr><td><a href="/debug/pprof/{name}{"?debug=1" if name == "goroutine" else ""}">{name}</a></td>'
            f"<td>{html.escape(what)}</td></tr>"
            for name, what in _INDEX
        )
        body = (
            "<html><head><title>/debug/pprof/</title></head><body>\n"
            "<p>pycontainerd (Python): the profiles Python can give; "
            "/debug/vars holds the daemon's counters.</p>\n"
            f"<table>\n{rows}\n</table>\n</body></html>\n"
        )
        return Response(200, body.encode(), content_type="text/html; charset=utf-8")

    async def _goroutine(self, request: Request) -> Response:
        debug = _int(request.query.get("debug", "1"), 1)
        captured = stacks.capture()  # on the loop: the task set is the loop's
        render = stacks.render_full if debug >= 2 else stacks.render_grouped
        return Response(200, (await asyncio.to_thread(render, captured)).encode())

    async def _heap(self, request: Request) -> Response:
        import tracemalloc

        switch = request.query.get("tracemalloc", "")
        if switch not in ("", "on", "off"):
            return text(400, "tracemalloc must be on or off")
        if switch == "off":
            if tracemalloc.is_tracing():
                await asyncio.to_thread(tracemalloc.stop)
                log.info("tracemalloc stopped through the debug socket")
            return text(200, "heap profile: tracemalloc stopped (its traces are dropped)")
        if switch == "on" and not tracemalloc.is_tracing():
            tracemalloc.start(TRACEMALLOC_FRAMES)
            log.info("tracemalloc started through the debug socket", frames=TRACEMALLOC_FRAMES)
            return text(200, "heap profile: tracemalloc started; allocations made from now on are traced: "
                             "ask /debug/pprof/heap again later")
        if not tracemalloc.is_tracing():
            return text(200, "heap profile: tracemalloc is off, so no allocations are traced.\n"
                             "Switch it on with /debug/pprof/heap?tracemalloc=on (from now on), "
                             f"or start the daemon with PYTHONTRACEMALLOC={TRACEMALLOC_FRAMES} "
                             "in its environment (from the start).")
        top = min(max(_int(request.query.get("top", ""), HEAP_TOP_DEFAULT), 1), HEAP_TOP_MAX)
        debug = _int(request.query.get("debug", "1"), 1)
        collect = request.query.get("gc", "") not in ("", "0")
        return Response(200, (await asyncio.to_thread(_heap_report, top, debug >= 2, collect)).encode())

    async def _profile(self, request: Request) -> Response:
        raw = request.query.get("seconds", "")
        try:
            seconds = float(raw) if raw else PROFILE_DEFAULT_SECONDS
        except ValueError:
            return text(400, f"invalid seconds {raw[:32]!r}")
        if seconds != seconds or seconds <= 0:
            seconds = PROFILE_DEFAULT_SECONDS  # Go's rule: zero or less is the default
        if seconds > PROFILE_MAX_SECONDS:
            return text(400, f"profile duration exceeds the limit of {PROFILE_MAX_SECONDS:g} seconds")
        if not self._profiling.acquire(blocking=False):
            return text(500, "Could not enable CPU profiling: profiling already in use")
        try:
            folded, rounds = await asyncio.to_thread(stacks.sample, seconds, PROFILE_INTERVAL)
        finally:
            self._profiling.release()
        lines = [
            f"# pycontainerd sampled profile: {rounds} rounds over {seconds:g}s, every thread's Python stack "
            f"every {PROFILE_INTERVAL * 1000:g} ms (wall clock: waiting threads are sampled where they wait)",
            "# format: folded stacks (thread;outermost;...;innermost count), as flamegraph.pl reads them",
        ]
        lines += [f"{stack} {n}" for stack, n in folded.most_common()]
        return Response(200, ("\n".join(lines) + "\n").encode())

    # -- /debug/vars, /debug/loglevel ----------------------------------------

    async def _vars(self) -> Response:
        tasks = len(asyncio.all_tasks())
        values = await asyncio.to_thread(_process_vars)
        values.update(
            asyncio_tasks=tasks,
            grpc_requests=self._requests_served(),
            uptime_seconds=round(time.time() - self._started, 3),
            log_level=logmod.level(),
        )
        return Response(200, (json.dumps(values, indent=1, sort_keys=True) + "\n").encode(),
                        content_type="application/json; charset=utf-8")

    def _loglevel(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            return text(200, logmod.level())
        if request.method not in ("PUT", "POST"):
            return text(405, "method not allowed: GET the level, PUT or POST a new one")
        new = request.body.decode("utf-8", "replace").strip().lower()
        if new not in logmod.LEVELS:
            return text(400, f"unknown log level {new[:32]!r}: one of {', '.join(logmod.LEVELS)}")
        old = logmod.level()
        logmod.set_level(new)
        log.warning("log level changed through the debug socket", old=old, new=new)
        return text(200, new)


def _int(raw: str, default: int) -> int:
    try:
        return int(raw)
    except ValueError:
        return default


def _heap_report(top: int, tracebacks: bool, collect: bool) -> str:
    import tracemalloc

    if collect:
        gc.collect()
    snapshot = tracemalloc.take_snapshot()
    # Snapshot.filter_traces matches every frame with fnmatch: ten times the
    # cost of the statistics themselves; tracemalloc's own sites are few, so
    # they are dropped from the grouped result instead
    stats = [s for s in snapshot.statistics("traceback" if tracebacks else "lineno")
             if s.traceback[-1].filename != tracemalloc.__file__]
    size = sum(s.size for s in stats)
    blocks = sum(s.count for s in stats)
    current, peak = tracemalloc.get_traced_memory()
    lines = [
        f"heap profile: tracemalloc: {_mib(size)} in {blocks} blocks live "
        f"(traced now {_mib(current)}, peak {_mib(peak)}), {tracemalloc.get_traceback_limit()} frames per allocation",
        f"top {min(top, len(stats))} of {len(stats)} allocation sites by size:",
    ]
    for s in stats[:top]:
        frames = s.traceback
        lines.append(f"{_mib(s.size):>12} {s.count:>9} blocks  {frames[-1].filename}:{frames[-1].lineno}")
        if tracebacks:
            for f in reversed(frames):
                lines.append(f"#\t{f.filename}:{f.lineno}")
            lines.append("")
    return "\n".join(lines) + "\n"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.2f} MiB"


def _process_vars() -> dict:
    import resource
    import tracemalloc

    out: dict = {"cmdline": list(sys.argv), "pid": os.getpid(), "threads": threading.active_count()}
    try:
        out["open_fds"] = len(os.listdir("/proc/self/fd"))
    except OSError:
        pass
    try:
        with open("/proc/self/statm") as f:
            pages = f.read().split()
        out["rss_bytes"] = int(pages[1]) * os.sysconf("SC_PAGE_SIZE")
        out["vms_bytes"] = int(pages[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    out["max_rss_bytes"] = usage.ru_maxrss * 1024
    out["gc"] = {"collections": [g["collections"] for g in gc.get_stats()], "pending": list(gc.get_count())}
    out["tracemalloc"] = tracemalloc.is_tracing()
    return out
