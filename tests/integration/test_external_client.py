"""The Postgres external client: observe returns a value, create/update/delete are idempotent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import psycopg
from postgres_projects import Project

from kliv.specs import ProjectSpecs, load
from kliv.stacks.postgres.client import PostgresProjectClient

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: shop}
spec: {deletionPolicy: Delete}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: items}
spec:
  projectRef: {name: shop}
  columns:
    - {name: id, type: uuid, primaryKey: true, default: gen_random_uuid()}
    - {name: title, type: text, nullable: false}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: items-read}
spec: {projectRef: {name: shop}, table: items, command: select, using: "true"}
"""


def _group(created: Project) -> ProjectSpecs:
    validation = load([created.folder])
    [group] = [g for g in validation.specs.projects.values() if g.project]
    return group


class TestPostgresProjectClient:
    """The Crossplane-style lifecycle, driven from an event loop."""

    def test_lifecycle(self, project: Callable[[str | Path], Project]) -> None:
        """observe (absent) -> create -> observe (up to date) -> create again (no-op) -> delete -> delete again."""
        created = project(SPECS)
        client = PostgresProjectClient(created.engine)
        group = _group(created)

        async def scenario() -> None:
            before = await client.observe(group)
            assert (before.exists, before.up_to_date) == (False, False)
            assert {c.action for c in before.changes} == {"create"}
            outputs = await client.create(group)
            assert outputs[f"Table/{created.namespace}/items"] == {
                "database": created.database,
                "table": "public.items",
            }
            after = await client.observe(group)
            assert (after.exists, after.up_to_date, after.changes) == (True, True, [])
            await client.create(group)  # idempotent
            assert (await client.observe(group)).up_to_date
            await client.delete(group)
            await client.delete(group)  # deleting what is absent succeeds

        asyncio.run(scenario())
        with psycopg.connect(created.url) as admin:
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [created.database]).fetchone()
        assert exists is None
