"""RabbitMQ really stopped while 1,000+ changes are applied: every event arrives once it is back, in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
from amqp_consumers import AMQP_URL, many_resources, needs_rabbitmq, rabbitmq
from postgres_projects import Project
from psycopg.conninfo import make_conninfo

from kliv.operator.relay import Relay, RelaySettings
from kliv.stacks.events import EXCHANGE

pytestmark = needs_rabbitmq
TABLES = 333  # 1 Project + 333 Tables + 666 TablePolicies = 1,000 resources


def _add_column(document: dict[str, Any]) -> None:
    document["spec"]["columns"].append({"name": "note", "type": "text"})


def _delivered(created: Project) -> int:
    with psycopg.connect(make_conninfo(created.url, dbname="kliv")) as control:
        row = control.execute(
            "SELECT count(*) FROM inventory.outbox WHERE namespace = %s AND delivered_at IS NOT NULL",
            [created.namespace],
        ).fetchone()
    return int(row[0]) if row else 0


class TestRelayOutage:
    """Nothing is lost while the broker is down."""

    def test_events_survive_a_stopped_broker(self, project: Callable[[str | Path], Project]) -> None:
        """1,000 creations and 333 updates applied with RabbitMQ stopped all arrive, once, in order."""
        created = project(many_resources(TABLES))
        queue_name = f"kliv-test-{created.namespace}"

        async def scenario() -> list[dict[str, Any]]:
            connection = await aio_pika.connect(AMQP_URL)
            channel = await connection.channel()
            exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(queue_name, durable=True)
            await queue.bind(exchange, f"{created.namespace}.#")
            await connection.close()

            stop = asyncio.Event()
            relay = Relay(created.url, AMQP_URL, RelaySettings(batch_size=200, backoff_initial=0.2, backoff_max=2))
            relaying = asyncio.create_task(relay.run(stop))
            await asyncio.to_thread(rabbitmq, "stop_app")
            try:
                await asyncio.to_thread(created.apply)
                documents = created.documents()
                for document in documents:
                    if document["kind"] == "Table":
                        _add_column(document)
                created.write(documents)
                await asyncio.to_thread(created.apply)
                await asyncio.sleep(1)
                assert _delivered(created) == 0  # really nothing of ours got through
            finally:
                await asyncio.to_thread(rabbitmq, "start_app")
            received: list[dict[str, Any]] = []
            connection = await aio_pika.connect(AMQP_URL)
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name, durable=True)
            deadline = asyncio.get_running_loop().time() + 120
            while len(received) < TABLES * 4 + 1 and asyncio.get_running_loop().time() < deadline:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.1)
                    continue
                received.append(json.loads(message.body))
                await message.ack()
            await queue.delete(if_unused=False, if_empty=False)
            await connection.close()
            stop.set()
            await relaying
            return received

        received = asyncio.run(scenario())
        assert len(received) == TABLES * 4 + 1
        assert len({e["id"] for e in received}) == len(received)
        order: dict[str, list[str]] = {}
        for event in received:
            order.setdefault(event["subject"], []).append(event["type"].rsplit(".", 1)[-1])
        tables = [kinds for subject, kinds in order.items() if subject.startswith("Table/")]
        assert len(tables) == TABLES
        assert all(kinds == ["created", "updated"] for kinds in tables)
        assert sum(1 for s in order if s.startswith("TablePolicy/")) == TABLES * 2
