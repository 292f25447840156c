"""io.containerd.gc.v1.scheduler: decides when the metadata garbage collector
runs, the way containerd's gc/scheduler does.

A collection happens
- once, `startup_delay` after start (it also sets the base for pacing);
- `schedule_delay` after a manual trigger (`schedule_and_wait`, used by a
  synchronous lease delete), after `deletion_threshold` deletions, or, when
  no collection is scheduled yet, after the first deletion (threshold 0) or
  `mutation_threshold` changes;
- on a schedule otherwise: the interval keeps collections to at most
  `pause_threshold` of the time (interval = average pause / threshold -
  average pause), and a scheduled run is skipped when nothing was deleted
  and fewer than `mutation_threshold` changes happened since the last one.

Events carry their time; those from before the last collection are ignored
(that collection already saw them). Durations in the config are Go
duration strings ("0ms", "100ms", "1s").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import structlog

from pycontainerd.core import config as configmod
from pycontainerd.core.context import InitContext
from pycontainerd.core.registry import PluginType, Registration, hookimpl
from pycontainerd.pkg import errdefs, goduration

log = structlog.get_logger(__name__)


@dataclass
class Config:
    """[plugins."io.containerd.gc.v1.scheduler"], containerd's keys and defaults."""

    # at most this share of real time is spent in scheduled collections;
    # containerd documents 0 < threshold <= 0.5
    pause_threshold: float = configmod.ranged(0.02, 0, 0.5, low_open=True)
    # collect after this many deletions; 0: deletions alone do not force one
    deletion_threshold: int = configmod.ranged(0, 0)
    # after this many changes the next scheduled collection runs; 0: only
    # deletions and triggers count
    mutation_threshold: int = configmod.ranged(100, 0)
    # delay from a trigger (or a threshold reached) to the collection
    schedule_delay: str = configmod.duration("0ms")
    # delay from start to the first collection
    startup_delay: str = configmod.duration("100ms")


@dataclass(frozen=True)
class _Event:
    """One report to the scheduler: a mutation, and whether it made the database dirty."""

    ts: float  # time.monotonic()
    mutation: bool
    dirty: bool


class GCFailed(errdefs.ContainerdError):
    """What a waiter gets when the collection it waited for failed: Unknown,
    worded as containerd's scheduler words it."""

    sentinel = ""

    def __init__(self) -> None:
        super().__init__("gc failed")


