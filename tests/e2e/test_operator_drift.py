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
        # The drift timer refreshes the Project's summary of all 13 objects.
        assert summary == {"objects": 13, "ready": 13, "notReady": []}
