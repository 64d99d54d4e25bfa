"""`kliv plan` and `kliv apply` against a real server: output shapes and the exit-code contract."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from postgres_projects import ROOT, TEST_KEY, Project
from typer.testing import CliRunner

from kliv.cli import app


def kliv(created: Project, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _columns(document: dict[str, Any]) -> list[dict[str, Any]]:
    return document["spec"]["columns"]  # type: ignore[no-any-return]


class TestPlanAndApply:
    """The CLI contract: 0 applied, 1 invalid, 2 refused, 3 failed."""

    def test_plan_apply_replan(self, project: Callable[[str | Path], Project]) -> None:
        """plan shows creates (JSON), apply exits 0, a second plan has no changes."""
        created = project(ROOT / "examples" / "blog")
        code, output = kliv(created, "plan", str(created.folder), "--output", "json")
        assert code == 0
        [plan] = json.loads(output)["plans"]
        assert plan["summary"] == {"create": 15, "update": 0, "delete": 0}
        first = plan["changes"][0]
        assert set(first) == {"resource", "action", "risk", "summary", "steps"}
        assert first["steps"][0] == {"sql": f'CREATE DATABASE "{created.database}"', "phase": "server",
                                     "transactional": False, "stage": 0}  # fmt: skip
        code, output = kliv(created, "apply", str(created.folder))
        assert (code, "✓ applied: 15 changes" in output) == (0, True)
        code, output = kliv(created, "plan", str(created.folder))
        assert code == 0
        assert "no changes" in output

    def test_refused_then_allowed(self, project: Callable[[str | Path], Project]) -> None:
        """Dropping a column is refused (exit 2, nothing applied) until --allow-data-loss."""
        created = project(ROOT / "examples" / "blog")
        assert kliv(created, "apply", str(created.folder))[0] == 0
        created.edit("Table", "posts", lambda d: _columns(d).pop())
        code, output = kliv(created, "apply", str(created.folder), "--output", "json")
        report = json.loads(output)
        assert (code, report["applied"]) == (2, False)
        assert "drop column created_at" in report["refused"]
        with created.connect() as connection:
            assert connection.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'posts'::regclass "
                                      "AND attname = 'created_at'").fetchone() == (1,)  # fmt: skip
        assert kliv(created, "apply", str(created.folder), "--allow-data-loss")[0] == 0

    def test_plan_shows_data_loss_with_exit_0(self, project: Callable[[str | Path], Project]) -> None:
        """`kliv plan` shows a data-loss change and exits 0; only `apply` refuses it."""
        created = project(ROOT / "examples" / "blog")
        assert kliv(created, "apply", str(created.folder))[0] == 0
        created.edit("Table", "posts", lambda d: _columns(d).pop())
        code, output = kliv(created, "plan", str(created.folder))
        assert code == 0
        assert "data-loss" in output

    def test_the_command_closes_its_engine(
        self, project: Callable[[str | Path], Project], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An in-process command keeps no connections: the engine is closed when the command ends."""
        from kliv.stacks import PostgresEngine

        closed: list[PostgresEngine] = []
        original = PostgresEngine.close

        def close(self: PostgresEngine) -> None:
            closed.append(self)
            original(self)

        monkeypatch.setattr(PostgresEngine, "close", close)
        created = project(ROOT / "examples" / "blog")
        assert kliv(created, "plan", str(created.folder))[0] == 0
        assert closed

    def test_a_function_is_planned_and_deployed(self, project: Callable[[str | Path], Project]) -> None:
        """The plan line of a Function (issue 13): `+ Function/ns/checkout  safe: deploy version 1 (sha256 …)`;
        nothing is left out any more, and the apply reports its URL and version."""
        created = project(ROOT / "examples" / "storefront")
        env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "STRIPE_KEY": "sk_test_1",
               "KLIV_BUCKETS_DIR": str(created.buckets_dir), "KLIV_SECRET_KEY": TEST_KEY}  # fmt: skip
        result = CliRunner().invoke(app, ["plan", str(created.folder)], env=env)
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert f"+ Function/{created.namespace}/checkout safe deploy version 1 (sha256 " in text
        assert "not supported" not in text
        result = CliRunner().invoke(app, ["plan", str(created.folder), "--output", "json"], env=env)
        [plan] = json.loads(result.output)["plans"]
        assert plan["notSupported"] == []
        applied = CliRunner().invoke(app, ["apply", str(created.folder), "--output", "json"], env=env)
        assert applied.exit_code == 0, applied.output
        [plan] = json.loads(applied.output)["plans"]
        [change] = [c for c in plan["changes"] if c["resource"] == f"Function/{created.namespace}/checkout"]
        assert (change["action"], change["risk"]) == ("create", "safe")

    def test_guardrail_warnings_in_plan_and_apply_json(self, project: Callable[[str | Path], Project]) -> None:
        """An agent reading JSON sees the same guardrail warnings a person sees in text."""
        created = project(ROOT / "examples" / "blog")
        documents = created.documents()
        project_name = next(d for d in documents if d["kind"] == "Project")["metadata"]["name"]
        documents.append({"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Table", "metadata": {"name": "drafts"},
                          "spec": {"projectRef": {"name": project_name}, "rowLevelSecurity": True,
                                   "columns": [{"name": "id", "type": "uuid", "primaryKey": True}]}})  # fmt: skip
        created.write(documents)
        for command in ("plan", "apply"):
            code, output = kliv(created, command, str(created.folder), "--output", "json")
            assert code == 0, output
            rules = {w.get("rule") for w in json.loads(output)["warnings"]}
            assert "rls-without-policies" in rules, output

    def test_invalid_specs_exit_1(self, project: Callable[[str | Path], Project]) -> None:
        """A spec error stops before the server is touched."""
        created = project(ROOT / "examples" / "blog")
        created.edit("Table", "posts", lambda d: _columns(d).append({"name": "x", "type": "serial"}))
        code, output = kliv(created, "apply", str(created.folder))
        assert code == 1
        assert "`serial` is not supported" in output

    def test_guardrail_refuses_exit_2(self, project: Callable[[str | Path], Project]) -> None:
        """Valid specs that break a guardrail (RLS off without a reason) are refused."""
        created = project(ROOT / "examples" / "blog")
        created.edit("Table", "posts", lambda d: d["spec"].update(rowLevelSecurity=False))
        code, output = kliv(created, "apply", str(created.folder))
        assert code == 2
        assert "rls-disabled" in output

    def test_failed_statement_exit_3(self, project: Callable[[str | Path], Project]) -> None:
        """A statement Postgres rejects exits 3 and names it; nothing was applied."""
        created = project(ROOT / "examples" / "blog")
        assert kliv(created, "apply", str(created.folder))[0] == 0
        created.edit(
            "Table", "posts", lambda d: _columns(d).append({"name": "n", "type": "integer", "check": "length(n) > 0"})
        )
        code, output = kliv(created, "apply", str(created.folder))
        assert code == 3
        assert "length(integer) does not exist" in output
        assert "rolled back" in output
