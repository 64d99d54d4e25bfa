"""A canary secret value never shows up anywhere but sealed in the ciphertext column.

The storefront applies through the real CLI with the canary as STRIPE_KEY, then
with a second canary (a new version), then the secret is refused and finally
deleted. Searched: CLI output (text and JSON, plans with --sql, `kliv up`,
`kliv secrets list`), the events RabbitMQ delivers, the outbox, the status
outputs, structlog's captured logs and stdlib logs, the messages of the errors
raised, every row of the control database but the ciphertext column, every row
of the project database, and the bucket files: zero hits, in the clear, in hex
or in base64.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from amqp_consumers import AMQP_URL, Consumer, needs_rabbitmq
from postgres_projects import ROOT, ROTATED_KEY, TEST_KEY, Project
from psycopg import sql
from psycopg.conninfo import make_conninfo
from structlog.testing import capture_logs
from typer.testing import CliRunner

from kliv.cli import app

pytestmark = needs_rabbitmq


def _dump(url: str, database: str, skip_column: str = "ciphertext") -> list[str]:
    """Every row of every table of ``database`` as text, leaving out one column."""
    rows: list[str] = []
    with psycopg.connect(make_conninfo(url, dbname=database), autocommit=True) as connection:
        tables = connection.execute(
            "SELECT table_schema, table_name, array_agg(column_name::text ORDER BY ordinal_position) "
            "FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
            "AND column_name <> %s GROUP BY 1, 2",
            [skip_column],
        ).fetchall()
        for schema, table, columns in tables:
            query = sql.SQL("SELECT {} FROM {}.{}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(schema), sql.Identifier(table)
            )
            rows += [repr(row) for row in connection.execute(query)]
    return rows


def _forms(value: str) -> list[str]:
    raw = value.encode()
    return [value, raw.hex(), base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode()[:20]]


class TestSecretValueCanary:
    """Zero hits for the canary values."""

    def test_value_never_leaks(
        self, project: Callable[[str | Path], Project], caplog: pytest.LogCaptureFixture, tmp_path: Path
    ) -> None:
        """Apply, re-version, list, refuse and delete secrets: the values are found nowhere."""
        canaries = [f"sk_live_canary{uuid.uuid4().hex}", f"sk_live_canary{uuid.uuid4().hex}"]
        created = project(ROOT / "examples" / "storefront")
        env = {"KLIV_DATABASE_URL": created.url, "KLIV_AMQP_URL": AMQP_URL, "KLIV_CONFIG": "/nonexistent",
               "KLIV_BUCKETS_DIR": str(tmp_path / "buckets"), "KLIV_SECRET_KEY": TEST_KEY,
               "KLIV_SECRET_PREVIOUS_KEYS": ROTATED_KEY,
               "STRIPE_KEY": canaries[0]}  # fmt: skip
        runner = CliRunner()
        outputs: list[str] = []
        caplog.set_level(logging.DEBUG)
        folder = str(created.folder)

        async def invoke(*args: str) -> int:
            result = await asyncio.to_thread(runner.invoke, app, list(args), env=env)
            outputs.append(result.output)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                outputs.append(repr(result.exception))
            return result.exit_code

        async def scenario() -> list[bytes]:
            async with Consumer(f"{created.namespace}.#") as consumer:
                with capture_logs() as logs:
                    assert await invoke("plan", folder, "--output", "json", "--sql") == 0
                    assert await invoke("apply", folder, "--output", "json") == 0
                    env["STRIPE_KEY"] = canaries[1]
                    assert await invoke("plan", folder, "--sql") == 0
                    assert await invoke("apply", folder) == 0
                    assert await invoke("up", folder) == 0
                    assert await invoke("secrets", "list") == 0
                    assert await invoke("secrets", "list", "--output", "json") == 0
                    assert await invoke("events", "--project", f"{created.namespace}/storefront", "-o", "json") == 0
                    created.write([d for d in created.documents() if d["metadata"]["name"] != "stripe-key"])
                    created.edit("Function", "checkout", lambda d: d["spec"].pop("secrets"))
                    assert await invoke("apply", folder) == 2  # refused: data loss
                    assert await invoke("apply", folder, "--allow-data-loss", "--output", "json") == 0
                    with psycopg.connect(make_conninfo(created.url, dbname="kliv")) as control:
                        [(events,)] = control.execute(
                            "SELECT count(*) FROM inventory.outbox WHERE namespace = %s", [created.namespace]
                        ).fetchall()
                    await consumer.collect(events, timeout=20)
                outputs.append(repr(logs))
                return [m.body for m in consumer.messages]

        bodies = asyncio.run(scenario())
        assert any('"version": 2' in text for text in outputs)  # the second value made version 2
        assert any("STRIPE_KEY" in text for text in outputs)  # the secret itself was listed
        outputs.append(repr(created.prepare().outputs))
        haystack = [*outputs, *(b.decode() for b in bodies), caplog.text]
        haystack += _dump(created.url, "kliv") + _dump(created.url, created.database)
        haystack += [p.read_text() for p in (tmp_path / "buckets").rglob("*") if p.is_file()]
        for canary in canaries:
            for form in _forms(canary):
                assert all(form not in text for text in haystack), form
