"""Deploying Functions: check at plan, versions, idempotence, rollback and its pin, retire, audit.

Through the engine and the `kliv plan` / `kliv apply` / `kliv functions` commands, against the
real control database; the module checks run the real `deno info` and `deno check`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from postgres_projects import TEST_KEY, Project
from test_functions_gateway import ECHO, project_yaml, source
from typer.testing import CliRunner

from kliv.cli import app
from kliv.stacks.postgres import sessions


def _cli(created: Project, *args: str) -> tuple[int, Any]:
    env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY}
    result = CliRunner().invoke(app, [*args, "--output", "json"], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        return result.exit_code, result.stdout


def _versions(created: Project) -> list[tuple[int, str]]:
    with psycopg.connect(sessions.conninfo(created.url, "kliv"), autocommit=True) as control:
        rows = control.execute(
            "SELECT version, artifact FROM functions.versions WHERE namespace = %s ORDER BY version",
            [created.namespace],
        ).fetchall()
    return [(int(v), str(a)) for v, a in rows]


def _active(created: Project) -> tuple[int, str | None, bool] | None:
    with psycopg.connect(sessions.conninfo(created.url, "kliv"), autocommit=True) as control:
        row = control.execute(
            "SELECT version, pinned_for, retired_at IS NOT NULL FROM functions.active WHERE namespace = %s",
            [created.namespace],
        ).fetchone()
    return (int(row[0]), row[1], bool(row[2])) if row else None


def _changes(created: Project) -> list[tuple[str, str, list[str]]]:
    changes = created.plan().changes
    return [
        (c.resource, c.action, c.summary) for c in changes if c.action != "noop" and c.resource.startswith("Function/")
    ]


def created_marker() -> str:
    import uuid

    return uuid.uuid4().hex  # a source no earlier test of this process checked


def _code(text: str) -> str:
    return f'export default {{ fetch(req: Request) {{ return new Response("{text}"); }} }};\n'


class TestDeploy:
    """Validate, stage, switch."""

    def test_versions_and_idempotence(self, project: Callable[..., Project]) -> None:
        """Version 1, then nothing to do; a change is version 2; the old code again switches to the
        kept version 1 (no new one); versionsKept prunes the oldest, never the active."""
        created = project(project_yaml({"hello": source(_code("one"), versionsKept=2)})).use()
        ref = f"Function/{created.namespace}/hello"
        [(resource, action, summary)] = _changes(created)
        assert (resource, action) == (ref, "create")
        assert summary[0].startswith("deploy version 1 (sha256 ")
        applied = created.apply()
        assert _versions(created)[0][0] == 1
        assert created.plan().empty
        outputs = created.prepare().outputs[ref]
        assert outputs["version"] == "1"
        assert outputs["target"] == "embedded"
        assert outputs["artifact"] == f"sha256:{_versions(created)[0][1]}"
        assert outputs["url"].endswith(f"/p/{created.namespace}/fn/functions/v1/hello")
        assert applied.changes
        created.edit("Function", "hello", lambda d: d["spec"]["source"].update(inline=_code("two")))
        assert _changes(created)[0][2][0].startswith("deploy version 2")
        created.apply()
        assert [v for v, _ in _versions(created)] == [1, 2]
        created.edit("Function", "hello", lambda d: d["spec"]["source"].update(inline=_code("one")))
        assert _changes(created)[0][2][0].startswith("switch to kept version 1")
        created.apply()
        assert _active(created) == (1, None, False)
        assert created.plan().empty
        created.edit("Function", "hello", lambda d: d["spec"]["source"].update(inline=_code("three")))
        created.apply()
        assert [v for v, _ in _versions(created)] == [1, 3]  # 2 pruned: two kept, the active among them
        created.edit("Function", "hello", lambda d: d["spec"].update(env={"A": "1"}))
        assert _changes(created)[0][2][0].startswith("deploy version 4")  # settings are part of a version

    def test_rollback_pins_until_the_spec_changes(self, project: Callable[..., Project]) -> None:
        created = project(project_yaml({"hello": source(_code("one"))})).use()
        created.apply()
        created.edit("Function", "hello", lambda d: d["spec"]["source"].update(inline=_code("two")))
        created.apply()
        code, rolled = _cli(created, "functions", "rollback", "hello", "--project", f"{created.namespace}/fn")
        assert code == 0, rolled
        assert (rolled["version"], rolled["pinned"]) == (1, True)
        assert created.plan().empty  # the pin holds: drift correction never undoes a rollback
        assert created.prepare().outputs[f"Function/{created.namespace}/hello"]["pinned"] == "rollback"
        code, listed = _cli(created, "functions", "list", "--project", f"{created.namespace}/fn")
        assert listed["functions"][0]["version"] == 1
        assert listed["functions"][0]["pinned"] is True
        code, refused = _cli(created, "functions", "rollback", "hello", "--to", "9", "-p", f"{created.namespace}/fn")
        assert code == 1
        assert "no version 9" in refused["message"]
        created.edit("Function", "hello", lambda d: d["spec"]["source"].update(inline=_code("three")))
        assert _changes(created)[0][2][0].startswith("deploy version 3")
        created.apply()
        assert _active(created) == (3, None, False)
        with psycopg.connect(sessions.conninfo(created.url, "kliv"), autocommit=True) as control:
            events = control.execute(
                "SELECT body FROM inventory.outbox WHERE namespace = %s ORDER BY position", [created.namespace]
            ).fetchall()
        bodies = [json.loads(e[0]) for e in events]
        kinds = [b["type"] for b in bodies if b["subject"].startswith("Function/")]
        assert kinds == ["dev.kliv.cloud.function.created", "dev.kliv.cloud.function.updated",
                         "dev.kliv.cloud.function.updated", "dev.kliv.cloud.function.updated"]  # fmt: skip
        rollback = [b for b in bodies if "roll back" in json.dumps(b)]
        assert rollback[0]["data"]["actor"].startswith("cli:")

    def test_a_plan_checks_a_source_once(
        self, project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Deno runs for a source the process has not checked; the next plan of it runs nothing."""
        from kliv.stacks.functions import checking

        calls: list[str] = []
        run = checking._run
        monkeypatch.setattr(
            checking, "_run", lambda arguments, folder: calls.append(arguments[0]) or run(arguments, folder)
        )
        created = project(project_yaml({"hello": source(_code("checked-once " + created_marker()))})).use()
        created.plan()
        assert calls == ["info", "check"]
        created.plan()
        assert calls == ["info", "check"]

    def test_retire_keeps_versions(self, project: Callable[..., Project]) -> None:
        created = project(project_yaml({"hello": source(_code("one"))})).use()
        created.apply()
        created.write([d for d in created.documents() if d["kind"] != "Function"])
        [(_, action, summary)] = _changes(created)
        assert action == "delete"
        assert summary == ["retire function hello: no longer served (its versions are kept)"]
        created.apply()
        active = _active(created)
        assert active is not None
        assert active[2] is True
        assert len(_versions(created)) == 1
        assert created.plan().empty

    def test_project_drop_removes_versions(self, project: Callable[..., Project]) -> None:
        created = project(project_yaml({"hello": source(_code("one"))})).use()
        created.apply()
        created.engine.drop_project(created.database)
        assert _versions(created) == []
        assert _active(created) is None


