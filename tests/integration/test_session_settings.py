"""kliv's sessions pin `standard_conforming_strings=on`, whatever the server, database or PGOPTIONS say.

The fragment checker parses specs as pglast does, with backslashes literal in
`'...'`. The attack the review found: with the setting off, the accepted
default below is one string to the checker and, to Postgres, a call to
`pg_read_file` that `ALTER TABLE ... ADD COLUMN` evaluates as the superuser for
every existing row, copying a server file into a column the app can read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres_projects import Project

from kliv.stacks.postgres import sessions

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: conforming}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata:
  name: notes
  annotations: {cloud.kliv.dev/rls-disabled-reason: "a test table without policies"}
spec:
  projectRef: {name: conforming}
  rowLevelSecurity: false
  columns:
    - {name: id, type: uuid, primaryKey: true, default: gen_random_uuid()}
"""
# To pglast (and to Postgres with the setting on): '\' || '<text>'. With it off: a file read.
SMUGGLED = "'\\' || ' || pg_read_file($q$/etc/hostname$q$) -- '"
AS_WRITTEN = "\\ || pg_read_file($q$/etc/hostname$q$) -- "


def _add_smuggling_column(project: Project) -> None:
    def change(document: dict[str, Any]) -> None:
        document["spec"]["columns"].append({"name": "leak", "type": "text", "default": SMUGGLED})

    project.edit("Table", "notes", change)


@pytest.fixture
def conforming(project: Callable[[str | Path], Project]) -> Project:
    created = project(SPECS)
    created.apply()
    with created.connect() as admin:
        admin.execute("INSERT INTO notes DEFAULT VALUES")
    return created


def _leaked(project: Project) -> list[str]:
    with project.connect() as admin:
        admin.execute("SET standard_conforming_strings = on")
        return [row[0] for row in admin.execute("SELECT leak FROM notes")]


class TestStandardConformingStrings:
    def test_database_set_off(self, conforming: Project) -> None:
        with conforming.connect() as admin:
            admin.execute(f'ALTER DATABASE "{conforming.database}" SET standard_conforming_strings = off')
        conforming.engine.close()  # new sessions get the database's settings
        _add_smuggling_column(conforming)
        conforming.apply()
        assert _leaked(conforming) == [AS_WRITTEN]

    def test_pgoptions_set_off(self, conforming: Project, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PGOPTIONS", "-c standard_conforming_strings=off")
        conforming.engine.close()  # connect afresh, with the variable set
        _add_smuggling_column(conforming)
        conforming.apply()
        assert _leaked(conforming) == [AS_WRITTEN]

    def test_url_options_set_off(self, conforming: Project) -> None:
        """Options in the admin URL are kept, but the pinned settings come after them and win."""
        url = psycopg.conninfo.make_conninfo(conforming.url, options="-c standard_conforming_strings=off")
        with sessions.connect(url) as connection:
            assert connection.execute("SHOW standard_conforming_strings").fetchone() == ("on",)
        from kliv.stacks import PostgresEngine

        conforming.engine.close()
        conforming.engine = PostgresEngine(url)
        _add_smuggling_column(conforming)
        conforming.apply()
        assert _leaked(conforming) == [AS_WRITTEN]

    def test_server_set_off(self, conforming: Project, embedded_url: str) -> None:
        """The whole server set off (on the throw-away embedded server only: ALTER SYSTEM is server-wide)."""
        if conforming.url != embedded_url:
            pytest.skip("ALTER SYSTEM would change the shared server for everyone: run on the embedded one")
        with conforming.connect() as admin:
            admin.execute("ALTER SYSTEM SET standard_conforming_strings = off")
            admin.execute("SELECT pg_reload_conf()")
        try:
            conforming.engine.close()
            with psycopg.connect(conforming.url, autocommit=True) as plain:
                assert plain.execute("SHOW standard_conforming_strings").fetchone() == ("off",)
            _add_smuggling_column(conforming)
            conforming.apply()
            assert _leaked(conforming) == [AS_WRITTEN]
        finally:
            with conforming.connect() as admin:
                admin.execute("ALTER SYSTEM RESET standard_conforming_strings")
                admin.execute("SELECT pg_reload_conf()")

    def test_every_kliv_session_pins_it(self, conforming: Project) -> None:
        with conforming.connect() as admin:
            admin.execute(f'ALTER DATABASE "{conforming.database}" SET standard_conforming_strings = off')
            admin.execute(f'ALTER DATABASE "{conforming.database}" SET statement_timeout = 1')
        with sessions.connect(conforming.url, conforming.database) as connection:
            row = connection.execute("SHOW standard_conforming_strings").fetchone()
            assert row == ("on",)
            assert connection.execute("SHOW statement_timeout").fetchone() == ("0",)
