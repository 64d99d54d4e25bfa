"""Golden plans and audit events: what `kliv plan --output json` and the outbox say for each example and
a generated 100-table project, byte for byte, so that a refactoring of the engine (issue 12) can prove
it changed no behaviour.

Names that differ per run (the test's namespace and database, event ids and times, keyed
fingerprints) are replaced by placeholders. `KLIV_UPDATE_GOLDEN=1` rewrites tests/golden/ from
what the code does now: review that diff as you would a behaviour change.
"""

from __future__ import annotations

import json
import os
import re
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


@pytest.mark.parametrize("example", ["blog", "saas", "storefront", "generated-100"])
def test_plan_and_events_are_golden(example: str, project: Callable[[str | Path], Project], tmp_path: Path) -> None:
    """On every test server (PG 15 and PG 18): one golden file, as the plans must not differ."""
    source = ROOT / "examples" / example
    if example == "generated-100":
        source = write_project(tmp_path / "generated", 100)
    created = project(source)
    env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY,
           "KLIV_BUCKETS_DIR": str(created.buckets_dir), "STRIPE_KEY": "sk_test_golden"}  # fmt: skip
    planned = CliRunner().invoke(app, ["plan", str(created.folder), "--output", "json"], env=env)
    assert planned.exit_code == 0, planned.output
    _compare(f"{example}.plan.json", json.loads(_normalized(planned.stdout, created)))
    applied = CliRunner().invoke(app, ["apply", str(created.folder), "--output", "json"], env=env)
    assert applied.exit_code == 0, applied.output
    rows = (
        created.engine.control_session()
        .execute("SELECT body FROM inventory.outbox WHERE namespace = %s ORDER BY position", [created.namespace])
        .fetchall()
    )
    _compare(f"{example}.events.json", [_event(row[0], created) for row in rows])
