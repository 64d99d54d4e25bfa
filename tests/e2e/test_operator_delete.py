"""End to end: deleting a Table honours its deletionPolicy (Retain keeps the table, Delete drops it)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from clusters import DATABASE_URL, cluster, needs_postgres
from psycopg.conninfo import make_conninfo

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]


def _tables(database: str) -> list[str]:
    with psycopg.connect(make_conninfo(DATABASE_URL, dbname=database)) as connection:
        rows = connection.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


class TestDeletion:
    """Finalizers wait for the deletion policy to be carried out."""

    def test_retain_and_delete(self) -> None:
        """comments (Retain) stays after its CR is deleted; a Delete table is dropped."""

        async def scenario() -> tuple[list[str], list[str]]:
            async with cluster() as kube:
                documents = kube.example("blog")
                extra = kube.own(
                    {
                        "apiVersion": "cloud.kliv.dev/v1alpha1",
                        "kind": "Table",
                        "metadata": {"name": "scratch"},
                        "spec": {
                            "projectRef": {"name": "blog"},
                            "deletionPolicy": "Delete",
                            "rowLevelSecurity": True,
                            "columns": [{"name": "id", "type": "uuid", "primaryKey": True}],
                        },
                    }
                )
                policy = kube.own(
                    {
                        "apiVersion": "cloud.kliv.dev/v1alpha1",
                        "kind": "TablePolicy",
                        "metadata": {"name": "scratch-read"},
                        "spec": {
                            "projectRef": {"name": "blog"},
                            "table": "scratch",
                            "command": "select",
                            "using": "true",
                        },
                    }
                )
                await asyncio.gather(*(kube.create(d) for d in [*documents, extra, policy]))
                await kube.wait("TablePolicy", "scratch-read", "Available")
                before = await asyncio.to_thread(_tables, kube.database)
                for kind, name in [
                    ("TablePolicy", "comments-read-on-visible-posts"),
                    ("TablePolicy", "comments-own-insert"),
                    ("TablePolicy", "comments-own-delete"),
                    ("Table", "comments"),
                    ("TablePolicy", "scratch-read"),
                    ("Table", "scratch"),
                ]:
                    await kube.delete(kind, name)
                    await kube.gone(kind, name)
                return before, await asyncio.to_thread(_tables, kube.database)

        before, after = asyncio.run(scenario())
        assert "scratch" in before
        assert "comments" in after  # Retain: forgotten, kept
        assert "scratch" not in after  # Delete: dropped
