"""Invocation records and log lines, written to the control database in batches.

Called by the gateway (one invocation per request), by running instances (every line
their process prints, every runtime event) and by the scheduler. Writes are queued and
flushed every :data:`FLUSH_SECONDS` by one task, so a request never waits for the
database; the queue is bounded (a function printing without end cannot exhaust
``kliv serve``'s memory): what does not fit is counted and reported as one log line.
Rows older than the retention (7 days) are deleted hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import uuid
from typing import Any

import psycopg
import structlog

from kliv.stacks.functions import artifacts

FLUSH_SECONDS = 0.2
QUEUE_LIMIT = 20_000
EXPIRE_SECONDS = 3600.0

log = structlog.get_logger("kliv.serving")


@dataclasses.dataclass(frozen=True)
class Invocation:
    request_id: uuid.UUID
    namespace: str
    project: str
    function: str
    version: int
    method: str
    path: str
    status: int
    duration_ms: float
    cold: bool
    error: str | None
    at: datetime.datetime  # when the request arrived (not when the batch was written)


@dataclasses.dataclass(frozen=True)
class Line:
    namespace: str
    project: str
    function: str
    version: int
    stream: str
    message: str
    ts: datetime.datetime


class Recorder:
    """Queues rows and writes them in batches."""

    def __init__(self, control_url: str) -> None:
        self.control_url = control_url
        self.invocations: list[Invocation] = []
        self.lines: list[Line] = []
        self.dropped: dict[tuple[str, str, str, int], int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped_invocations = 0

    def invocation(self, row: Invocation) -> None:
        if len(self.invocations) < QUEUE_LIMIT:
            self.invocations.append(row)
        else:
            self.dropped_invocations += 1
            log.warning("invocation records dropped: the control database is not keeping up",
                        dropped=self.dropped_invocations)  # fmt: skip

    def line(self, namespace: str, project: str, function: str, version: int, stream: str, message: str) -> None:
        if len(self.lines) >= QUEUE_LIMIT:
            key = (namespace, project, function, version)
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return
        now = datetime.datetime.now(datetime.UTC)
        self.lines.append(Line(namespace, project, function, version, stream, message, now))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(psycopg.Error, OSError):
            async with await psycopg.AsyncConnection.connect(self.control_url, autocommit=True) as database:
                await self.flush(database)

    async def _run(self) -> None:
        expired_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.control_url, autocommit=True) as database:
                    while True:
                        await self.flush(database)
                        if loop.time() - expired_at > EXPIRE_SECONDS:
                            await self._expire(database)
                            expired_at = loop.time()
                        await asyncio.sleep(FLUSH_SECONDS)
            except (psycopg.Error, OSError) as exc:
                log.warning("recording paused: the control database is unreachable", error=type(exc).__name__)
                await asyncio.sleep(1)

    async def flush(self, database: psycopg.AsyncConnection[Any]) -> int:
        """Write what is queued; returns how many rows."""
        for (namespace, project, function, version), count in self.dropped.items():
            self.lines.append(Line(namespace, project, function, version, "runtime",
                                   f"{count} log lines dropped: the function printed faster than they "
                                   "could be kept", datetime.datetime.now(datetime.UTC)))  # fmt: skip
        self.dropped = {}
        invocations, self.invocations = self.invocations, []
        lines, self.lines = self.lines, []
        if not invocations and not lines:
            return 0
        try:
            # COPY: a batch of thousands of rows is one statement (a flush that fails writes nothing
            # and is tried again whole, so a request id is never written twice).
            async with database.transaction(), database.cursor() as cursor:
                if invocations:
                    async with cursor.copy(
                        "COPY functions.invocations (request_id, namespace, project, function, version, method, "
                        "path, status, duration_ms, cold, error, at) FROM STDIN"
                    ) as copy:
                        for invocation in invocations:
                            await copy.write_row(dataclasses.astuple(invocation))
                if lines:
                    async with cursor.copy(
                        "COPY functions.logs (namespace, project, function, version, stream, message, ts) FROM STDIN"
                    ) as copy:
                        for line in lines:
                            await copy.write_row(dataclasses.astuple(line))
        except BaseException:
            # Not written: kept for the next flush (the queue limit still holds).
            self.invocations[:0] = invocations[: QUEUE_LIMIT - len(self.invocations)]
            self.lines[:0] = lines[: QUEUE_LIMIT - len(self.lines)]
            raise
        return len(invocations) + len(lines)

    async def _expire(self, database: psycopg.AsyncConnection[Any]) -> None:
        retention = artifacts.RETENTION
        await database.execute(f"DELETE FROM functions.invocations WHERE at < now() - interval '{retention}'")
        await database.execute(f"DELETE FROM functions.logs WHERE ts < now() - interval '{retention}'")
        await database.execute(f"DELETE FROM functions.schedule_runs WHERE due_at < now() - interval '{retention}'")
