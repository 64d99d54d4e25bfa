"""A canary secret (the database password in KLIV_DATABASE_URL) never shows up anywhere.

Searched in: CLI output (text and JSON plans), outbox rows, the events RabbitMQ
delivers, structlog records and stdlib log records of the relay. The servers
use trust authentication, so the password is accepted and ignored.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from amqp_consumers import AMQP_URL, Consumer, needs_rabbitmq
from postgres_projects import ROOT, Project
from psycopg.conninfo import make_conninfo
from structlog.testing import capture_logs
from typer.testing import CliRunner, Result

from kliv.cli import app

pytestmark = needs_rabbitmq


class TestSecretCanary:
    """Zero hits for the canary."""

    def test_canary_never_leaks(
        self, project: Callable[[str | Path], Project], caplog: pytest.LogCaptureFixture
    ) -> None:
        """Apply, refuse, fail and relay with a password-bearing URL: the password appears nowhere."""
        canary = f"canary-{uuid.uuid4().hex}"
        created = project(ROOT / "examples" / "blog")
        url = make_conninfo(created.url, password=canary)
        env = {"KLIV_DATABASE_URL": url, "KLIV_AMQP_URL": AMQP_URL, "KLIV_CONFIG": "/nonexistent"}
        runner = CliRunner()
        outputs: list[str] = []
        caplog.set_level(logging.DEBUG)

        async def invoke(args: list[str]) -> Result:
            # In a thread: the CLI runs its own event loop to relay events.
            return await asyncio.to_thread(runner.invoke, app, args, env=env)

        async def scenario() -> list[bytes]:
            async with Consumer(f"{created.namespace}.#") as consumer:
                with capture_logs() as logs:
                    for args in (
                        ["apply", str(created.folder), "--output", "json"],
                        ["plan", str(created.folder), "--output", "json", "--sql"],
                        ["up", str(created.folder)],
                    ):
                        outputs.append((await invoke(args)).output)
                    created.edit("Table", "posts", lambda d: d["spec"]["columns"].pop())
                    outputs.append((await invoke(["apply", str(created.folder)])).output)  # refused
                    created.edit("Table", "posts", lambda d: d["spec"]["columns"].append(
                        {"name": "n", "type": "integer", "check": "length(n) > 0"}))  # fmt: skip
                    result = await invoke(["apply", str(created.folder), "--allow-data-loss"])
                    outputs.append(result.output)
                    assert result.exit_code == 3
                    await consumer.collect(15 + 1 + 1, timeout=20)  # created, refused, failed
                outputs.append(repr(logs))
                return [m.body for m in consumer.messages]

        bodies = asyncio.run(scenario())
        assert len(bodies) == 17
        with psycopg.connect(make_conninfo(created.url, dbname="kliv")) as control:
            rows = control.execute(
                "SELECT body, routing_key FROM inventory.outbox WHERE namespace = %s", [created.namespace]
            ).fetchall()
        haystack = [*outputs, *(b.decode() for b in bodies), *(str(r) for r in rows), caplog.text]
        assert all(canary not in text for text in haystack)
        assert any("admin_url:" in text for text in outputs)  # the URL was printed, without the password
        # No KLIV_SECRET_KEY: no store for the application login's password, so no database_url.
        assert any("database_url: none: set KLIV_SECRET_KEY" in " ".join(text.split()) for text in outputs)
