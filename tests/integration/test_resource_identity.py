"""Resource identity is per project: two projects of one namespace may both hold `Table/<ns>/notes`.

The failure the review found: the inventory keyed resources by (namespace, kind,
name), so the second of two CLI project folders that each had `Table notes`
(or `ProjectSecret stripe-key`) failed after its transaction committed, every
later plan showed spurious updates, the first project was locked out, and a
Bucket could pass another project's claim as its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from postgres_projects import TEST_KEY, Project
from typer.testing import CliRunner

from kliv.cli import app
from kliv.stacks.postgres import inventory, outbox

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: PROJECT}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: notes}
spec:
  projectRef: {name: PROJECT}
  columns:
    - {name: id, type: uuid, primaryKey: true, default: gen_random_uuid()}
    - {name: body, type: text}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: notes-read}
spec:
  projectRef: {name: PROJECT}
  table: notes
  command: select
  using: "true"
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: ProjectSecret
metadata: {name: stripe-key}
spec:
  projectRef: {name: PROJECT}
  generate: {length: 24}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Bucket
metadata: {name: images}
spec:
  projectRef: {name: PROJECT}
"""


def _pair(project: Callable[..., Project]) -> tuple[Project, Project]:
    alpha = project(SPECS.replace("PROJECT", "alpha")).use()
    beta = project(SPECS.replace("PROJECT", "beta"), namespace=alpha.namespace).use()
    beta.buckets_dir = alpha.buckets_dir  # one bucket backend, as on one platform
    return alpha, beta.use()


def _inventory(created: Project) -> list[tuple[str, str, str]]:
    with psycopg.connect(psycopg.conninfo.make_conninfo(created.url, dbname="kliv")) as control:
        rows = control.execute(
            "SELECT project, kind, name FROM inventory.resources WHERE namespace = %s ORDER BY 1, 2, 3",
            [created.namespace],
        ).fetchall()
    return [tuple(row) for row in rows]


