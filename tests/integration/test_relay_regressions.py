"""Regression tests for what an independent review of audit events and the relay found.

Each test states a promised behaviour that once failed and proves it holds now.
Relay-level tests use a scratch control database (same schema as `kliv`, via
``Relay.control_url``) so their rows can never block or pollute the shared outbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
import pytest
from amqp_consumers import AMQP_URL, needs_rabbitmq
from postgres_projects import ROOT, Project
from psycopg.conninfo import make_conninfo

from kliv.operator.relay import Relay, RelaySettings
from kliv.stacks import ApplyFailedError
from kliv.stacks.postgres import inventory, outbox

DATABASE_URL = os.environ.get("KLIV_TEST_DATABASE_URL", "")
pytestmark = [
    needs_rabbitmq,
    pytest.mark.skipif(not DATABASE_URL, reason="KLIV_TEST_DATABASE_URL is not set"),
]


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def control() -> Iterator[str]:
    """A scratch control database with the inventory schema; its conninfo."""
    name = f"kliv_rv_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(DATABASE_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(DATABASE_URL, dbname=name)
    with psycopg.connect(url, autocommit=True) as connection:
        inventory.ensure_schema(connection)
    yield url
    with psycopg.connect(DATABASE_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _insert(url: str, namespace: str, count: int = 1, xact: str | None = None) -> list[str]:
    ids = []
    with psycopg.connect(url, autocommit=True) as connection:
        for i in range(count):
            event_id = str(uuid.uuid4())
            body = {
                "specversion": "1.0",
                "id": event_id,
                "source": f"/kliv/namespaces/{namespace}/projects/p",
                "type": "dev.kliv.cloud.table.created",
                "subject": f"Table/{namespace}/t{i}",
                "data": {},
            }
            connection.execute(
                "INSERT INTO inventory.outbox (event_id, namespace, project, routing_key, body, xact) "
                "VALUES (%s, %s, 'p', %s, %s, %s)",
                [event_id, namespace, f"{namespace}.p.table.created", json.dumps(body), xact],
            )
            ids.append(event_id)
    return ids


def _delivered(url: str, namespace: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM inventory.outbox WHERE namespace = %s AND delivered_at IS NOT NULL", [namespace]
        ).fetchone()
    return int(row[0]) if row else 0


def _relay(url: str, amqp_url: str = AMQP_URL, **settings: Any) -> Relay:
    relay = Relay(DATABASE_URL, amqp_url, RelaySettings(backoff_initial=0.1, backoff_max=0.3, **settings))
    relay.control_url = url  # the scratch control database instead of `kliv`
    return relay


async def _run_for(relay: Relay, seconds: float) -> BaseException | None:
    """Run the relay loop for ``seconds``; the exception it died of, if it died."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    try:
        await asyncio.wait_for(task, 5)
    except Exception as exc:
        await relay._close_amqp()
        return exc
    return None


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60).stdout


