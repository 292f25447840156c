"""Every asyncio task and every thread with its stack: Python's answer to Go's
goroutine dump (the debug socket's /debug/pprof/goroutine, SIGUSR1).

Capturing is split in two so the loop is held only briefly: `capture` runs on
the loop (asyncio's task set is the loop's, not thread-safe) and copies
(file, line, function) triples, walking each suspended coroutine's await
chain (asyncio's own Task.get_stack stops at the outermost coroutine);
`render` runs in a worker thread, since it reads source lines from disk.
"""

from __future__ import annotations

import asyncio
import linecache
import sys
import threading
from collections import Counter
from dataclasses import dataclass

Frame = tuple[str, int, str]  # file, line, function; outermost first


@dataclass(frozen=True)
class Stack:
    kind: str  # "task" or "thread"
    ident: str  # task name, or thread name and id
    state: str  # what it is doing: "running", "awaiting Future", "done", ...
    frames: tuple[Frame, ...]


def capture(loop: asyncio.AbstractEventLoop | None = None) -> list[Stack]:
    """The loop's tasks, then every thread; call it on the loop's thread."""
    loop = loop or asyncio.get_running_loop()
    current = asyncio.current_task(loop)
    out = []
    for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
        frames, awaiting = _await_chain(task.get_coro())
        if task is current:
            state = "running"
        elif task.done():
            state = "done"
        else:
            state = f"awaiting {awaiting}" if awaiting else "pending"
        out.append(Stack("task", task.get_name(), state, frames))
    out += capture_threads()
    return out


def capture_threads(skip: int | None = None) -> list[Stack]:
    """Every thread's Python stack (the thread `skip`, e.g. a sampler, left out)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sorted(sys._current_frames().items()):
        if ident == skip:
            continue
        out.append(Stack("thread", f"{names.get(ident, 'unknown')} ({ident})", "running", _frame_chain(frame)))
    return out


def _frame_chain(frame) -> tuple[Frame, ...]:
    frames = []
    while frame is not None:
        frames.append((frame.f_code.co_filename, frame.f_lineno or 0, frame.f_code.co_name))
        frame = frame.f_back
    return tuple(reversed(frames))


def _await_chain(coro) -> tuple[tuple[Frame, ...], str]:
    """The frames of a suspended coroutine and what it awaits at the bottom."""
    frames: list[Frame] = []
    seen = 0
    while coro is not None and seen < 1000:  # a chain is finite; the bound guards odd awaitables
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            if frames or not hasattr(coro, "cr_code"):  # a Future or another awaitable object
                name = type(coro).__name__
                return tuple(frames), "Future" if name == "FutureIter" else name
            return tuple(frames), ""
        frames.append((frame.f_code.co_filename, frame.f_lineno or 0, frame.f_code.co_name))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return tuple(frames), ""


def render_full(stacks: list[Stack]) -> str:
    """Go's `debug=2` shape: each task and thread on its own, innermost call
    first, each frame's function then its file:line and source line."""
    parts = []
    for s in stacks:
        lines = [f"{s.kind} {s.ident!s} [{s.state}]:"]
        for file, line, func in reversed(s.frames):
            lines.append(f"{func}()")
            source = linecache.getline(file, line).strip() if line else ""  # no line: compiled (Cython) code
            lines.append(f"\t{file}:{line}" + (f"\n\t\t{source}" if source else ""))
        if not s.frames:
            lines.append("(no Python frames)")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def render_grouped(stacks: list[Stack]) -> str:
    """Go's `debug=1` shape: identical stacks counted once, most common first."""
    tasks = sum(1 for s in stacks if s.kind == "task")
    groups = Counter((s.kind, s.frames) for s in stacks)
    lines = [f"goroutine profile: total {len(stacks)} ({tasks} asyncio tasks, {len(stacks) - tasks} threads)"]
    for (kind, frames), n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0][0])):
        lines.append(f"{n} @ {kind}")
        for file, line, func in reversed(frames):
            lines.append(f"#\t{func}\t{file}:{line}")
        lines.append("")
    return "\n".join(lines) + "\n"


def sample(seconds: float, interval: float = 0.01) -> tuple[Counter, int]:
    """Sample every other thread's Python stack each `interval` for `seconds`
    (call it in a worker thread). Returns the folded stacks
    ("thread;outer;...;inner") with how often each was seen, and the number
    of sampling rounds. Wall-clock samples: a thread blocked in a system call
    is seen there, as it should be for a daemon that mostly waits."""
    import time

    me = threading.get_ident()
    folded: Counter = Counter()
    rounds = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for s in capture_threads(skip=me):
            name = s.ident.rsplit(" (", 1)[0]
            folded[";".join([name, *(f"{func} ({file}:{line})" for file, line, func in s.frames)])] += 1
        rounds += 1
        time.sleep(interval)
    return folded, rounds


async def dump_to_log() -> str:
    """containerd's SIGUSR1: every stack to the log at info level, between
    containerd's markers, and to <tmp>/pycontainerd.<pid>.stacks.log.
    Returns the file's path."""
    import os
    import tempfile

    import structlog

    log = structlog.get_logger(__name__)
    captured = capture()

    def write() -> tuple[str, str]:
        text = render_full(captured)
        path = os.path.join(tempfile.gettempdir(), f"pycontainerd.{os.getpid()}.stacks.log")
        with open(path, "w") as f:
            f.write(text)
        return text, path

    text, path = await asyncio.to_thread(write)
    log.info(f"=== BEGIN goroutine stack dump ===\n{text}\n=== END goroutine stack dump ===")
    log.info(f"goroutine stack dump written to {path}")
    return path
