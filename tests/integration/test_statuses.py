"""`kliv apply` records every object's status in the control database, as the operator does.

Ready with outputs after an apply; only changed rows written again; a refusal says so on
the refused object and makes the rest wait; a removed object loses its row.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from postgres_projects import ROOT, TEST_KEY, Project
from typer.testing import CliRunner

from kliv.cli import app
from kliv.stacks import statuses


def kliv(created: Project, *args: str) -> int:
    env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent"}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code


def stored(created: Project, project: str = "blog") -> dict[tuple[str, str], dict[str, Any]]:
    conninfo = psycopg.conninfo.make_conninfo(created.url, dbname="kliv")
    with psycopg.connect(conninfo, autocommit=True) as control:
        return {(s["kind"], s["name"]): s for s in statuses.load(control, created.namespace, project)}


def reasons(status: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["type"], c["status"], c["reason"]) for c in status["conditions"]]


class TestStatusesFromTheCli:
    def test_apply_records_ready_objects_with_outputs_once(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "blog")
        assert kliv(created, "apply", str(created.folder)) == 0
        first = stored(created)
        assert len(first) == 15
        assert all(reasons(s) == [("Ready", "True", "Available"), ("Synced", "True", "ReconcileSuccess")]
                   for s in first.values())  # fmt: skip
        assert first[("Table", "posts")]["outputs"]["table"] == "public.posts"
        assert first[("Table", "posts")]["updatedBy"].startswith("kliv apply")
        assert kliv(created, "apply", str(created.folder)) == 0
        again = stored(created)
        assert [s["updatedAt"] for s in again.values()] == [s["updatedAt"] for s in first.values()]  # not rewritten

    def test_a_refusal_is_on_the_refused_object_and_the_rest_waits(
        self, project: Callable[[str | Path], Project]
    ) -> None:
        created = project(ROOT / "examples" / "blog")
        assert kliv(created, "apply", str(created.folder)) == 0
        ready_since = stored(created)[("Table", "posts")]["conditions"][0]["lastTransitionTime"]
        created.edit("Table", "posts", lambda d: d["spec"]["columns"].pop())
        assert kliv(created, "apply", str(created.folder)) == 2
        found = stored(created)
        posts = found[("Table", "posts")]
        assert reasons(posts)[0] == ("Ready", "False", "DataLossRefused")
        assert "drop column created_at" in posts["conditions"][0]["message"]
        assert posts["conditions"][0]["lastTransitionTime"] >= ready_since
        assert reasons(found[("Table", "profiles")])[0] == ("Ready", "False", "WaitingForDependency")
        assert kliv(created, "apply", str(created.folder), "--allow-data-loss") == 0
        assert reasons(stored(created)[("Table", "posts")])[0] == ("Ready", "True", "Available")

    def test_a_removed_object_loses_its_status(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "blog")
        assert kliv(created, "apply", str(created.folder)) == 0
        created.write([d for d in created.documents() if d["metadata"]["name"] != "posts-author-delete"])
        assert kliv(created, "apply", str(created.folder)) == 0
        assert ("TablePolicy", "posts-author-delete") not in stored(created)
        assert len(stored(created)) == 14

    def test_a_function_has_its_status(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "storefront")
        env_code = CliRunner().invoke(
            app, ["apply", str(created.folder)],
            env={"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY,
                 "KLIV_BUCKETS_DIR": str(created.buckets_dir), "STRIPE_KEY": "sk_test_value_12345"},
        ).exit_code  # fmt: skip
        assert env_code == 0
        found = stored(created, "storefront")
        assert reasons(found[("Function", "checkout")])[0] == ("Ready", "True", "Available")
        assert reasons(found[("Table", "orders")])[0] == ("Ready", "True", "Available")
