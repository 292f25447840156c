"""The daemon's background tasks: long-lived work plugins start (the GC
scheduler's loop today, shim monitors next), owned by the daemon rather than
by whoever happened to call create_task.

Plugins spawn through `InitContext.spawn`. On stop the daemon cancels them
in reverse order of spawning (as plugins close in reverse init order), and
waits for each to finish before the next, so a task never outlives what it
was started after. A task that dies with an error is logged, not lost.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine

import structlog

log = structlog.get_logger(__name__)


class TaskGroup:
    """Named tasks on the daemon's loop, cancelled newest first."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task] = []

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(_report)
        self._tasks.append(task)
        return task

    @property
    def names(self) -> list[str]:
        """The tasks still running, oldest first."""
        return [t.get_name() for t in self._tasks if not t.done()]

    async def cancel_all(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in reversed(tasks):
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # already logged by _report
                pass
            log.debug("background task stopped", task=task.get_name())


def _report(task: asyncio.Task) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task failed", task=task.get_name(), error=str(exc))
