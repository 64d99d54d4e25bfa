"""End to end: audit events of operator reconciles arrive in RabbitMQ, relayed by the operator itself.

Two `kliv operator` processes, peered like the Deployment's replicas, each with KLIV_AMQP_URL: every
replica runs the relay, its advisory lock makes exactly one the publisher (`kliv_relay_publishing`
on /metrics), and when that one stops the other takes over without losing an event.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from clusters import DATABASE_URL, cluster, needs_postgres
from emulating import eventually
from processes import free_port, kliv_operator, wait_for_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from amqp_consumers import AMQP_URL, SCHEMA, Consumer, needs_rabbitmq

pytestmark = [
    needs_postgres,
    needs_rabbitmq,
    pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning"),
]

PEERINGS = "/apis/zalando.org/v1/clusterkopfpeerings"


async def gauge(port: int, name: str) -> float | None:
    """One gauge of the replica's /metrics (None while it does not answer)."""
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


async def publishing(port: int) -> float | None:
    return await gauge(port, "kliv_relay_publishing")


class TestRelayInTheOperator:
    def test_events_reach_rabbitmq_from_one_replica_then_the_other(self, tmp_path: Path) -> None:
        async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[float | None], str]:
            async with cluster(running=False) as kube:
                async with kube.http.post(PEERINGS, json={"metadata": {"name": "kliv-relay"}}) as response:
                    assert response.status == 200, await response.text()
                ports = [free_port(), free_port()]
                env = {"KLIV_AMQP_URL": AMQP_URL}
                args = [("--peering", "kliv-relay", "--priority", str(2 - i), "--metrics-port", str(p))
                        for i, p in enumerate(ports)]  # fmt: skip
                async with Consumer(f"{kube.namespace}.#") as consumer:
                    first = kliv_operator(
                        tmp_path, kube.url_base, kube.namespace, DATABASE_URL, *args[0], env=env, clusterwide=True
                    )
                    second = kliv_operator(
                        tmp_path, kube.url_base, kube.namespace, DATABASE_URL, *args[1], env=env, clusterwide=True
                    )
                    async with second as standby:
                        async with first as leader:
                            for port, process in zip(ports, (leader, standby), strict=True):
                                await wait_for_port(port, process)

                            async def one_publisher() -> list[float | None] | None:
                                gauges = [await publishing(p) for p in ports]
                                return gauges if sorted(gauges, key=str) == [0.0, 1.0] else None

                            gauges = await eventually(one_publisher, timeout=30)
                            documents = kube.example("blog")
                            await asyncio.gather(*(kube.create(d) for d in documents))
                            for document in documents:
                                await kube.wait(document["kind"], document["metadata"]["name"], "Available")
                            created = await consumer.collect(len(documents), timeout=30)

                        # The first replica stopped (SIGTERM, as a rollout does): the survivor holds the
                        # peering and the relay's lock now, whichever of the two published before.
                        async def takes_over() -> bool:
                            return await publishing(ports[1]) == 1.0

                        await eventually(takes_over, timeout=30)
                        table = next(d for d in documents if d["kind"] == "Table")
                        columns = [*table["spec"]["columns"], {"name": "subtitle", "type": "text"}]
                        await kube.patch("Table", table["metadata"]["name"], {"spec": {"columns": columns}})
                        await kube.wait("Table", table["metadata"]["name"], "Available", generation=2, timeout=60)
                        later = (await consumer.collect(len(documents) + 1, timeout=30))[len(created) :]
                        assert (await gauge(ports[1], "kliv_relay_published_events") or 0) >= 1
                        return created, later, gauges, kube.namespace

        created, later, gauges, namespace = asyncio.run(scenario())
        assert sorted(gauges, key=str) == [0.0, 1.0]  # exactly one replica publishes
        assert len(created) == 15
        assert {e["type"].rsplit(".", 1)[1] for e in created} == {"created"}
        assert all(namespace in e["source"] for e in created)
        assert len({e["id"] for e in created}) == 15
        for event in [*created, *later]:
            jsonschema.validate(event, SCHEMA)
        [update] = later
        assert update["type"] == "dev.kliv.cloud.table.updated"