BAD_MODULES = [
    pytest.param("export const handler = 1;\n", "has no `export default`", 0, id="no-default-export"),
    pytest.param("export default { get(req: Request) { return new Response('x'); } };\n", "fetch", 0, id="no-fetch"),
    pytest.param("export default { fetch() { return 42; } };\n", "fetch", 0, id="fetch-returns-number"),
    pytest.param(
        "const a = ;\nexport default { fetch() { return new Response(''); } };\n", "Expression expected", 1, id="syntax"
    ),
    pytest.param(
        'const n: number = "x";\nexport default { fetch() { return new Response(""); } };\n',
        "not assignable",
        1,
        id="type-error",
    ),
    pytest.param(
        'import pad from "npm:left-pad";\nexport default { fetch() { return new Response(pad); } };\n',
        "cannot be imported",
        1,
        id="npm-import",
    ),
    pytest.param(
        'import x from "https://deno.land/x/a/mod.ts";\nexport default { fetch() { return new Response(x); } };\n',
        "cannot be imported",
        1,
        id="remote-import",
    ),
    pytest.param(
        'import { a } from "/etc/hosts.ts";\nexport default { fetch() { return new Response(a); } };\n',
        "outside the function's artifact",
        1,
        id="outside-artifact",
    ),
    pytest.param(
        '\n\nimport "./other.ts";\nexport default { fetch() { return new Response(""); } };\n',
        "outside the function's artifact",
        3,
        id="relative-import",
    ),
]


class TestRefusedModules:
    """A broken module is refused at plan with Deno's message, line and column: nothing deployed."""

    @pytest.mark.parametrize(("code", "said", "line"), BAD_MODULES)
    def test_refused(self, project: Callable[..., Project], code: str, said: str, line: int) -> None:
        created = project(project_yaml({"bad": source(code), "good": source(ECHO)})).use()
        exit_code, found = _cli(created, "plan", str(created.folder))
        assert exit_code == 1, found
        [error] = found["errors"]
        assert (error["code"], error["kind"], error["name"]) == ("invalid-source", "Function", "bad")
        assert error["path"] == "/spec/source/inline"
        assert error["file"].endswith("specs.yaml")
        assert said in error["message"], error["message"]
        assert "check.ts" not in error["message"]  # kliv's wrapper is not the author's business
        if line:
            assert f"(line {line}, column " in error["message"]
        assert error["hint"]
        exit_code, found = _cli(created, "apply", str(created.folder))
        assert exit_code == 1
        assert _versions(created) == []  # not even the good function: nothing is applied

    def test_the_file_position_of_a_block_source(self, project: Callable[..., Project]) -> None:
        """Written as `inline: |`, the error's line and column are the file's."""
        created = project(project_yaml({}))
        documents = created.documents()
        created.write(documents)
        text = (created.folder / "specs.yaml").read_text() + (
            "---\napiVersion: cloud.kliv.dev/v1alpha1\nkind: Function\nmetadata:\n  name: typed\n"
            f"  namespace: {created.namespace}\nspec:\n  projectRef: {{name: fn}}\n  source:\n    inline: |\n"
            "      // a typed mistake on the source's second line\n      const n: number = 'x';\n"
            "      export default { fetch() { return new Response(String(n)); } };\n"
        )
        (created.folder / "specs.yaml").write_text(text)
        created.use()
        exit_code, found = _cli(created, "plan", str(created.folder))
        assert exit_code == 1, found
        [error] = found["errors"]
        lines = text.splitlines()
        expected = next(i for i, ln in enumerate(lines, 1) if "const n: number" in ln)
        assert (error["line"], error["column"]) == (expected, lines[expected - 1].index("n:") + 1)
        assert "(line 2, column 7 of the source)" in error["message"]

    def test_nodejs_runtime_needs_lambda(self, project: Callable[..., Project]) -> None:
        created = project(project_yaml({"node": source(_code("x"), runtime="nodejs20")})).use()
        exit_code, found = _cli(created, "plan", str(created.folder))
        assert exit_code == 1
        [error] = found["errors"]
        assert error["path"] == "/spec/runtime"
        assert "lambda" in error["message"]
