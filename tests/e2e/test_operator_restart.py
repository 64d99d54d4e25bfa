"""End to end: the operator stopped mid-reconcile and started again converges, with one event per change."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from clusters import DATABASE_URL, cluster, needs_postgres
from emulating import eventually
from psycopg.conninfo import make_conninfo

from kliv.stacks.postgres.inventory import XACT_STATUS

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]


class TestRestart:
    """A new operator process picks up where the old one stopped."""

    def test_restart_mid_reconcile(self) -> None:
        """Stop the first operator as its first reconcile starts; a second one makes everything Ready."""

        async def scenario() -> tuple[str, list[tuple[str, int]]]:
            async with cluster(running=False) as kube:
                documents = kube.example("blog")
                async with kube.operator() as first:
                    await asyncio.gather(*(kube.create(d) for d in documents))

                    async def reconciling() -> bool:
                        return first.debouncer is not None and first.debouncer.runs >= 1

                    await eventually(reconciling, timeout=30)
                # Stopped: handlers cancelled mid-flight. A second operator resumes.
                async with kube.operator():
                    for document in documents:
                        await kube.wait(document["kind"], document["metadata"]["name"], "Available")
                with psycopg.connect(make_conninfo(DATABASE_URL, dbname="kliv")) as control:
                    rows = control.execute(
                        f"SELECT body::jsonb ->> 'subject', count(*) FROM inventory.outbox WHERE namespace = %s "
                        f"AND routing_key LIKE %s AND {XACT_STATUS} = 'committed' GROUP BY 1",
                        [kube.namespace, "%.created"],
                    ).fetchall()
                return kube.namespace, [(str(r[0]), int(r[1])) for r in rows]

        namespace, counts = asyncio.run(scenario())
        assert len(counts) == 15, counts  # every resource's creation reported...
        assert all(count == 1 for _, count in counts), counts  # ...exactly once
        assert all(subject.split("/")[1] == namespace for subject, _ in counts)
