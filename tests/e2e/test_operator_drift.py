"""End to end: a column dropped behind the operator's back is detected and put back, with a `drifted` event."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from clusters import DATABASE_URL, cluster, needs_postgres
from emulating import eventually
from psycopg.conninfo import make_conninfo

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]


def _has_column(database: str, column: str) -> bool:
    with psycopg.connect(make_conninfo(DATABASE_URL, dbname=database)) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'profiles'::regclass AND attname = %s "
            "AND NOT attisdropped",
            [column],
        ).fetchone()
    return bool(row and row[0])


class TestDrift:
    """The drift timer observes and corrects."""

    def test_dropped_column_comes_back(self) -> None:
        """Drop `bio` by hand; within a drift interval it exists again and a drifted event is queued."""

        async def scenario() -> tuple[list[str], dict[str, Any]]:
            async with cluster(drift_interval=1.0) as kube:
                documents = kube.example("blog")
                await asyncio.gather(*(kube.create(d) for d in documents))
                await kube.wait("Table", "profiles", "Available")
                with psycopg.connect(make_conninfo(DATABASE_URL, dbname=kube.database), autocommit=True) as c:
                    c.execute("ALTER TABLE profiles DROP COLUMN bio")
                assert not _has_column(kube.database, "bio")

                async def repaired() -> bool:
                    return await asyncio.to_thread(_has_column, kube.database, "bio")

                await eventually(repaired, timeout=30)
                with psycopg.connect(make_conninfo(DATABASE_URL, dbname="kliv")) as control:
                    rows = control.execute(
                        "SELECT routing_key FROM inventory.outbox WHERE namespace = %s AND routing_key LIKE %s",
                        [kube.namespace, "%.drifted"],
                    ).fetchall()

                async def summarized() -> dict[str, Any] | None:
                    project = await kube.get("Project", "blog")
                    summary = ((project or {}).get("status") or {}).get("summary")
                    return summary if summary and summary["objects"] == len(documents) else None

                return [r[0] for r in rows], await eventually(summarized, timeout=15)

        keys, summary = asyncio.run(scenario())
        assert any(key.endswith(".table.drifted") for key in keys)
        # The drift timer refreshes the Project's summary of all 15 objects.
        assert summary == {"objects": 15, "ready": 15, "notReady": []}


class TestQuietDriftChecks:
    """The operator's drift checks of an unchanged project reuse its catalog reading (watching.py)."""

    def test_quiet_drift_checks_read_the_catalog_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from kliv.stacks.postgres import watching

        full: list[str] = []
        plans: list[str] = []
        read, observe = watching.observe, watching.Watches.observe

        def reading(connection: Any, only: Any = None) -> Any:
            if only is None:
                full.append(connection.info.dbname)
            return read(connection, only)

        def planning(self: watching.Watches, connection: Any) -> Any:
            plans.append(connection.info.dbname)
            return observe(self, connection)

        monkeypatch.setattr(watching, "observe", reading)
        monkeypatch.setattr(watching.Watches, "observe", planning)

        async def scenario() -> tuple[int, int, bool]:
            async with cluster(drift_interval=0.5) as kube:
                await asyncio.gather(*(kube.create(d) for d in kube.example("blog")))
                await kube.wait("Table", "profiles", "Available")
                await eventually(lambda: _quiet(plans, kube.database), timeout=15)
                readings, checks = full.count(kube.database), plans.count(kube.database)
                await eventually(lambda: _quiet(plans, kube.database, checks + 3), timeout=15)
                reused = full.count(kube.database) == readings
                with psycopg.connect(make_conninfo(DATABASE_URL, dbname=kube.database), autocommit=True) as c:
                    c.execute("ALTER TABLE profiles DROP COLUMN bio")
                await eventually(lambda: asyncio.to_thread(_has_column, kube.database, "bio"), timeout=30)
                return readings, full.count(kube.database), reused

        readings, after, reused = asyncio.run(scenario())
        assert reused  # three more drift checks, no full reading
        assert after > readings  # the column dropped by hand was heard, read and put back


async def _quiet(plans: list[str], database: str, at_least: int = 1) -> bool:
    return plans.count(database) >= at_least
