"""End to end: deleting a Project goes through a deletion plan: a `deleted` event per resource,
the database dropped (deletionPolicy Delete) or left untouched (Retain), the inventory emptied."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from clusters import DATABASE_URL, cluster, needs_postgres

from kliv.stacks.postgres import outbox

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]


def _database_exists(database: str) -> bool:
    with psycopg.connect(DATABASE_URL) as connection:
        return connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone() is not None


def _inventory(namespace: str) -> int:
    with psycopg.connect(DATABASE_URL, dbname="kliv") as connection:
        row = connection.execute("SELECT count(*) FROM inventory.resources WHERE namespace = %s", [namespace])
        return int(row.fetchone()[0])  # type: ignore[index]


class TestProjectDeletion:
    @pytest.mark.parametrize("policy", ["Delete", "Retain", "Delete, observe-only"])
    def test_deleted_events_per_resource(self, policy: str) -> None:
        async def scenario() -> tuple[list[dict[str, Any]], str, str, bool, int]:
            async with cluster() as kube:
                documents = kube.example("blog")
                project = next(d for d in documents if d["kind"] == "Project")
                project["spec"]["deletionPolicy"] = policy.split(",")[0]
                project.setdefault("metadata", {}).setdefault("annotations", {})["cloud.kliv.dev/requested-by"] = (
                    "alice@example.com"
                )
                await asyncio.gather(*(kube.create(d) for d in documents))
                for document in documents:
                    await kube.wait(document["kind"], document["metadata"]["name"], "Available")
                last = outbox.read(DATABASE_URL, f"{kube.namespace}/blog", limit=1)[-1].position
                if "observe-only" in policy:  # managed until now; from here on only observed
                    observe = {"cloud.kliv.dev/management-policy": "observe"}
                    await kube.patch("Project", "blog", {"metadata": {"annotations": observe}})
                await kube.delete("Project", "blog")
                await kube.gone("Project", "blog")
                events = [row.event for row in outbox.read(DATABASE_URL, f"{kube.namespace}/blog", after=last)]
                exists = _database_exists(kube.database)
                return events, kube.namespace, kube.database, exists, _inventory(kube.namespace)

        events, namespace, database, exists, left = asyncio.run(scenario())
        subjects = [e["subject"] for e in events]
        assert len(subjects) == len(set(subjects)) == 15  # every resource once, the Project last
        assert subjects[-1] == f"Project/{namespace}/blog"
        assert {e["type"].rsplit(".", 1)[1] for e in events} == {"deleted"}
        assert {e["data"]["actor"] for e in events} == {"alice@example.com"}
        assert left == 0
        project_summary = events[-1]["data"]["plan"]["summary"][0]
        tables = [e for e in events if e["data"]["kind"] == "Table"]
        if policy == "Delete":
            assert not exists
            assert project_summary == f"drop database {database} and its roles (deletionPolicy Delete)"
            assert {e["data"]["plan"]["risk"] for e in tables} == {"data-loss"}
        else:
            assert exists
            assert project_summary == f"forget: database {database} stays, unclaimed and untouched"
            assert {e["data"]["plan"]["risk"] for e in tables} == {"safe"}
