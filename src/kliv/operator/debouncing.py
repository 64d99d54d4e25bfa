"""Per-project debounced reconciles: a burst of changes becomes one plan, not one per object.

The operator's handlers call :meth:`Debouncer.request` with a project key for
every event of any object of that project and await the result of the next
reconcile of that project; one worker per key waits until the project has been
quiet for ``quiet`` seconds (at most ``longest`` after the first request) and
then runs the reconcile once for all of them. A request that arrives while a
reconcile runs is served by exactly one more run after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class Debouncer(Generic[K, R]):
    """Coalesces requests per key into runs of ``reconcile(key)``; every requester gets the run's result."""

    def __init__(self, reconcile: Callable[[K], Awaitable[R]], quiet: float = 0.5, longest: float = 5.0) -> None:
        self.reconcile = reconcile
        self.quiet = quiet
        self.longest = longest
        self._waiters: dict[K, list[asyncio.Future[R]]] = {}
        self._wakeups: dict[K, asyncio.Event] = {}
        self._workers: dict[K, asyncio.Task[None]] = {}
        self.runs = 0

    def trigger(self, key: K) -> asyncio.Future[R]:
        """Ask for a reconcile of ``key`` soon; the future resolves with that run's result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        self._wakeups.setdefault(key, asyncio.Event()).set()
        worker = self._workers.get(key)
        if worker is None or worker.done():
            self._workers[key] = asyncio.create_task(self._work(key), name=f"reconcile {key}")
        return future

    async def request(self, key: K) -> R:
        """Trigger and wait for the result (what a handler does)."""
        return await asyncio.shield(self.trigger(key))

    @property
    def queue_depth(self) -> int:
        """Keys waiting for a run (for metrics; read from the scrape thread, hence the atomic copy)."""
        return sum(1 for waiters in list(self._waiters.values()) if waiters)

    async def _work(self, key: K) -> None:
        wakeup = self._wakeups[key]
        loop = asyncio.get_running_loop()
        while self._waiters.get(key):
            deadline = loop.time() + self.longest
            wakeup.clear()
            # Wait for quiet: every new request restarts the quiet period, up to the deadline.
            while loop.time() < deadline:
                try:
                    await asyncio.wait_for(wakeup.wait(), min(self.quiet, deadline - loop.time()))
                except TimeoutError:
                    break
                wakeup.clear()
            waiters, self._waiters[key] = self._waiters[key], []
            self.runs += 1
            try:
                result = await self.reconcile(key)
            except Exception as exc:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
            else:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(result)

    async def close(self) -> None:
        """Cancel every worker (operator shutdown)."""
        for worker in self._workers.values():
            worker.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
