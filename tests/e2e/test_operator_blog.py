"""End to end: the blog example applied as custom resources becomes Ready, with outputs, in real Postgres."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from clusters import DATABASE_URL, cluster, condition, needs_postgres
from psycopg.conninfo import make_conninfo

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]


class TestOperatorBlog:
    """The blog example as custom resources."""

    def test_whole_project_becomes_ready(self) -> None:
        """15 objects created at once are all Ready with outputs in a few plans; the tables exist."""

        async def scenario() -> tuple[str, list[dict[str, Any]], int]:
            async with cluster() as kube:
                documents = kube.example("blog")
                await asyncio.gather(*(kube.create(d) for d in documents))
                ready = [await kube.wait(d["kind"], d["metadata"]["name"], "Available") for d in documents]
                assert kube.state.debouncer is not None
                return kube.database, ready, kube.state.debouncer.runs

        database, objects, runs = asyncio.run(scenario())
        assert runs <= 4  # 15 objects, a few plans
        posts = next(o for o in objects if o["kind"] == "Table" and o["metadata"]["name"] == "posts")
        assert posts["status"]["outputs"] == {"database": database, "table": "public.posts"}
        assert condition(posts, "Synced")["reason"] == "ReconcileSuccess"
        assert condition(posts, "Ready")["observedGeneration"] == 1

    def test_statuses_are_kept_in_the_control_database(self) -> None:
        """What the operator writes to Kubernetes it also keeps where the admin UI and agents read it."""
        from kliv.stacks import statuses

        async def scenario() -> list[dict[str, Any]]:
            async with cluster() as kube:
                documents = kube.example("blog")
                await asyncio.gather(*(kube.create(d) for d in documents))
                for document in documents:
                    await kube.wait(document["kind"], document["metadata"]["name"], "Available")
                await kube.state.reconciler.recorder.flush()
                with psycopg.connect(make_conninfo(DATABASE_URL, dbname="kliv")) as control:
                    return statuses.load(control, kube.namespace, "blog")

        found = asyncio.run(scenario())
        assert len(found) == 15
        assert {s["updatedBy"] for s in found} == {"kliv-operator"}
        posts = next(s for s in found if (s["kind"], s["name"]) == ("Table", "posts"))
        assert [(c["type"], c["status"], c["reason"]) for c in posts["conditions"]] == [
            ("Ready", "True", "Available"), ("Synced", "True", "ReconcileSuccess")
        ]  # fmt: skip
        assert posts["outputs"]["table"] == "public.posts"
        assert posts["observedGeneration"] == 1

    def test_tables_exist_in_postgres(self) -> None:
        """What the operator reports Ready is really there."""

        async def scenario() -> str:
            async with cluster() as kube:
                documents = kube.example("blog")
                await asyncio.gather(*(kube.create(d) for d in documents))
                await kube.wait("Table", "comments", "Available")
                with psycopg.connect(make_conninfo(DATABASE_URL, dbname=kube.database)) as connection:
                    rows = connection.execute(
                        "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1"
                    ).fetchall()
                return str(rows)

        assert asyncio.run(scenario()) == str([("comments",), ("posts",), ("profiles",)])
