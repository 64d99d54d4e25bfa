"""The control database's numbered migrations: each applied once, in order, from any earlier layout."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from kliv.stacks.postgres import inventory, migrations


@pytest.fixture
def scratch(server_url: str) -> Iterator[psycopg.Connection[Any]]:
    name = f"kliv_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(server_url, dbname=name), autocommit=True) as db:
            yield db
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class TestControlMigrations:
    def test_a_new_database_gets_every_migration_once(self, scratch: psycopg.Connection[Any]) -> None:
        assert migrations.current(scratch) == 0
        assert not inventory.has_schema(scratch)
        assert migrations.migrate(scratch) == [m.version for m in migrations.MIGRATIONS]
        assert migrations.migrate(scratch) == []  # idempotent
        assert inventory.has_schema(scratch)
        history = scratch.execute("SELECT version, description FROM inventory.migrations ORDER BY version").fetchall()
        assert [row[0] for row in history] == list(range(1, migrations.LATEST + 1))
        assert all(row[1] for row in history)

    def test_the_unnumbered_v3_layout_is_brought_up_keeping_its_rows(self, scratch: psycopg.Connection[Any]) -> None:
        for migration in migrations.MIGRATIONS[:3]:
            scratch.execute(migration.sql)  # type: ignore[arg-type]
        scratch.execute("COMMENT ON SCHEMA inventory IS 'kliv control v3'")  # the marker before numbering
        scratch.execute("INSERT INTO inventory.projects (namespace, name, database) VALUES ('default', 'blog', 'blog')")
        assert migrations.current(scratch) == 0
        assert migrations.migrate(scratch) == list(range(1, migrations.LATEST + 1))  # each idempotent
        assert scratch.execute("SELECT count(*) FROM inventory.projects").fetchone() == (1,)  # data kept
        assert scratch.execute("SELECT to_regclass('inventory.plans') IS NOT NULL").fetchone() == (True,)

    def test_a_database_at_an_older_number_gets_the_newer_migrations(self, scratch: psycopg.Connection[Any]) -> None:
        migrations.migrate(scratch)
        scratch.execute("DROP TABLE inventory.statuses, inventory.fingerprints")
        scratch.execute("DROP SCHEMA functions CASCADE")
        scratch.execute("DELETE FROM inventory.migrations WHERE version >= 5")
        assert migrations.current(scratch) == 4
        assert migrations.migrate(scratch) == [5, 6, 7]
        assert scratch.execute("SELECT to_regclass('inventory.statuses') IS NOT NULL").fetchone() == (True,)
        assert scratch.execute("SELECT to_regclass('inventory.fingerprints') IS NOT NULL").fetchone() == (True,)
        assert scratch.execute("SELECT to_regclass('functions.versions') IS NOT NULL").fetchone() == (True,)
