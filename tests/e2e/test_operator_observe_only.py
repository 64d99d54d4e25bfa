"""End to end: a Project in observe-only mode reports drift and changes nothing."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from clusters import DATABASE_URL, cluster, condition, needs_postgres
from psycopg.conninfo import make_conninfo

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]


def _has_bio(database: str) -> bool:
    with psycopg.connect(make_conninfo(DATABASE_URL, dbname=database)) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'profiles'::regclass AND attname = 'bio' "
            "AND NOT attisdropped"
        ).fetchone()
    return bool(row and row[0])


class TestObserveOnly:
    """management-policy: observe."""

    def test_reports_without_repairing(self) -> None:
        """After a column is dropped by hand, an update shows Synced=False Drifted; the column stays dropped."""

        async def scenario() -> tuple[str, str, bool]:
            async with cluster() as kube:
                documents = kube.example("blog")
                await asyncio.gather(*(kube.create(d) for d in documents))
                await kube.wait("Table", "profiles", "Available")
                observe = {"metadata": {"annotations": {"cloud.kliv.dev/management-policy": "observe"}}}
                await kube.patch("Project", "blog", observe)
                await kube.wait("Project", "blog", "ObserveOnly")
                with psycopg.connect(make_conninfo(DATABASE_URL, dbname=kube.database), autocommit=True) as c:
                    c.execute("ALTER TABLE profiles DROP COLUMN bio")
                # Any change re-runs the reconcile: a label is enough to look again.
                await kube.patch("Table", "profiles", {"metadata": {"labels": {"checked": "yes"}}})

                async def drifted() -> dict[str, object] | None:
                    obj = await kube.get("Table", "profiles")
                    return obj if obj and condition(obj, "Synced").get("reason") == "Drifted" else None

                from emulating import eventually

                profiles = await eventually(drifted, timeout=30)
                synced = condition(profiles, "Synced")
                return synced["status"], synced["message"], await asyncio.to_thread(_has_bio, kube.database)

        status, message, has_bio = asyncio.run(scenario())
        assert status == "False"
        assert "add column bio" in message
        assert has_bio is False  # observed, not repaired