def _go_float(x: float) -> str:
    """fmt.Sprint of a float64 for the usual values (0.02, 0.5, 0)."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


class Scheduler:
    """Runs `collector.garbage_collect()` when containerd's scheduler would."""

    def __init__(self, collector, cfg: Config):
        self.collector = collector
        self.pause_threshold = min(max(cfg.pause_threshold, 0.0), 0.5)
        self.deletion_threshold = cfg.deletion_threshold
        self.mutation_threshold = max(cfg.mutation_threshold, 0)
        self.schedule_delay = max(goduration.parse(cfg.schedule_delay), 0) / 1e9
        self.startup_delay = max(goduration.parse(cfg.startup_delay), 0) / 1e9
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._waiters: list[asyncio.Future] = []
        self._waiter_lock = asyncio.Lock()  # held while collecting, as containerd's waiterL
        self._task: asyncio.Task | None = None
        self.collections = 0
        collector.register_mutation_callback(self._mutation)

    def exports(self) -> dict[str, str]:
        return {
            "PauseThreshold": _go_float(self.pause_threshold),
            "DeletionThreshold": str(self.deletion_threshold),
            "MutationThreshold": str(self.mutation_threshold),
            "ScheduleDelay": goduration.format(round(self.schedule_delay * 1e9)),
        }

    def start(self, spawn: Callable[[str, Any], asyncio.Task] | None = None) -> None:
        """Start the loop; `spawn` makes it one of the daemon's background
        tasks (InitContext.spawn), cancelled when the daemon stops."""
        if spawn is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-scheduler")
        else:
            self._task = spawn("scheduler", self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for w in self._waiters:
            if not w.done():
                w.set_exception(GCFailed())
        self._waiters = []

    # -- triggers -----------------------------------------------------------------

    def _mutation(self, dirty: bool) -> None:
        self._events.put_nowait(_Event(time.monotonic(), True, dirty))

    async def schedule_and_wait(self):
        """Trigger a collection and return its stats once it has run."""
        return await self._wait(trigger=True)

    async def wait(self):
        """Return the stats of the next collection, without triggering one."""
        return await self._wait(trigger=False)

    async def _wait(self, trigger: bool):
        fut = asyncio.get_running_loop().create_future()
        async with self._waiter_lock:  # not during a collection: wait for the next one
            self._waiters.append(fut)
        if trigger:
            self._events.put_nowait(_Event(time.monotonic(), False, False))
        return await fut

    # -- the loop -----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # when the scheduled collection fires
        last: float | None = None  # end of the last collection
        next_at: float | None = None  # the collection scheduled (may be past)
        interval = 1.0
        gc_time = 0.0
        collections = 0
        triggered = False
        deletions = 0
        mutations = 0
        if self.startup_delay > 0:
            deadline = next_at = loop.time() + self.startup_delay
        getter: asyncio.Task | None = None
        try:
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(self._events.get())
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait({getter}, timeout=timeout)
                if getter in done:
                    e = getter.result()
                    getter = None
                    if last is not None and last > e.ts:
                        continue  # the last collection saw it
                    if e.dirty:
                        deletions += 1
                    if e.mutation:
                        mutations += 1
                    else:
                        triggered = True
                    if (
                        triggered
                        or (self.deletion_threshold > 0 and deletions >= self.deletion_threshold)
                        or (
                            next_at is None
                            and (
                                (self.deletion_threshold == 0 and deletions > 0)
                                or (self.mutation_threshold > 0 and mutations >= self.mutation_threshold)
                            )
                        )
                    ):
                        now = loop.time()
                        if next_at is None or next_at > now + self.schedule_delay:
                            deadline = next_at = now + self.schedule_delay
                    continue

                # the timer fired
                deadline = None
                if (
                    not triggered
                    and last is not None
                    and deletions == 0
                    and (self.mutation_threshold == 0 or mutations < self.mutation_threshold)
                ):
                    deadline = next_at = loop.time() + interval
                    continue

                async with self._waiter_lock:
                    waiters, self._waiters = self._waiters, []
                    try:
                        stats = await self.collector.garbage_collect()
                    except Exception as exc:
                        log.error("garbage collection failed", error=str(exc))
                        retry = (next_at - last) if (next_at is not None and last is not None) else interval
                        last = time.monotonic()
                        deadline = next_at = loop.time() + max(retry, 0.0) + 1.0
                        for w in waiters:
                            if not w.done():
                                w.set_exception(GCFailed())
                        continue
                    gc_time += stats.elapsed
                    collections += 1
                    self.collections = collections
                    triggered = False
                    deletions = mutations = 0
                    if self.pause_threshold > 0.0:
                        avg = gc_time / collections
                        interval = avg / self.pause_threshold - avg
                    last = time.monotonic()
                    deadline = next_at = loop.time() + interval
                    for w in waiters:
                        if not w.done():
                            w.set_result(stats)
        finally:
            if getter is not None:
                getter.cancel()


async def init(ic: InitContext) -> Scheduler:
    from pycontainerd.plugins.metadata.content import backend_ref
    from pycontainerd.plugins.metadata.gc import Collector

    db = ic.get(PluginType.METADATA)
    # the stores under the metadata plugin's views, proxy ones included, and
    # the lock of its one namespaced content store
    store = db.content_store
    content = store.backend if store is not None else None
    snapshotters = {name: view.backend for name, view in db.snapshotters.items()}
    collector = Collector(db, content, snapshotters, ingest_ref=backend_ref,
                          content_lock=lambda: store.lock if store is not None else None)
    await collector.start()
    scheduler = Scheduler(collector, ic.config)
    ic.meta.exports.update(scheduler.exports())
    scheduler.start(ic.spawn)
    return scheduler


@hookimpl
def pycontainerd_plugins() -> Iterable[Registration]:
    return [
        Registration(type=PluginType.GC, id="scheduler", requires=(PluginType.METADATA,), config=Config, init=init),
    ]
