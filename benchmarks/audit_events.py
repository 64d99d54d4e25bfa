"""Benchmark: 10,000 audit events through the outbox and the relay, versus raw confirmed publishing.

Same run, same payloads, same broker: (a) the relay draining 10,000 queued outbox rows
(read in order, publish with confirms and `mandatory`, mark delivered); (b) raw
aio-pika publishing of the same bodies with publisher confirms, in batches of the
same size. Also shown: the cost of queueing them (inserts into the outbox).

    KLIV_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    KLIV_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ python benchmarks/audit_events.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

import aio_pika
import psycopg
from psycopg.conninfo import make_conninfo

from kliv.operator.relay import Relay, RelaySettings
from kliv.stacks.events import CONTENT_TYPE, EXCHANGE, AuditEvent, build
from kliv.stacks.plans import Change, Step
from kliv.stacks.postgres import inventory


def _events(count: int, namespace: str) -> list[AuditEvent]:
    change = Change(f"Table/{namespace}/t", "update", "safe", ["add column note"], [Step("ALTER TABLE ...")])
    return [build(change, namespace, "bench", "applied", "bench") for _ in range(count)]


async def _raw(amqp_url: str, events: list[AuditEvent], batch: int) -> float:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        e.body,
                        message_id=e.id,
                        content_type=CONTENT_TYPE,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=e.routing_key,
                    mandatory=True,
                )
                for e in events[start : start + batch]
            )
        )
    elapsed = time.perf_counter() - started
    await connection.close()
    return elapsed


async def _sink(amqp_url: str, namespace: str) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractQueue]:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"kliv-bench-{namespace}", durable=False, auto_delete=True)
    await queue.bind(exchange, f"{namespace}.#")
    return connection, queue


async def main_async(database_url: str, amqp_url: str, count: int, batch: int) -> None:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        inventory.ensure(admin)
    with psycopg.connect(make_conninfo(database_url, dbname="kliv"), autocommit=True) as control:
        if not inventory.has_schema(control):
            inventory.ensure_schema(control)
    relay = Relay(database_url, amqp_url, RelaySettings(batch_size=batch))
    await relay.drain(timeout=120)  # whatever was pending before
    sink_connection, queue = await _sink(amqp_url, namespace)
    events = _events(count, namespace)

    with psycopg.connect(make_conninfo(database_url, dbname="kliv"), autocommit=True) as control:
        started = time.perf_counter()
        with control.transaction():
            inventory.enqueue(control, namespace, "bench", events)
        queued = time.perf_counter() - started

    started = time.perf_counter()
    delivered = await relay.drain(timeout=600)
    relayed = time.perf_counter() - started
    assert delivered >= count, delivered

    raw = await _raw(amqp_url, _events(count, namespace), batch)
    await queue.purge()
    await sink_connection.close()
    with psycopg.connect(make_conninfo(database_url, dbname="kliv"), autocommit=True) as control:
        control.execute("DELETE FROM inventory.outbox WHERE namespace = %s", [namespace])

    print("| events | batch | queue in outbox | relay (outbox -> broker) | raw aio-pika confirmed | relay / raw |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {count} | {batch} | {count / queued:,.0f}/s | {count / relayed:,.0f}/s | {count / raw:,.0f}/s "
        f"| {raw / relayed:.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    database_url, amqp_url = os.environ.get("KLIV_DATABASE_URL"), os.environ.get("KLIV_AMQP_URL")
    if not database_url or not amqp_url:
        sys.exit("set KLIV_DATABASE_URL and KLIV_AMQP_URL")
    asyncio.run(main_async(database_url, amqp_url, args.events, args.batch))


if __name__ == "__main__":
    main()
