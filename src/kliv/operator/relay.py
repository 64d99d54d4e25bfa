"""The outbox relay: audit events from database `kliv` to RabbitMQ, at least once and in order.

Run by ``kliv relay`` and inside every ``kliv operator`` replica, or drained once
by ``kliv apply`` after writing events. One relay at a time publishes: a session advisory lock makes
replicas stand by, which also keeps the order of events. A batch is read in outbox
order, published with publisher confirms (``mandatory``, persistent), and marked
delivered only after every message of it was confirmed; a crash in between
re-publishes that batch with the same message ids (consumers deduplicate by the
CloudEvents ``id``). Events whose project transaction aborted are dropped; events
whose transaction is still running hold the batch back. When RabbitMQ goes away
the relay reconnects with exponential backoff; nothing leaves the outbox unconfirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import timedelta
from typing import Any

import aio_pika
import psycopg
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from kliv.stacks.events import CONTENT_TYPE, EXCHANGE, mask
from kliv.stacks.postgres import sessions
from kliv.stacks.postgres.inventory import XACT_STATUS
from kliv.stacks.postgres.migrations import MIGRATIONS

LOCK_KEY = "kliv.outbox.relay"
PRUNE_EVERY = 600.0  # seconds between prunes of delivered events
# What "RabbitMQ or Postgres went away" looks like: retried with backoff, never fatal.
_UNAVAILABLE = (TimeoutError, aio_pika.exceptions.AMQPException, ConnectionError, OSError, psycopg.OperationalError)
log = structlog.get_logger("kliv.relay")

_PENDING = f"""
SELECT position, event_id::text, namespace, project, routing_key, body, {XACT_STATUS}
FROM inventory.outbox WHERE delivered_at IS NULL ORDER BY position LIMIT %s FOR UPDATE SKIP LOCKED
"""


ARCHIVE_QUEUE = "kliv.audit.archive"


@dataclasses.dataclass
class RelaySettings:
    batch_size: int = 500
    poll_seconds: float = 0.5
    retention: timedelta = timedelta(days=7)
    # A durable queue bound to every event, expiring after `retention`: with `mandatory`
    # publishing, one event nobody had bound a queue for would otherwise come back and hold
    # every later event in the outbox. Empty: no archive (then bind consumers first).
    archive_queue: str = ARCHIVE_QUEUE
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


class Relay:
    """Publishes the outbox of the control database at ``database_url`` to ``amqp_url``."""

    def __init__(
        self, database_url: str, amqp_url: str, settings: RelaySettings | None = None, logger: Any = None
    ) -> None:
        """``logger``: a structlog logger (default ``kliv.relay``); the CLI passes one that only
        writes warnings, to stderr, so that a drain never lands in the middle of a command's output."""
        self.log = logger if logger is not None else log
        self.control_url = sessions.conninfo(database_url, "kliv")
        self.amqp_url = amqp_url
        self.settings = settings or RelaySettings()
        self.published = 0
        self.leading = False  # this relay holds the lock and publishes (the others stand by)
        self._amqp: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    # -- connections ---------------------------------------------------------------------------

    async def _exchange_ready(self) -> AbstractExchange:
        if self._exchange is None or self._channel is None or self._channel.is_closed:
            await self._close_amqp()
            self._amqp = await aio_pika.connect(self.amqp_url, timeout=10)  # type: ignore[assignment]
            assert self._amqp is not None
            self._channel = await self._amqp.channel(publisher_confirms=True, on_return_raises=True)
            self._exchange = await self._channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            if self.settings.archive_queue:
                await self._declare_archive()
        return self._exchange

    async def _declare_archive(self) -> None:
        assert self._amqp is not None
        ttl = int(self.settings.retention.total_seconds() * 1000)
        channel = await self._amqp.channel()
        try:
            archive = await channel.declare_queue(
                self.settings.archive_queue, durable=True, arguments={"x-message-ttl": ttl}
            )
        except aio_pika.exceptions.ChannelPreconditionFailed:
            # Declared earlier with another retention: keep it as it is (a queue's arguments
            # cannot change); a RabbitMQ policy is the way to change its TTL.
            self.log.warning("relay.archive_ttl_kept", queue=self.settings.archive_queue)
            channel = await self._amqp.channel()
            archive = await channel.declare_queue(self.settings.archive_queue, passive=True)
        await archive.bind(EXCHANGE, "#")
        await channel.close()

    async def _close_amqp(self) -> None:
        connection, self._amqp, self._channel, self._exchange = self._amqp, None, None, None
        if connection is not None:
            with contextlib.suppress(Exception):  # a connection that is already gone is fine
                await connection.close()

    # -- one batch -----------------------------------------------------------------------------

    async def publish_batch(self, database: psycopg.AsyncConnection[Any]) -> int:
        """Publish one batch; returns how many events were delivered (0: nothing ready)."""
        exchange = await self._exchange_ready()
        async with database.transaction():
            cursor = await database.execute(_PENDING, [self.settings.batch_size])
            rows = await cursor.fetchall()
            ready: list[tuple[int, str, str, str]] = []
            aborted: list[int] = []
            held: set[tuple[str, str]] = set()
            for position, event_id, namespace, project, routing_key, body, status in rows:
                if status == "aborted":
                    aborted.append(position)
                    continue
                if status == "in progress" or (namespace, project) in held:
                    # A project's transaction still running holds back that project's later
                    # events (their order), never other projects'.
                    held.add((namespace, project))
                    continue
                if status == "foreign":
                    self.log.warning("relay.unverifiable", position=position, hint="transaction id of another server")
                ready.append((position, event_id, routing_key, body))
            if aborted:
                await database.execute("DELETE FROM inventory.outbox WHERE position = ANY(%s)", [aborted])
            if not ready:
                return 0
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            body.encode(),
                            message_id=event_id,
                            content_type=CONTENT_TYPE,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=routing_key,
                        mandatory=True,
                    )
                    for _, event_id, routing_key, body in ready
                )
            )
            await database.execute(
                "UPDATE inventory.outbox SET delivered_at = now() WHERE position = ANY(%s)", [[r[0] for r in ready]]
            )
        self.published += len(ready)
        self.log.info("relay.batch", delivered=len(ready), dropped_aborted=len(aborted))
        return len(ready)

    async def prune(self, database: psycopg.AsyncConnection[Any]) -> int:
        cursor = await database.execute(
            "DELETE FROM inventory.outbox WHERE delivered_at < now() - %s", [self.settings.retention]
        )
        return cursor.rowcount

    # -- loops ---------------------------------------------------------------------------------

    async def drain(self, timeout: float = 30.0) -> int:
        """Publish until nothing is pending (or ``timeout``); returns events delivered."""
        async with await psycopg.AsyncConnection.connect(self.control_url, autocommit=True) as database:
            await self._ensure_outbox(database)
            if not await self._lock(database):
                return 0  # another relay is running: it will deliver
            delivered = 0
            try:
                async with asyncio.timeout(timeout):
                    while count := await self.publish_batch(database):
                        delivered += count
                    await self.prune(database)
            finally:
                await self._close_amqp()
            return delivered

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set: stand by without the lock, back off when anything fails.

        Nothing but ``stop`` ends it: a relay that dies stops every audit trail, so even
        an unforeseen error is logged and retried after the backoff.
        """
        backoff = self.settings.backoff_initial
        try:
            while not stop.is_set():
                try:
                    async with await psycopg.AsyncConnection.connect(self.control_url, autocommit=True) as database:
                        await self._ensure_outbox(database)
                        while not await self._lock(database):
                            if await _wait(stop, self.settings.poll_seconds * 4):
                                return
                        await self._exchange_ready()
                        self.log.info("relay.leader")
                        self.leading = True
                        backoff = self.settings.backoff_initial
                        try:
                            await self._serve(database, stop)
                        finally:
                            self.leading = False
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._close_amqp()
                    if isinstance(exc, aio_pika.exceptions.DeliveryError):
                        # `mandatory`: an event no queue is bound for came back; it stays queued.
                        self.log.warning("relay.unroutable", hint=f"bind a queue to exchange {EXCHANGE}")
                    level = self.log.warning if isinstance(exc, _UNAVAILABLE) else self.log.error
                    level("relay.retry", error=mask(f"{type(exc).__name__}: {exc}"), retry_in=round(backoff, 2))
                    if await _wait(stop, backoff):
                        return
                    backoff = min(backoff * 2, self.settings.backoff_max)
        finally:
            await self._close_amqp()

    @staticmethod
    async def _ensure_outbox(database: psycopg.AsyncConnection[Any]) -> None:
        """A control database older than the outbox gets it here (the first migration, which the
        engine then finds applied: it adds the rest)."""
        cursor = await database.execute("SELECT to_regclass('inventory.outbox') IS NOT NULL")
        row = await cursor.fetchone()
        if not (row and row[0]):
            async with database.transaction():
                await database.execute("SELECT pg_advisory_xact_lock(hashtext('kliv.inventory.schema'))")
                await database.execute(MIGRATIONS[0].sql)

    async def _serve(self, database: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        await database.execute("LISTEN kliv_outbox")
        loop = asyncio.get_running_loop()
        pruned = 0.0
        while not stop.is_set():
            if await self.publish_batch(database):
                continue
            if loop.time() - pruned > PRUNE_EVERY:
                await self.prune(database)
                pruned = loop.time()
            await self._await_notification(database, stop)

    async def _await_notification(self, database: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        try:
            async with asyncio.timeout(self.settings.poll_seconds):
                async for _ in database.notifies():
                    return
        except TimeoutError:
            return

    @staticmethod
    async def _lock(database: psycopg.AsyncConnection[Any]) -> bool:
        cursor = await database.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [LOCK_KEY])
        row = await cursor.fetchone()
        return bool(row and row[0])


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
