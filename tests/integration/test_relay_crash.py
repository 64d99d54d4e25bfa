"""The relay killed with SIGKILL mid-batch and restarted: nothing lost, duplicates only of that batch."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
from amqp_consumers import AMQP_URL, many_resources, needs_rabbitmq
from postgres_projects import Project
from psycopg.conninfo import make_conninfo

from kliv.stacks.events import EXCHANGE

pytestmark = needs_rabbitmq
BATCH = 400


def _relay(created: Project) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KLIV_DATABASE_URL": created.url, "KLIV_AMQP_URL": AMQP_URL,
           "KLIV_RELAY_BATCH_SIZE": str(BATCH), "KLIV_CONFIG": "/nonexistent"}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "kliv", "relay"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def _control(created: Project) -> psycopg.Connection[Any]:
    return psycopg.connect(make_conninfo(created.url, dbname="kliv"), autocommit=True)


class TestRelayCrash:
    """At least once, never lost."""

    def test_sigkill_mid_batch(self, project: Callable[[str | Path], Project]) -> None:
        """Kill the relay as its first batch goes out; after a restart every event arrived, same ids."""
        created = project(many_resources(333))
        created.apply()
        with _control(created) as control:
            expected = {r[0] for r in control.execute(
                "SELECT event_id::text FROM inventory.outbox WHERE namespace = %s", [created.namespace])}  # fmt: skip
        assert len(expected) == 1000
        queue_name = f"kliv-test-{created.namespace}"

        async def scenario() -> tuple[list[aio_pika.abc.AbstractIncomingMessage], int]:
            connection = await aio_pika.connect(AMQP_URL)
            channel = await connection.channel()
            exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(queue_name, durable=True)
            await queue.bind(exchange, f"{created.namespace}.#")
            first = _relay(created)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                declared = await channel.declare_queue(queue_name, passive=True)
                if declared.declaration_result.message_count:
                    break
                await asyncio.sleep(0.005)
            first.send_signal(signal.SIGKILL)
            first.wait()
            with _control(created) as control:
                row = control.execute(
                    "SELECT count(*) FROM inventory.outbox WHERE namespace = %s AND delivered_at IS NULL",
                    [created.namespace],
                ).fetchone()
            pending_after_kill = int(row[0]) if row else 0
            second = _relay(created)
            messages: list[aio_pika.abc.AbstractIncomingMessage] = []
            seen: set[str] = set()
            deadline = time.monotonic() + 120
            while seen != expected and time.monotonic() < deadline:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                messages.append(message)
                seen.add(str(message.message_id))
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
            await asyncio.sleep(0.5)
            while (message := await queue.get(fail=False)) is not None:  # late duplicates, if any
                await message.ack()
                messages.append(message)
            await queue.delete(if_unused=False, if_empty=False)
            await connection.close()
            return messages, pending_after_kill

        messages, pending_after_kill = asyncio.run(scenario())
        assert pending_after_kill > 0, "the relay finished before it was killed: the test proved nothing"
        ids = [str(m.message_id) for m in messages]
        assert set(ids) == expected
        duplicates = collections.Counter(ids) - collections.Counter(set(ids))
        assert sum(duplicates.values()) <= BATCH
        bodies: dict[str, Any] = {}
        for message in messages:
            event = json.loads(message.body)
            assert event["id"] == message.message_id
            assert bodies.setdefault(event["id"], message.body) == message.body
