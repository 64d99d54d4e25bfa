"""End to end: a column added by a spec update appears; a column drop is refused until annotated."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from clusters import DATABASE_URL, cluster, condition, needs_postgres
from psycopg.conninfo import make_conninfo

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]


def _columns(database: str) -> list[str]:
    with psycopg.connect(make_conninfo(DATABASE_URL, dbname=database)) as connection:
        rows = connection.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'profiles'::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum"
        ).fetchall()
    return [r[0] for r in rows]


class TestSpecChanges:
    """Updates of a Table as an engineer or an agent would make them."""

    def test_add_then_drop_a_column(self) -> None:
        """Add: applied (generation 2). Drop: DataLossRefused; with the annotation for generation 3: applied."""

        async def scenario() -> dict[str, Any]:
            async with cluster() as kube:
                documents = kube.example("blog")
                await asyncio.gather(*(kube.create(d) for d in documents))
                profiles = next(d for d in documents if d["metadata"]["name"] == "profiles")
                await kube.wait("Table", "profiles", "Available")
                columns = profiles["spec"]["columns"]
                added = [*columns, {"name": "website", "type": "text"}]
                await kube.patch("Table", "profiles", {"spec": {"columns": added}})
                await kube.wait("Table", "profiles", "Available", generation=2)
                after_add = _columns(kube.database)
                await kube.patch("Table", "profiles", {"spec": {"columns": columns}})
                refused = await kube.wait("Table", "profiles", "DataLossRefused", generation=3)
                after_refusal = _columns(kube.database)
                annotation = {"metadata": {"annotations": {"cloud.kliv.dev/allow-data-loss": "3"}}}
                await kube.patch("Table", "profiles", annotation)
                await kube.wait("Table", "profiles", "Available", generation=3)
                return {"add": after_add, "refused": refused, "kept": after_refusal, "end": _columns(kube.database)}

        result = asyncio.run(scenario())
        assert "website" in result["add"]
        assert "website" in result["kept"]
        assert "website" not in result["end"]
        message = condition(result["refused"], "Ready")["message"]
        assert "drop column website" in message
        assert 'cloud.kliv.dev/allow-data-loss: "3"' in message
