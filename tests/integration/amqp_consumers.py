"""Helpers for audit-event tests: a consumer bound to `kliv.audit`, the CloudEvents schema, the broker switch.

Used by the tests of the outbox relay; the broker is the machine's RabbitMQ at
KLIV_TEST_AMQP_URL (tests skip without it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from kliv.stacks.events import EXCHANGE

AMQP_URL = os.environ.get("KLIV_TEST_AMQP_URL", "")
# A copy of shared/schemas/cloudevents.json (the design's schema), so tests need nothing outside the repo.
SCHEMA = json.loads((Path(__file__).resolve().parent / "schemas" / "cloudevents.json").read_text())

needs_rabbitmq = pytest.mark.skipif(
    not AMQP_URL, reason="KLIV_TEST_AMQP_URL is not set and no RabbitMQ answers on 127.0.0.1:5672"
)


class Consumer:
    """An exclusive queue bound to `kliv.audit` for one routing-key pattern, drained on demand."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def __aenter__(self) -> Consumer:
        self.connection = await aio_pika.connect(AMQP_URL)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        self.queue = await channel.declare_queue(exclusive=True)
        await self.queue.bind(exchange, self.pattern)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def collect(self, expected: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Messages until ``expected`` arrived (or the timeout), as decoded CloudEvents, in arrival order."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < expected and time.monotonic() < deadline:
            message = await self.queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            self.messages.append(message)
        return [json.loads(m.body) for m in self.messages]


def rabbitmq(action: str) -> None:
    """`rabbitmqctl stop_app` / `start_app` on the machine's broker (really stopping it)."""
    subprocess.run(["rabbitmqctl", action], check=True, capture_output=True, timeout=120)
    if action == "start_app":
        subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=120)


def many_resources(tables: int) -> str:
    """Specs of a project with ``tables`` tables and two policies each (1 + 3 x tables resources)."""
    documents = ["apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: many}\nspec: {}\n"]
    for i in range(tables):
        documents.append(
            f"apiVersion: cloud.kliv.dev/v1alpha1\nkind: Table\nmetadata: {{name: t{i}}}\nspec:\n"
            "  projectRef: {name: many}\n  columns: [{name: id, type: uuid, primaryKey: true}]\n"
        )
        for command in ("select", "delete"):
            documents.append(
                f"apiVersion: cloud.kliv.dev/v1alpha1\nkind: TablePolicy\nmetadata: {{name: t{i}-{command}}}\n"
                f"spec: {{projectRef: {{name: many}}, table: t{i}, command: {command}, using: 'id = auth.uid()'}}\n"
            )
    return "---\n".join(documents)
