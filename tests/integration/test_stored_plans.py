"""`kliv plan --save` stores a plan; `kliv apply --plan ID` applies exactly it, or refuses (exit 2).

Refused when the id is unknown, expired or used, or when reality moved since the plan;
a refused data-loss plan keeps its id for `--allow-data-loss`. Stored specs and plans
never hold a secret value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from postgres_projects import ROOT, TEST_KEY, Project
from typer.testing import CliRunner

from kliv.cli import app

CANARY = "canary-stored-plan-3f9d1c77"


def kliv(created: Project, *args: str) -> tuple[int, str]:
    env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY,
           "KLIV_BUCKETS_DIR": str(created.buckets_dir), "STRIPE_KEY": CANARY}  # fmt: skip
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def saved(created: Project) -> str:
    code, output = kliv(created, "plan", str(created.folder), "--save", "--output", "json")
    assert code == 0, output
    [plan] = json.loads(output)["plans"]
    return str(plan["planId"])


def control(created: Project) -> psycopg.Connection[Any]:
    return psycopg.connect(psycopg.conninfo.make_conninfo(created.url, dbname="kliv"), autocommit=True)


class TestStoredPlans:
    def test_a_saved_plan_is_applied_by_id_once(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "blog")
        code, text = kliv(created, "plan", str(created.folder), "--save")
        assert code == 0
        assert "plan id" in text
        plan_id = saved(created)
        code, output = kliv(created, "apply", "--plan", plan_id)
        assert code == 0, output
        assert "✓ applied: 15 changes" in output
        assert created.plan().empty
        code, output = kliv(created, "apply", "--plan", plan_id)
        assert code == 2
        assert "applied already" in output

    def test_unknown_and_malformed_ids_are_refused(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "blog")
        saved(created)  # the control database exists
        code, output = kliv(created, "apply", "--plan", "00000000-0000-4000-8000-000000000000", "--output", "json")
        assert code == 2
        assert "no stored plan" in json.loads(output)["message"]
        assert json.loads(output)["code"] == "plan-unknown"
        assert kliv(created, "apply", "--plan", "'; DROP TABLE x; --")[0] == 2
        code, output = kliv(created, "apply", str(created.folder), "--plan", "x", "--output", "json")
        assert (code, json.loads(output)["code"]) == (1, "usage")  # paths or a plan, not both
        assert kliv(created, "apply")[0] == 1  # neither

    def test_reality_moved_since_the_plan_refuses_and_changes_nothing(
        self, project: Callable[[str | Path], Project]
    ) -> None:
        created = project(ROOT / "examples" / "blog")
        assert kliv(created, "apply", str(created.folder))[0] == 0
        created.edit("Table", "posts", lambda d: d["spec"]["columns"].append({"name": "summary", "type": "text"}))
        plan_id = saved(created)
        with created.connect() as connection:  # someone adds the column by hand meanwhile
            connection.execute("ALTER TABLE posts ADD COLUMN summary integer")
        code, output = kliv(created, "apply", "--plan", plan_id)
        assert code == 2
        assert "reality changed since plan" in output
        with created.connect() as connection:
            row = connection.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'posts'::regclass AND attname = 'summary'"
            ).fetchone()
        assert row == ("integer",)  # untouched

    def test_an_expired_plan_is_refused(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "blog")
        plan_id = saved(created)
        with control(created) as connection:
            connection.execute("UPDATE inventory.plans SET expires_at = now() - interval '1 second' WHERE id = %s",
                               [plan_id])  # fmt: skip
        code, output = kliv(created, "apply", "--plan", plan_id)
        assert code == 2
        assert "expired" in output
        assert not created.plan().empty  # nothing applied

    def test_a_refused_plan_keeps_its_id_for_consent(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "blog")
        assert kliv(created, "apply", str(created.folder))[0] == 0
        created.edit("Table", "posts", lambda d: d["spec"]["columns"].pop())
        plan_id = saved(created)
        code, output = kliv(created, "apply", "--plan", plan_id)
        assert code == 2
        assert "drop column created_at" in output
        assert kliv(created, "apply", "--plan", plan_id, "--allow-data-loss")[0] == 0
        assert created.plan().empty

    def test_stored_specs_and_plans_hold_no_secret_value(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "storefront")
        plan_id = saved(created)
        with control(created) as connection:
            row = connection.execute("SELECT documents::text, plan::text FROM inventory.plans WHERE id = %s",
                                     [plan_id]).fetchone()  # fmt: skip
        assert row is not None
        assert "STRIPE_KEY" in row[0]  # the secret's source is named ...
        assert CANARY not in row[0] + row[1]  # ... its value never stored
        code, output = kliv(created, "apply", "--plan", plan_id)
        assert code == 0, output

    def test_a_failed_apply_that_changed_nothing_gives_the_id_back(
        self, project: Callable[[str | Path], Project]
    ) -> None:
        created = project(ROOT / "examples" / "blog")
        plan_id = saved(created)
        with control(created) as holder:  # another apply of this project holds its lock
            holder.execute("SELECT pg_advisory_lock(hashtext('kliv.apply'), hashtext(%s))",
                           [f"{created.namespace}/blog"])  # fmt: skip
            code, output = kliv(created, "apply", "--plan", plan_id)
            assert code == 3
            assert "another apply" in output
        assert kliv(created, "apply", "--plan", plan_id)[0] == 0

    def test_a_damaged_stored_row_is_refused(self, project: Callable[[str | Path], Project]) -> None:
        """The stored specs are checked against their digest: a row changed afterwards is not applied."""
        created = project(ROOT / "examples" / "blog")
        plan_id = saved(created)
        with control(created) as connection:
            connection.execute(
                "UPDATE inventory.plans SET documents = replace(documents::text, 'posts', 'psts')::json WHERE id = %s",
                [plan_id],
            )
        code, output = kliv(created, "apply", "--plan", plan_id, "--output", "json")
        assert (code, json.loads(output)["code"]) == (2, "plan-moved")
        assert "altered" in json.loads(output)["message"]
        assert not created.plan().empty  # nothing applied

    def test_an_id_is_claimed_by_one_caller_only(self, project: Callable[[str | Path], Project]) -> None:
        """Two processes applying one id: the conditional UPDATE lets exactly one of them claim it."""
        import threading

        from kliv.stacks import stored_plans

        created = project(ROOT / "examples" / "blog")
        plan_id = saved(created)
        won: list[bool] = []
        barrier = threading.Barrier(4)

        def claim() -> None:
            with control(created) as connection:
                barrier.wait()
                won.append(stored_plans.claim(connection, plan_id))

        threads = [threading.Thread(target=claim) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(won) == [False, False, False, True]
