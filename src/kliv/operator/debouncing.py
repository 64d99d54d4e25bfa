"""Per-project debounced reconciles: a burst of changes becomes one plan, not one per object.

The operator's handlers call :meth:`Debouncer.trigger` with a project key for
every event of any object of that project; one worker per key waits until the
project has been quiet for ``quiet`` seconds (at most ``longest`` after the first
trigger) and then runs the reconcile once. A trigger that arrives while a
reconcile runs schedules exactly one more run after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Debouncer(Generic[K]):
    """Coalesces triggers per key into runs of ``reconcile(key)``."""

    def __init__(self, reconcile: Callable[[K], Awaitable[None]], quiet: float = 0.5, longest: float = 5.0) -> None:
        self.reconcile = reconcile
        self.quiet = quiet
        self.longest = longest
        self._pending: dict[K, asyncio.Event] = {}
        self._workers: dict[K, asyncio.Task[None]] = {}
        self.runs = 0

    def trigger(self, key: K) -> None:
        """Ask for a reconcile of ``key`` soon (cheap: call it for every event)."""
        event = self._pending.setdefault(key, asyncio.Event())
        event.set()
        worker = self._workers.get(key)
        if worker is None or worker.done():
            self._workers[key] = asyncio.create_task(self._work(key), name=f"reconcile {key}")

    @property
    def queue_depth(self) -> int:
        """Keys waiting for a run (for metrics)."""
        return sum(1 for e in self._pending.values() if e.is_set())

    async def _work(self, key: K) -> None:
        event = self._pending[key]
        while event.is_set():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.longest
            event.clear()
            # Wait for quiet: every new trigger restarts the quiet period, up to the deadline.
            while loop.time() < deadline:
                try:
                    await asyncio.wait_for(event.wait(), min(self.quiet, deadline - loop.time()))
                except TimeoutError:
                    break
                event.clear()
            self.runs += 1
            await self.reconcile(key)

    async def close(self) -> None:
        """Cancel every worker (operator shutdown)."""
        for worker in self._workers.values():
            worker.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
