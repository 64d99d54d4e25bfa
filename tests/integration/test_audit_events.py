"""Audit events of an apply reach a consumer bound to `kliv.audit`: complete, valid, in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from amqp_consumers import AMQP_URL, SCHEMA, Consumer, needs_rabbitmq
from postgres_projects import ROOT, Project

from kliv.operator import Relay
from kliv.stacks import RefusedError

pytestmark = needs_rabbitmq


class TestAuditEvents:
    """The blog example's apply, as a consumer sees it."""

    def test_apply_emits_one_event_per_resource(self, project: Callable[[str | Path], Project]) -> None:
        """15 created events, valid CloudEvents, routing keys and types per the design, ids unique."""
        created = project(ROOT / "examples" / "blog")

        async def scenario() -> list[dict[str, object]]:
            async with Consumer(f"{created.namespace}.#") as consumer:
                plan = created.apply()
                assert await Relay(created.url, AMQP_URL).drain() >= 15
                events = await consumer.collect(15)
                assert len(plan.to_json()["changes"]) == 15
                return events

        events = asyncio.run(scenario())
        assert len(events) == 15
        for event in events:
            jsonschema.validate(event, SCHEMA)
        assert len({e["id"] for e in events}) == 15
        subjects = [e["subject"] for e in events]
        assert subjects[0] == f"Project/{created.namespace}/blog"
        assert {e["type"] for e in events} == {
            "dev.kliv.cloud.project.created", "dev.kliv.cloud.table.created", "dev.kliv.cloud.tablepolicy.created",
            "dev.kliv.cloud.databasefunction.created", "dev.kliv.cloud.trigger.created",
        }  # fmt: skip
        posts = next(e for e in events if e["subject"] == f"Table/{created.namespace}/posts")
        data = posts["data"]
        assert isinstance(data, dict)
        assert data["action"] == "created"
        assert data["outcome"] == "applied"
        assert data["plan"]["risk"] == "safe"
        assert "create table posts" in data["plan"]["summary"]
        assert posts["source"] == f"/kliv/namespaces/{created.namespace}/projects/blog"

    def test_refusal_and_update_events_in_order(self, project: Callable[[str | Path], Project]) -> None:
        """A refused drop emits `refused`; the allowed re-apply emits `updated`, after it, same resource."""
        created = project(ROOT / "examples" / "blog")
        created.apply()
        asyncio.run(Relay(created.url, AMQP_URL).drain())  # the creation events go before the consumer binds
        created.edit("Table", "posts", lambda d: d["spec"]["columns"].pop())
        refs = f"Table/{created.namespace}/posts"

        async def scenario() -> list[dict[str, object]]:
            async with Consumer(f"{created.namespace}.*.table.*") as consumer:
                with pytest.raises(RefusedError):
                    created.apply()
                created.apply(allow_data_loss=True)
                await Relay(created.url, AMQP_URL).drain()
                return await consumer.collect(2)

        events = asyncio.run(scenario())
        assert [(e["subject"], e["type"]) for e in events] == [
            (refs, "dev.kliv.cloud.table.refused"),
            (refs, "dev.kliv.cloud.table.updated"),
        ]


class TestEventsCommand:
    """`kliv events` reads the outbox without any broker."""

    def test_events_of_a_project(self, project: Callable[[str | Path], Project]) -> None:
        """One JSON event per line, oldest first, filtered by namespace/project."""
        from typer.testing import CliRunner

        from kliv.cli import app

        created = project(ROOT / "examples" / "blog")
        created.apply()
        result = CliRunner().invoke(
            app,
            ["events", "--project", f"{created.namespace}/blog", "--output", "json"],
            env={"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent"},
        )
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.output.splitlines()]
        assert len(lines) == 15
        assert lines[0]["subject"] == f"Project/{created.namespace}/blog"
        assert all(e["source"] == f"/kliv/namespaces/{created.namespace}/projects/blog" for e in lines)


class TestApplyOutput:
    def test_json_output_stays_whole_while_events_are_delivered(self, project: Callable[[str | Path], Project]) -> None:
        """`kliv apply --output json` with RabbitMQ configured: stdout is one JSON document, no relay log line."""
        from typer.testing import CliRunner

        from kliv.cli import app

        created = project(ROOT / "examples" / "blog")
        env = {"KLIV_DATABASE_URL": created.url, "KLIV_AMQP_URL": AMQP_URL, "KLIV_CONFIG": "/nonexistent"}
        result = CliRunner().invoke(app, ["apply", str(created.folder), "--output", "json"], env=env)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["applied"] is True  # the whole of stdout parses
        assert "relay." not in result.output


class TestRelayCommand:
    def test_kliv_relay_delivers_until_sigterm(self, project: Callable[[str | Path], Project]) -> None:
        """`kliv relay` as a process: what an apply queued reaches the broker; SIGTERM ends it cleanly."""
        import os
        import signal
        import subprocess
        import sys

        created = project(ROOT / "examples" / "blog")
        created.apply()
        env = {**os.environ, "KLIV_DATABASE_URL": created.url, "KLIV_AMQP_URL": AMQP_URL, "KLIV_CONFIG": "/nonexistent"}
        kliv = str(Path(sys.executable).with_name("kliv"))

        async def scenario() -> tuple[list[dict[str, object]], int]:
            async with Consumer(f"{created.namespace}.#") as consumer:
                process = subprocess.Popen([kliv, "relay"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                try:
                    events = await consumer.collect(15, timeout=30)
                finally:
                    process.send_signal(signal.SIGTERM)
                    code = process.wait(timeout=30)
                return events, code

        events, code = asyncio.run(scenario())
        assert len(events) == 15
        assert code == 0
