"""Scheduled functions: the cron of a Function's ``schedule`` (UTC), run by one ``kliv serve``.

Started by :mod:`kliv.serving.app` in every replica; only the one holding the session
advisory lock ``kliv.schedules`` runs schedules (the others wait to take over). Each due
run is first claimed in ``functions.schedule_runs`` (one row per function and due time),
so a leader change never runs a minute twice. A run is a POST through the gateway with
the project's service-role key, recorded as an invocation like any request.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import psycopg
import structlog
from croniter import croniter

from kliv.serving.gateway import Gateway
from kliv.serving.routes import Route
from kliv.stacks.secrets import jwts

log = structlog.get_logger("kliv.serving")
LOCK = "kliv.schedules"
TICK_SECONDS = 1.0


def due(schedule: str, last: datetime.datetime, now: datetime.datetime) -> datetime.datetime | None:
    """The latest run time in ``(last, now]``, if any (missed runs collapse into one)."""
    found = None
    times = croniter(schedule, last)
    for _ in range(10_000):  # bounded: a schedule due every minute since a week ago is 10,080
        candidate = times.get_next(datetime.datetime)
        if candidate > now:
            break
        found = candidate
    return found


class Scheduler:
    """Runs due schedules while this replica is the leader."""

    def __init__(self, control_url: str, gateway: Gateway) -> None:
        self.control_url = control_url
        self.gateway = gateway
        self.leader = False
        self.started = datetime.datetime.now(datetime.UTC)
        self.last: dict[tuple[str, str, str], datetime.datetime] = {}
        self.running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.control_url, autocommit=True) as session:
                    await self._lead(session)
            except (psycopg.Error, OSError) as exc:
                self.leader = False
                log.warning("scheduler lost the control database", error=type(exc).__name__)
                await asyncio.sleep(TICK_SECONDS)

    async def _lead(self, session: psycopg.AsyncConnection[Any]) -> None:
        while not self.leader:
            row = await (await session.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [LOCK])).fetchone()
            self.leader = bool(row and row[0])
            if not self.leader:
                await asyncio.sleep(TICK_SECONDS * 5)
        while True:
            await self.tick(session, datetime.datetime.now(datetime.UTC))
            await asyncio.sleep(TICK_SECONDS)

    async def tick(self, session: psycopg.AsyncConnection[Any], now: datetime.datetime) -> int:
        """Run what is due; returns how many runs started."""
        started = 0
        for route in list(self.gateway.routes.routes.values()):
            schedule = route.schedule
            if schedule is None:
                continue
            version = route.version
            key = (version.namespace, version.project, version.name)
            # A schedule counts from when this leader started or the version was made, whichever is
            # later: deploying `@daily` at noon runs it at midnight, not at once for the midnight before.
            since = self.last.get(key) or max(self.started, version.created_at or self.started)
            try:
                when = due(schedule, since, now)
            except Exception as exc:  # one bad schedule (validated, but stored earlier) stops no other
                log.warning("a schedule cannot be computed", function=version.name, error=type(exc).__name__)
                continue
            finally:
                self.last[key] = now
            if when is None:
                continue
            claimed = await session.execute(
                "INSERT INTO functions.schedule_runs (namespace, project, name, due_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [*key, when],
            )
            if claimed.rowcount:
                started += 1
                task = asyncio.create_task(self._invoke(route, schedule, when))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
        return started

    async def _invoke(self, route: Route, schedule: str, when: datetime.datetime) -> None:
        version = route.version
        try:
            secret = await self.gateway.routes.jwt_secret(version.namespace, version.project)
        except LookupError as exc:
            log.warning("cannot run a schedule", function=version.name, error=str(exc))
            return
        key = jwts.key(secret, version.namespace, version.project, "service_role")
        claims = jwts.verify(secret, key, version.namespace, version.project)
        headers = {"authorization": f"Bearer {key}", "x-kliv-schedule": schedule,
                   "x-kliv-scheduled-at": when.isoformat()}  # fmt: skip
        await self.gateway.invoke(route, claims, b"{}", headers)
