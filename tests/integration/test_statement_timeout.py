"""A project database's statement_timeout really applies to the application's queries.

The review found allowed fragments that exhaust the shared server: an `EXISTS`
over a 5-way cross join took 4.9 s per anonymous query on 40 rows. The
fragment checker now bounds what it can (tables per sub-query, sizes), and the
database's default `statement_timeout` bounds the rest. It is set on the
database, not on the NOLOGIN project roles: a role's own settings apply only at
login, never after `SET ROLE`, which is how every application query runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import psycopg.errors
import pytest
from postgres_projects import Project

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: slow}
spec:
  database: {statementTimeout: 300ms}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: items}
spec:
  projectRef: {name: slow}
  columns:
    - {name: id, type: bigint, primaryKey: true, identity: always}
    - {name: label, type: text, nullable: false}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: words}
spec:
  projectRef: {name: slow}
  columns:
    - {name: id, type: bigint, primaryKey: true, identity: always}
    - {name: word, type: text, nullable: false}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: words-read}
spec:
  projectRef: {name: slow}
  table: words
  command: select
  roles: [anon]
  using: "true"
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: items-read}
spec:
  projectRef: {name: slow}
  table: items
  command: select
  roles: [anon]
  # Accepted by the checker (3 tables), and slow on purpose: 200 rows make 8 million per row.
  using: "exists (select 1 from words a, words b, words c where a.word || b.word || c.word = label || 'x')"
"""


@pytest.fixture
def slow(project: Callable[[str | Path], Project]) -> Project:
    created = project(SPECS)
    created.apply()
    with created.connect() as admin:
        admin.execute("INSERT INTO items (label) SELECT 'item ' || g FROM generate_series(1, 200) g")
        admin.execute("INSERT INTO words (word) SELECT 'word ' || g FROM generate_series(1, 200) g")
    return created


def _cancel_after(seconds: float, project: Project, pid: int) -> threading.Timer:
    """A watchdog, so that a timeout that does not apply fails the test instead of hanging it."""

    def cancel() -> None:
        with project.connect() as admin:
            admin.execute("SELECT pg_cancel_backend(%s)", [pid])

    timer = threading.Timer(seconds, cancel)
    timer.start()
    return timer


class TestStatementTimeout:
    def test_an_anonymous_query_is_cut_off_after_set_role(self, slow: Project) -> None:
        with slow.login("anon") as login, login.connect() as connection:
            connection.execute(f'SET ROLE "{slow.role("anon")}"')
            watchdog = _cancel_after(10, slow, connection.info.backend_pid)
            try:
                with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
                    connection.execute("SELECT count(*) FROM items").fetchone()
            finally:
                watchdog.cancel()

    def test_set_on_the_database_and_repaired_as_drift(self, slow: Project) -> None:
        with slow.connect() as admin:
            [setting] = admin.execute(
                "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                "WHERE d.datname = %s AND s.setrole = 0",
                [slow.database],
            ).fetchone() or [None]
            assert setting == ["statement_timeout=300ms"]
            admin.execute(f'ALTER DATABASE "{slow.database}" RESET statement_timeout')
        [change] = [c for c in slow.plan().changes if c.action != "noop"]
        assert change.summary == ["set the database's statement_timeout to 300ms"]
        slow.apply()
        assert slow.plan().empty

    def test_changed_in_the_spec(self, slow: Project) -> None:
        slow.edit("Project", "slow", lambda d: d["spec"]["database"].update(statementTimeout="2s"))
        [change] = [c for c in slow.plan().changes if c.action != "noop"]
        assert [s.sql for s in change.steps] == [
            f"ALTER DATABASE \"{slow.database}\" SET statement_timeout = E'2000ms'",
            f"ALTER ROLE \"{slow.database}_authenticator\" SET statement_timeout = E'2000ms'",
        ]
        slow.apply()
        with slow.login("anon") as login, login.connect() as connection:
            assert connection.execute("SHOW statement_timeout").fetchone() == ("2s",)