def _outbox_rows(url: str, namespace: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(make_conninfo(url, dbname="kliv")) as connection:
        return connection.execute(
            "SELECT body, pg_xact_status(xact) FROM inventory.outbox WHERE namespace = %s ORDER BY position",
            [namespace],
        ).fetchall()


def _forget_outbox(url: str, namespace: str) -> None:
    with psycopg.connect(make_conninfo(url, dbname="kliv"), autocommit=True) as connection:
        connection.execute("DELETE FROM inventory.outbox WHERE namespace = %s", [namespace])


def _crash_at_commit(monkeypatch: pytest.MonkeyPatch, created: Project) -> None:
    """Fault injection: the project connection dies right after its `applied` events were queued.

    Models a crash, a failover or `pg_terminate_backend` between enqueue and COMMIT.
    """
    original = inventory.enqueue

    def enqueue(control: Any, namespace: str, project: str, events: Any, xact: object | None = None) -> None:
        original(control, namespace, project, events, xact)
        if xact is not None:
            with psycopg.connect(created.url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [created.database],
                )

    monkeypatch.setattr(inventory, "enqueue", enqueue)


# -- relay: crashes and wedges -----------------------------------------------------------------


class TestRelayLiveness:
    """Nothing but a stop ends the relay, and nothing blocks the outbox for good."""

    def test_foreign_xact_does_not_kill_the_relay(self, control: str) -> None:
        """An outbox row whose xact comes from another cluster (e.g. `kliv` restored elsewhere)."""
        namespace = f"rv-{uuid.uuid4().hex[:8]}"
        with psycopg.connect(control) as connection:
            row = connection.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        assert row is not None
        _insert(control, namespace, 1, xact=str(row[0] + 10_000_000))
        _insert(control, namespace, 1)
        died = asyncio.run(_run_for(_relay(control), 2))
        assert died is None, f"the relay died: {died!r}"

    def test_unknown_xact_status_does_not_block_the_outbox(self, control: str) -> None:
        """A row whose transaction is too old for Postgres to remember, then three ordinary rows."""
        with psycopg.connect(control) as connection:
            row = connection.execute("SELECT pg_xact_status('3'::xid8)").fetchone()
        if row is None or row[0] is not None:
            pytest.skip("xid 3 is still within this server's clog horizon")
        stuck, other = f"rv-{uuid.uuid4().hex[:8]}", f"rv-{uuid.uuid4().hex[:8]}"
        _insert(control, stuck, 1, xact="3")
        _insert(control, other, 3)
        asyncio.run(_relay(control).drain(timeout=3))
        assert _delivered(control, other) == 3

    def test_stalled_transaction_does_not_block_other_projects(self, control: str) -> None:
        """A `kliv apply` frozen between enqueue and COMMIT (SIGSTOP, partition): other projects still flow."""
        stalled, other = f"rv-{uuid.uuid4().hex[:8]}", f"rv-{uuid.uuid4().hex[:8]}"
        with psycopg.connect(DATABASE_URL) as frozen:  # the project transaction, left open
            row = frozen.execute("SELECT pg_current_xact_id()::text").fetchone()
            assert row is not None
            _insert(control, stalled, 1, xact=row[0])
            _insert(control, other, 2)
            asyncio.run(_relay(control).drain(timeout=3))
            delivered = _delivered(control, other)
            frozen.rollback()
        assert delivered == 2

    def test_missing_outbox_table_does_not_kill_the_relay(self) -> None:
        name = f"kliv_rv_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(DATABASE_URL, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            died = asyncio.run(_run_for(_relay(make_conninfo(DATABASE_URL, dbname=name)), 1.5))
        finally:
            with psycopg.connect(DATABASE_URL, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        assert died is None, f"the relay died: {died!r}"

    def test_retention_change_keeps_relaying(self, control: str) -> None:
        namespace = f"rv-{uuid.uuid4().hex[:8]}"
        archive = f"kliv-rv-archive-{uuid.uuid4().hex[:8]}"
        try:
            _insert(control, namespace, 1)
            assert asyncio.run(_relay(control, archive_queue=archive, retention=timedelta(days=7)).drain(5)) == 1
            _insert(control, namespace, 1)  # the operator then sets KLIV_OUTBOX_RETENTION_DAYS=14 and restarts
            asyncio.run(_run_for(_relay(control, archive_queue=archive, retention=timedelta(days=14)), 3))
            assert _delivered(control, namespace) == 2
        finally:

            async def cleanup() -> None:
                connection = await aio_pika.connect(AMQP_URL)
                channel = await connection.channel()
                await channel.queue_delete(archive)
                await connection.close()

            asyncio.run(cleanup())

    def test_connection_closed_by_broker_does_not_kill_the_relay(self, control: str) -> None:
        """RabbitMQ closes the relay's connection (restart, CONNECTION_FORCED) while a batch is being read.

        A lock on the outbox only widens the window between `_exchange_ready()` and `publish()` to make
        the race deterministic; the same crash was seen with plain `close_all_connections` mid-batch.
        """
        namespace = f"rv-{uuid.uuid4().hex[:8]}"
        name = f"rv-relay-{uuid.uuid4().hex[:8]}"
        _insert(control, namespace, 3)

        async def scenario() -> BaseException | None:
            relay = _relay(control, amqp_url=f"{AMQP_URL}?name={name}")
            locker = await psycopg.AsyncConnection.connect(control)
            await locker.execute("LOCK TABLE inventory.outbox IN ACCESS EXCLUSIVE MODE")
            stop = asyncio.Event()
            task = asyncio.create_task(relay.run(stop))
            pid = ""
            for _ in range(50):  # the relay has connected and now waits for the outbox
                listing = await asyncio.to_thread(
                    _rabbitmqctl, "list_connections", "--no-table-headers", "pid", "client_properties"
                )
                pid = next((line.split("\t")[0] for line in listing.splitlines() if name in line), "")
                if pid:
                    break
                await asyncio.sleep(0.1)
            assert pid, "the relay never connected"
            await asyncio.to_thread(_rabbitmqctl, "close_connection", pid, "rv-test")
            await asyncio.sleep(0.5)
            await locker.rollback()
            await locker.close()
            await asyncio.sleep(2)
            stop.set()
            try:
                await asyncio.wait_for(task, 5)
            except Exception as exc:
                await relay._close_amqp()
                return exc
            return None

        died = asyncio.run(scenario())
        assert died is None, f"the relay died: {died!r}"
        assert _delivered(control, namespace) == 3


# -- engine: events of an apply ----------------------------------------------------------------


class TestApplyEvents:
    """Every change, refusal and failure leaves a truthful event; none quotes data."""

    def test_lost_connection_at_commit_leaves_a_failed_event(
        self, project: Callable[[str | Path], Project], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        created = project(ROOT / "examples" / "blog")
        _crash_at_commit(monkeypatch, created)
        try:
            with pytest.raises(ApplyFailedError):
                created.apply()
            committed = [
                json.loads(body)["type"]
                for body, status in _outbox_rows(created.url, created.namespace)
                if status in (None, "committed")
            ]
        finally:
            _forget_outbox(created.url, created.namespace)
        # The relay drops the 15 `created` rows (aborted); what reaches the broker is `committed`.
        assert any(t.endswith(".failed") for t in committed), committed

    def test_events_command_hides_rolled_back_changes(
        self, project: Callable[[str | Path], Project], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        created = project(ROOT / "examples" / "blog")
        _crash_at_commit(monkeypatch, created)
        try:
            with pytest.raises(ApplyFailedError):
                created.apply()
            with created.connect() as connection:  # really nothing was created
                row = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
                assert row is not None
                assert row[0] == 0
            shown = [r.event["type"] for r in outbox.read(created.url, f"{created.namespace}/blog")]
        finally:
            _forget_outbox(created.url, created.namespace)
        assert not [t for t in shown if t.endswith(".created")], shown

    def test_deletion_policy_change_leaves_an_event(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "blog")
        created.apply()
        before = len(_outbox_rows(created.url, created.namespace))
        created.edit("Table", "posts", lambda d: d["spec"].update(deletionPolicy="Delete"))
        created.apply()
        try:
            with psycopg.connect(make_conninfo(created.url, dbname="kliv")) as connection:
                row = connection.execute(
                    "SELECT retain FROM inventory.resources WHERE namespace = %s AND kind = 'Table' AND name = 'posts'",
                    [created.namespace],
                ).fetchone()
            assert row is not None
            assert row[0] is False
            after = _outbox_rows(created.url, created.namespace)
        finally:
            _forget_outbox(created.url, created.namespace)
        assert len(after) > before, "no event for Table posts' deletionPolicy change"

    def test_failed_event_does_not_quote_row_data(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "blog")
        created.apply()
        secret = f"sk_live_{uuid.uuid4().hex}"
        with created.connect() as connection:
            connection.execute(
                "INSERT INTO profiles (id, username, display_name) VALUES (gen_random_uuid(), 'bob', %s)", [secret]
            )

        def to_integer(document: dict[str, Any]) -> None:
            for column in document["spec"]["columns"]:
                if column["name"] == "display_name":
                    column["type"] = "integer"

        created.edit("Table", "profiles", to_integer)
        try:
            with pytest.raises(ApplyFailedError):
                created.apply(allow_data_loss=True)
            bodies = [body for body, _ in _outbox_rows(created.url, created.namespace)]
        finally:
            _forget_outbox(created.url, created.namespace)
        assert any('"dev.kliv.cloud.table.failed"' in b for b in bodies)
        assert not [b for b in bodies if secret in b]
