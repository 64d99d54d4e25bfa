"""The native engine's pure parts: names, types, widening, and plans diffed without a server."""

from __future__ import annotations

import pytest
from spec_validation import Validate

from kliv.specs.column_types import parse_column_type
from kliv.stacks.contract import Record
from kliv.stacks.plans import Plan
from kliv.stacks.postgres import naming
from kliv.stacks.postgres.catalog import ObservedDatabase
from kliv.stacks.postgres.desired import desired_state, format_type, sql_type
from kliv.stacks.postgres.diffing import Applied, ServerState, diff, widening

TABLES = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: authors}
spec:
  projectRef: {name: demo}
  columns:
    - {name: id, type: uuid, primaryKey: true}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: books}
spec:
  projectRef: {name: demo}
  columns:
    - {name: id, type: bigint, primaryKey: true, identity: always}
    - {name: author_id, type: uuid, references: {table: authors}}
    - {name: state, type: post_status, nullable: false, default: "'draft'"}
  indexes: [{columns: [author_id]}]
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: books-read}
spec: {projectRef: {name: demo}, table: books, command: select, roles: [anon], using: "state = 'published'"}
"""


def _plan(validate: Validate, text: str = TABLES, applied: Applied | None = None) -> Plan:
    validation = validate(text)
    assert validation.valid, [(p.path, p.message) for p in validation.errors]
    [group] = [g for g in validation.specs.projects.values() if g.project]
    return diff(desired_state(group), ObservedDatabase(False), ServerState(False, set()), applied or Applied())


class TestNaming:
    """Physical names fit Postgres' 63 bytes."""

    def test_role_prefix_short(self) -> None:
        """Short database names are the role prefix."""
        assert naming.role("blog", "service_role") == "blog_service_role"

    def test_role_prefix_long(self) -> None:
        """Long database names get a hashed prefix; every role still fits and stays distinct."""
        database = "a" * 63
        roles = {naming.role(database, s) for s in naming.ROLE_SUFFIXES}
        assert len(roles) == 3
        assert all(len(r.encode()) <= 63 for r in roles)
        assert naming.role_prefix(database) != naming.role_prefix("a" * 62)

    def test_fit(self) -> None:
        """Derived names longer than 63 bytes are shortened deterministically."""
        long = naming.index("t" * 40, ["c" * 30], unique_=False)
        assert len(long) <= 63
        assert long == naming.index("t" * 40, ["c" * 30], unique_=False)


class TestTypes:
    """DDL and catalog spellings of column types."""

    @pytest.mark.parametrize(
        ("spec", "ddl", "catalog"),
        [
            ("varchar(40)", "varchar(40)", "character varying(40)"),
            ("timestamptz(3)", "timestamptz(3)", "timestamp(3) with time zone"),
            ("numeric(12,2)", "numeric(12,2)", "numeric(12,2)"),
            ("text[]", "text[]", "text[]"),
            ("post_status", '"post_status"', "post_status"),
        ],
    )
    def test_spellings(self, spec: str, ddl: str, catalog: str) -> None:
        """sql_type feeds DDL; format_type matches what the catalog prints."""
        parsed = parse_column_type(spec)
        assert (sql_type(parsed), format_type(parsed)) == (ddl, catalog)

    @pytest.mark.parametrize(
        ("old", "new", "safe"),
        [
            ("integer", "bigint", True),
            ("bigint", "integer", False),
            ("character varying(20)", "character varying(50)", True),
            ("character varying(50)", "character varying(20)", False),
            ("character varying(20)", "text", True),
            ("text", "character varying(5)", False),
            ("numeric(10,2)", "numeric(12,2)", True),
            ("numeric(12,2)", "numeric(12,4)", False),
            ("integer", "numeric", True),
            ("real", "double precision", True),
            ("timestamp without time zone", "timestamp with time zone", False),
            ("text", "integer", False),
        ],
    )
    def test_widening(self, old: str, new: str, safe: bool) -> None:
        """Only changes that keep every value are safe."""
        assert widening(old, new) is safe


class TestPlanFromEmpty:
    """A plan against an empty server."""

    def test_order(self, validate: Validate) -> None:
        """Database first, then roles, bootstrap, enums, tables, keys, foreign keys, indexes, policies."""
        steps = [s.sql for s in _plan(validate).steps]
        assert steps[0] == 'CREATE DATABASE "demo"'
        position = {name: next(i for i, sql in enumerate(steps) if sql.startswith(name)) for name in (
            "CREATE ROLE", "CREATE SCHEMA IF NOT EXISTS auth", "CREATE TYPE", 'CREATE TABLE "authors"',
            'CREATE TABLE "books"', 'ALTER TABLE "books" ADD CONSTRAINT "books_author_id_fkey"', "CREATE INDEX",
            "CREATE POLICY", "CREATE TRIGGER",
        )}  # fmt: skip
        assert list(position.values()) == sorted(position.values())

    def test_everything_is_created_and_safe(self, validate: Validate) -> None:
        """From empty, every resource is a safe create; nothing is gated."""
        plan = _plan(validate)
        assert {(c.action, c.risk) for c in plan.changes} == {("create", "safe")}
        assert plan.refused(allow_data_loss=False) == []

    def test_expressions_are_embedded_with_a_newline(self, validate: Validate) -> None:
        """Fragments go in as `(<text>\\n)`, so a trailing `--` comment cannot swallow SQL."""
        sql = next(s.sql for s in _plan(validate).steps if s.sql.startswith("CREATE POLICY"))
        assert "USING (state = 'published'\n)" in sql
        assert 'TO "demo_anon"' in sql


class TestRemovedTables:
    """Deleting a Table spec honours its deletionPolicy."""

    def test_retain_forgets(self, validate: Validate) -> None:
        """Retain: a delete with no SQL, safe."""
        applied = Applied(resources={"Table/default/old": Record("Table", "old", "old", "hash", True)})
        [change] = [c for c in _plan(validate, applied=applied).changes if c.resource == "Table/default/old"]
        assert (change.action, change.risk, change.steps) == ("delete", "safe", [])
        assert "stay" in change.summary[0]
