"""The engine conformance suite: given specs, every engine gives the same plan JSON, risks,
refusals and audit events, byte for byte (golden files under tests/golden/).

For each example and a generated 100-table project: the plan (`kliv plan --output json`) and
the audit events its apply writes; then a change the gate refuses: the refusal's JSON and its
`refused` events. An engine joins by being added to ENGINES (chosen by `KLIV_ENGINE`, as users
choose it): the native engine passes today; the Pulumi engine (issue 14) must pass the same
files. The suite also proved that the redesign of issue 12 changed no behaviour.

Names that differ per run (the test's namespace and database, event ids and times, keyed
fingerprints) are replaced by placeholders. `KLIV_UPDATE_GOLDEN=1` rewrites tests/golden/ from
what the code does now: review that diff as you would a behaviour change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from postgres_projects import ROOT, TEST_KEY, Project
from typer.testing import CliRunner

from kliv.cli import app

GOLDEN = ROOT / "tests" / "golden"
sys.path.insert(0, str(ROOT / "benchmarks"))
from generate import write_project  # noqa: E402

_FINGERPRINT = re.compile(r"hmac-sha256:[0-9a-f]{32}")


def _normalized(text: str, created: Project) -> str:
    text = text.replace(created.database, "DATABASE").replace(created.namespace, "NAMESPACE")
    return _FINGERPRINT.sub("hmac-sha256:FINGERPRINT", text)


def _event(body: str, created: Project) -> dict[str, Any]:
    event = json.loads(_normalized(body, created))
    event.pop("id")
    event.pop("time")
    event["data"]["actor"] = "ACTOR"  # the CLI user
    return event  # type: ignore[no-any-return]


def _compare(name: str, found: Any) -> None:
    path = GOLDEN / name
    text = json.dumps(found, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("KLIV_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with KLIV_UPDATE_GOLDEN=1 once"
    assert text == path.read_text(), f"{name} differs from the golden file (KLIV_UPDATE_GOLDEN=1 shows how)"


# KLIV_ENGINE values that must conform. The Pulumi engine needs the `pulumi` CLI and its plugins,
# which no registry these machines reach ships: there it runs the conformance it can without them
# (tests/unit/test_pulumi_program.py) and this suite skips it, saying so.
ENGINES = [
    "native",
    pytest.param("pulumi", marks=pytest.mark.skipif(
        shutil.which("pulumi") is None, reason="the Pulumi engine needs the `pulumi` CLI on PATH (docs/pulumi.md)")),
]  # fmt: skip


def _env(created: Project, engine: str) -> dict[str, str]:
    return {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY,
            "KLIV_BUCKETS_DIR": str(created.buckets_dir), "STRIPE_KEY": "sk_test_golden",
            "KLIV_ENGINE": engine, "KLIV_PULUMI_BACKEND": f"file://{created.folder.parent / 'pulumi'}"}  # fmt: skip


def _events(created: Project, after: int = 0) -> list[dict[str, Any]]:
    rows = (
        created.engine.control_session()
        .execute(
            "SELECT body FROM inventory.outbox WHERE namespace = %s AND position > %s ORDER BY position",
            [created.namespace, after],
        )
        .fetchall()
    )
    return [_event(row[0], created) for row in rows]


def _last_position(created: Project) -> int:
    row = (
        created.engine.control_session()
        .execute("SELECT coalesce(max(position), 0) FROM inventory.outbox WHERE namespace = %s", [created.namespace])
        .fetchone()
    )
    return int(row[0]) if row else 0


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("example", ["blog", "saas", "storefront", "generated-100"])
def test_plan_and_events_are_golden(
    example: str, engine: str, project: Callable[[str | Path], Project], tmp_path: Path
) -> None:
    """On every test server (PG 15 and PG 18): one golden file, as the plans must not differ."""
    source = ROOT / "examples" / example
    if example == "generated-100":
        source = write_project(tmp_path / "generated", 100)
    created = project(source)
    env = _env(created, engine)
    planned = CliRunner().invoke(app, ["plan", str(created.folder), "--output", "json"], env=env)
    assert planned.exit_code == 0, planned.output
    _compare(f"{example}.plan.json", json.loads(_normalized(planned.stdout, created)))
    applied = CliRunner().invoke(app, ["apply", str(created.folder), "--output", "json"], env=env)
    assert applied.exit_code == 0, applied.output
    _compare(f"{example}.events.json", _events(created))


@pytest.mark.parametrize("engine", ENGINES)
def test_refusals_are_golden(engine: str, project: Callable[[str | Path], Project]) -> None:
    """Dropping a column and a table (deletionPolicy Delete) is refused: exit 2, the same JSON, the same
    `refused` events, nothing applied."""
    created = project(ROOT / "examples" / "blog")
    env = _env(created, engine)
    assert CliRunner().invoke(app, ["apply", str(created.folder)], env=env).exit_code == 0
    created.edit("Table", "comments", lambda d: d["spec"].update(deletionPolicy="Delete"))
    assert CliRunner().invoke(app, ["apply", str(created.folder)], env=env).exit_code == 0  # a spec-only change
    before = _last_position(created)
    created.edit("Table", "posts", lambda d: d["spec"].update(
        columns=[c for c in d["spec"]["columns"] if c["name"] != "created_at"]))  # fmt: skip
    kept = [d for d in created.documents() if d["metadata"]["name"] != "comments"
            and (d.get("spec") or {}).get("table") != "comments"]  # fmt: skip
    created.write(kept)
    refused = CliRunner().invoke(app, ["apply", str(created.folder), "--output", "json"], env=env)
    assert refused.exit_code == 2, refused.output
    _compare("blog.refused.json", json.loads(_normalized(refused.stdout, created)))
    _compare("blog.refused.events.json", _events(created, before))
    with created.connect() as connection:  # nothing applied
        assert connection.execute("SELECT to_regclass('comments') IS NOT NULL").fetchone() == (True,)
