"""Keeping each object's status in the control database, off the reconcile's critical path.

Called by the reconcile (:mod:`kliv.operator.reconciling`) with the statuses it has just
decided, which the handlers then write to Kubernetes without waiting for this: the write
to the control database (for the admin UI and agents) runs in the background, one at a
time per project, the newest only (a write overtaken by a newer reconcile of the same
project is skipped), and not at all when the statuses are what was written last (the
drift checks every few minutes change nothing). A write that fails is logged and left to
the next reconcile; statuses are reports, rewritten on every reconcile after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kliv.stacks.engines import Engine
from kliv.stacks.statuses import ObjectState

logger = logging.getLogger(__name__)
ProjectKey = tuple[str, str]


class StatusRecorder:
    """Background writer of the statuses of each project, newest first, unchanged never."""

    def __init__(self, engine: Engine[Any, Any]) -> None:
        self.engine = engine
        self._versions: dict[ProjectKey, int] = {}
        self._locks: dict[ProjectKey, asyncio.Lock] = {}
        self._written: dict[ProjectKey, list[ObjectState]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.writes = 0  # done, for the metrics and the tests

    def record(self, namespace: str, project: str, states: list[ObjectState]) -> None:
        """Schedule the write of ``states`` as the project's statuses (needs a running loop)."""
        key = (namespace, project)
        version = self._versions[key] = self._versions.get(key, 0) + 1
        task = asyncio.get_running_loop().create_task(self._write(key, version, states))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Wait for every scheduled write (tests; a clean shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _write(self, key: ProjectKey, version: int, states: list[ObjectState]) -> None:
        async with self._locks.setdefault(key, asyncio.Lock()):
            if self._versions.get(key) != version or self._written.get(key) == states:
                return  # a newer reconcile's statuses follow, or nothing changed
            try:
                await asyncio.to_thread(self.engine.record_statuses, key[0], key[1], states, "kliv-operator")
            except Exception as exc:  # the Kubernetes status is still written; the next reconcile records again
                logger.warning("could not record statuses of Project %s/%s: %s", key[0], key[1], type(exc).__name__)
                return
            self._written[key] = states
            self.writes += 1