class TestTwoProjectsOneNamespace:
    def test_both_apply_and_replan_empty(self, project: Callable[..., Project]) -> None:
        alpha, beta = _pair(project)
        alpha.apply()
        beta.apply()
        assert alpha.plan().empty
        assert beta.plan().empty
        kinds = [("Bucket", "images"), ("Project", "{}"), ("ProjectSecret", "stripe-key"), ("Table", "notes"),
                 ("TablePolicy", "notes-read")]  # fmt: skip
        expected = [(p, k, n.format(p)) for p in ("alpha", "beta") for k, n in kinds]
        assert _inventory(alpha) == expected

    def test_each_keeps_its_own_record_when_the_other_changes(self, project: Callable[..., Project]) -> None:
        alpha, beta = _pair(project)
        alpha.apply()
        beta.apply()

        def widen(document: dict[str, Any]) -> None:
            document["spec"]["columns"].append({"name": "title", "type": "text"})

        beta.edit("Table", "notes", widen)
        assert [c.resource for c in beta.plan().changes if c.action != "noop"] == [f"Table/{beta.namespace}/notes"]
        beta.apply()
        assert alpha.plan().empty
        assert beta.plan().empty
        beta.edit("TablePolicy", "notes-read", lambda d: d["spec"].update(using="body is not null"))
        beta.apply()
        assert alpha.plan().empty

    def test_events_name_their_project(self, project: Callable[..., Project]) -> None:
        alpha, beta = _pair(project)
        alpha.apply()
        beta.apply()
        for created, name in ((alpha, "alpha"), (beta, "beta")):
            bodies = [json.loads(r.body) for r in outbox.read(created.url, f"{created.namespace}/{name}", limit=None)]
            tables = [b for b in bodies if b["subject"] == f"Table/{created.namespace}/notes"]
            assert [b["source"] for b in tables] == [f"/kliv/namespaces/{created.namespace}/projects/{name}"]

    def test_a_bucket_named_like_another_projects_is_refused(self, project: Callable[..., Project]) -> None:
        """Same kind, namespace and metadata.name, same physical name: the other project's claim holds."""
        alpha, beta = _pair(project)
        alpha.apply()
        bucket = f"{alpha.database.replace('_', '-')}-shared"
        for created in (alpha, beta):
            created.edit("Bucket", "images", lambda d: d["spec"].update(name=bucket))
        alpha.apply()
        prepared = beta.prepare()
        [problem] = prepared.problems.values()
        assert f"already claimed by Bucket/{alpha.namespace}/images (Project {alpha.namespace}/alpha)" in (
            problem.message
        )

    def test_cli_applies_two_folders_with_the_same_names(self, project: Callable[..., Project]) -> None:
        alpha, beta = _pair(project)
        result = CliRunner().invoke(
            app,
            ["apply", str(alpha.folder), str(beta.folder), "--output", "json"],
            env={"KLIV_DATABASE_URL": alpha.url, "KLIV_CONFIG": "/nonexistent",
                 "KLIV_BUCKETS_DIR": str(alpha.buckets_dir), "KLIV_SECRET_KEY": TEST_KEY},
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert [p["project"] for p in json.loads(result.output)["plans"]] == [
            f"Project/{alpha.namespace}/alpha",
            f"Project/{alpha.namespace}/beta",
        ]
        assert alpha.plan().empty
        assert beta.plan().empty


class TestInventoryMigration:
    """A control database of the previous layout is brought up to date, its records kept."""

    V1 = """
    CREATE SCHEMA inventory;
    CREATE TABLE inventory.resources (
      namespace text NOT NULL, kind text NOT NULL, name text NOT NULL, project text NOT NULL,
      spec_hash text NOT NULL, physical text NOT NULL, retain boolean NOT NULL DEFAULT true,
      applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (namespace, kind, name));
    INSERT INTO inventory.resources (namespace, kind, name, project, spec_hash, physical)
      VALUES ('default', 'Table', 'notes', 'alpha', 'h1', 'notes');
    """

    @pytest.fixture
    def old_control(self, server_url: str) -> Any:
        name = f"kliv_v1_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            with psycopg.connect(psycopg.conninfo.make_conninfo(server_url, dbname=name), autocommit=True) as db:
                db.execute(self.V1)
                yield db
        finally:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def test_migrated_in_place(self, old_control: psycopg.Connection[Any]) -> None:
        assert not inventory.has_schema(old_control)
        inventory.ensure_schema(old_control)
        assert inventory.has_schema(old_control)
        key = old_control.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'inventory.resources'::regclass "
            "AND contype = 'p'"
        ).fetchone()
        assert key == ("PRIMARY KEY (namespace, project, kind, name)",)
        old_control.execute(
            "INSERT INTO inventory.resources (namespace, kind, name, project, spec_hash, physical) "
            "VALUES ('default', 'Table', 'notes', 'beta', 'h2', 'notes')"
        )
        assert old_control.execute("SELECT count(*) FROM inventory.resources").fetchone() == (2,)
        inventory.ensure_schema(old_control)  # idempotent
        assert inventory.has_schema(old_control)

    def test_control_database_closed_to_other_logins(self, old_control: psycopg.Connection[Any]) -> None:
        """Any login could connect and `LISTEN kliv_outbox`, whose payloads name every project."""
        inventory.ensure_schema(old_control)
        row = old_control.execute(
            "SELECT has_database_privilege('public', current_database(), 'CONNECT'), "
            "has_database_privilege('public', current_database(), 'TEMPORARY')"
        ).fetchone()
        assert row == (False, False)
        assert old_control.execute("SELECT has_schema_privilege('public', 'public', 'CREATE')").fetchone() == (False,)
        login = f"login_{uuid.uuid4().hex[:10]}"
        old_control.execute(f'CREATE ROLE "{login}" LOGIN')
        try:
            url = psycopg.conninfo.make_conninfo(old_control.info.dsn, user=login)
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(url).close()
        finally:
            old_control.execute(f'DROP ROLE "{login}"')
