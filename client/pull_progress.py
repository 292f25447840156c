"""Progress of a pull: what each blob is doing, and how it is shown.

`Tracker` is the pipeline's thread-safe record: one entry per key (the
reference being resolved, then each blob's ingest ref, `layer-<digest>`
and the like) with a state, bytes done, bytes total and when its download
started and ended. The states a key goes through are:

    resolving -> resolved                        (the reference)
    waiting -> downloading -> downloaded
            -> unpacking -> done                 (a layer of a pull)
    exists | done                                (a blob that was there / was written)

`LiveProgress` draws the tracker on a terminal with rich: one line per key
with its state, a bar, bytes and rate, redrawn in place several times a
second and left on screen in its final state. When stdout is not a
terminal, pyctr prints ctr's plain table once at the end instead
(client/commands/pull.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, TextIO

DOWNLOAD_STATES = ("downloading",)


@dataclass
class Entry:
    key: str
    state: str
    offset: int = 0
    total: int = 0
    started: float | None = None  # when bytes started to flow
    finished: float | None = None  # when they stopped

    def rate(self, now: float) -> float:
        """Bytes per second of this entry's download (0 before it starts)."""
        if self.started is None:
            return 0.0
        end = self.finished if self.finished is not None else now
        return self.offset / (end - self.started) if end > self.started else 0.0


class Tracker:
    """The pull's progress record, updated from every pipeline thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}

    def set(self, key: str, state: str, *, total: int | None = None, offset: int | None = None) -> None:
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                e = self._entries[key] = Entry(key, state)
            now = self.clock()
            if state in DOWNLOAD_STATES and e.started is None:
                e.started = now
            elif state not in DOWNLOAD_STATES and e.state in DOWNLOAD_STATES:
                e.finished = now
            e.state = state
            if total is not None:
                e.total = total
            if offset is not None:
                e.offset = offset

    def advance(self, key: str, n: int) -> None:
        with self._lock:
            e = self._entries.get(key)
            if e is not None:
                e.offset += n

    def entries(self) -> list[Entry]:
        with self._lock:
            return [replace(e) for e in self._entries.values()]


def short_key(key: str) -> str:
    """`layer-sha256:<64 hex>` as `layer-sha256:<12 hex>` (a terminal line
    has room for the state and the numbers too)."""
    head, sep, hexpart = key.rpartition(":")
    if sep and len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart):
        return f"{head}:{hexpart[:12]}"
    return key


class LiveProgress:
    """`with LiveProgress(tracker, sys.stdout):` the tracker redrawn in
    place while the block runs, and once more, final, when it ends."""

    def __init__(self, tracker: Tracker, out: TextIO, human_bytes: Callable[[float], str]):
        from rich.console import Console
        from rich.live import Live

        self.tracker = tracker
        self.human = human_bytes
        self.console = Console(file=out, highlight=False)
        self.live = Live(get_renderable=self.render, console=self.console, refresh_per_second=8,
                         transient=False, redirect_stdout=False, redirect_stderr=False)

    def __enter__(self) -> LiveProgress:
        self.live.start(refresh=True)  # the first state at once, not after a tick
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.refresh()
        self.live.stop()

    def render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        now = self.tracker.clock()
        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True, overflow="ellipsis")
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True, width=24)
        table.add_column(no_wrap=True, justify="right")
        table.add_column(no_wrap=True, justify="right")
        total = 0
        for e in self.tracker.entries():
            size = f"{self.human(e.offset)}/{self.human(e.total)}" if e.total else ""
            rate = e.rate(now)
            if e.started is not None:
                total += e.offset
            complete = e.state in ("done", "exists", "downloaded", "unpacking", "resolved")
            bar = ProgressBar(total=e.total or 1, completed=(e.total or 1) if complete else e.offset, width=24)
            table.add_row(short_key(e.key) + ":", e.state, bar, size,
                          f"{self.human(rate)}/s" if rate else "")
        elapsed = now - self.tracker.started
        table.add_row(f"elapsed: {elapsed:.1f}s", f"total: {self.human(total)}", "",
                      f"({self.human(total / elapsed if elapsed > 0 else 0)}/s)", "")
        return table
