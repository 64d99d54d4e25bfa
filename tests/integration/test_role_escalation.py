"""A login holding only project roles never reaches superuser code (SECURITY.md, boundary 1).

The attack the review found: `audit.record()` was `SECURITY DEFINER`, owned by
the superuser, with `search_path = pg_catalog, public`. Postgres searches the
caller's `pg_temp` first for types unless the path lists it, so a caller could
create `pg_temp.jsonb` as a domain whose check function then ran as the
definer, on every audited insert. Each test here is that attack, run as a
non-superuser login that holds one project role, the way an application's
database user would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
from postgres_projects import Project

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: escalation}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: notes}
spec:
  projectRef: {name: escalation}
  columns:
    - {name: id, type: uuid, primaryKey: true, default: gen_random_uuid()}
    - {name: body, type: text, nullable: false}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: notes-insert}
spec:
  projectRef: {name: escalation}
  table: notes
  command: insert
  roles: [anon, authenticated]
  withCheck: "length(body) < 100 and (auth.uid() is null or auth.uid() is not null)"
"""

ROLES = ("anon", "authenticated", "service_role")


def _shadow(connection: psycopg.Connection[Any], login: str, types: tuple[str, ...]) -> None:
    """The payload: domains in pg_temp that shadow built-in types, whose check makes the login superuser."""
    connection.execute(
        f"""CREATE FUNCTION pg_temp.escalate(anyelement) RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN EXECUTE 'ALTER ROLE "{login}" SUPERUSER'; RETURN true; END $$"""
    )
    for name in types:
        connection.execute(f"CREATE DOMAIN pg_temp.{name} AS pg_catalog.{name} CHECK (pg_temp.escalate(VALUE))")


@pytest.fixture
def escalation(project: Callable[[str | Path], Project]) -> Project:
    created = project(SPECS)
    created.apply()
    return created


class TestNoTemporaryObjects:
    """Project roles hold no TEMPORARY: the foothold of every pg_temp shadowing attack is gone."""

    @pytest.mark.parametrize("suffix", ROLES)
    def test_project_role_cannot_create_in_pg_temp(self, escalation: Project, suffix: str) -> None:
        with escalation.login(suffix) as login, login.connect() as connection:
            connection.execute(f'SET ROLE "{escalation.role(suffix)}"')
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="temporary"):
                connection.execute("CREATE TEMP TABLE t (x int)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="temporary"):
                connection.execute("CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="temporary"):
                connection.execute("CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb")
            # What the login itself may do is no more: it holds no TEMPORARY either.
            connection.execute("RESET ROLE")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute("CREATE TEMP TABLE t (x int)")

    def test_no_project_role_holds_temporary_or_create(self, escalation: Project) -> None:
        with escalation.connect() as admin:
            for suffix in (*ROLES, "auditor"):
                role = escalation.role(suffix)
                row = admin.execute(
                    "SELECT has_database_privilege(%s, %s, 'TEMPORARY'), has_database_privilege(%s, %s, 'CREATE'),"
                    " has_schema_privilege(%s, 'public', 'CREATE')",
                    [role, escalation.database, role, escalation.database, role],
                ).fetchone()
                assert row == (False, False, False), role


class TestShadowedTypesNeverRunAsDefiner:
    """Even where a platform grants TEMPORARY, a shadowing type never runs with more rights than its author."""

    @pytest.mark.parametrize("suffix", ROLES)
    def test_audited_insert_with_shadowed_jsonb_gains_nothing(self, escalation: Project, suffix: str) -> None:
        with escalation.connect() as admin:
            admin.execute(f'GRANT TEMPORARY ON DATABASE "{escalation.database}" TO "{escalation.role(suffix)}"')
        with escalation.login(suffix) as login, login.connect() as connection:
            connection.execute(f'SET ROLE "{escalation.role(suffix)}"')
            _shadow(connection, login.name, ("jsonb", "text", "uuid"))
            connection.execute(
                "SELECT set_config('request.jwt.claims', %s, false)",
                ['{"sub": "' + "0" * 8 + '-0000-4000-8000-000000000001"}'],
            )
            connection.execute("INSERT INTO notes (body) VALUES ('hello')")
            assert not login.is_superuser()
        with escalation.connect() as admin:
            row = admin.execute(
                "SELECT operation, new_row ->> 'body' FROM audit.log ORDER BY id DESC LIMIT 1"
            ).fetchone()
            assert row == ("INSERT", "hello")

    def test_auth_helpers_ignore_shadowed_types(self, escalation: Project) -> None:
        """`auth.jwt()`'s cast and `auth.uid()`'s are spelled with their schema: a pg_temp type never applies."""
        with escalation.connect() as admin:
            admin.execute(
                f'GRANT TEMPORARY ON DATABASE "{escalation.database}" TO "{escalation.role("authenticated")}"'
            )
        with escalation.login("authenticated") as login, login.connect() as connection:
            connection.execute(f'SET ROLE "{escalation.role("authenticated")}"')
            _shadow(connection, login.name, ("jsonb", "uuid", "text"))
            claims = '{"sub": "00000000-0000-4000-8000-000000000002", "role": "x"}'
            connection.execute("SELECT set_config('request.jwt.claims', %s, false)", [claims])
            row = connection.execute(
                "SELECT auth.uid()::pg_catalog.text, auth.role(), auth.jwt() IS NOT NULL"
            ).fetchone()
            assert row == ("00000000-0000-4000-8000-000000000002", "x", True)
            assert not login.is_superuser()


class TestDefinerFunctions:
    """The class, not the instance: every SECURITY DEFINER function kliv installs is safe by construction."""

    def test_every_definer_function_is_owned_by_a_non_superuser_and_pins_search_path(self, escalation: Project) -> None:
        with escalation.connect() as admin:
            rows = admin.execute(
                "SELECT p.oid::regprocedure::text, r.rolname, r.rolsuper, r.rolcanlogin, p.proconfig "
                "FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner "
                "JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            ).fetchall()
        assert rows, "audit.record() is a definer function"
        for name, owner, superuser, can_login, config in rows:
            assert not superuser, (name, owner)
            assert not can_login, (name, owner)
            assert "search_path=pg_catalog, pg_temp" in (config or []), (name, config)

    def test_auditor_may_only_insert_audit_rows(self, escalation: Project) -> None:
        auditor = escalation.role("auditor")
        with escalation.connect() as admin:
            privileges = admin.execute(
                "SELECT has_table_privilege(%s, 'audit.log', 'INSERT'), has_table_privilege(%s, 'audit.log', 'SELECT'),"
                " has_table_privilege(%s, 'public.notes', 'SELECT'), has_database_privilege(%s, %s, 'CONNECT'),"
                " (SELECT count(*) FROM pg_auth_members WHERE roleid = (SELECT oid FROM pg_roles WHERE rolname = %s))",
                [auditor, auditor, auditor, auditor, escalation.database, auditor],
            ).fetchone()
        assert privileges == (True, False, False, False, 0)

    def test_a_database_bootstrapped_before_the_fix_is_repaired(self, escalation: Project) -> None:
        """The v2 bootstrap's state (superuser owner, TEMPORARY granted): the next plan re-runs the bootstrap."""
        authenticated = escalation.role("authenticated")
        with escalation.connect() as admin:
            admin.execute("ALTER FUNCTION audit.record() OWNER TO CURRENT_USER")
            admin.execute("ALTER FUNCTION audit.record() SET search_path = pg_catalog, public")
            admin.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{escalation.database}" TO "{authenticated}"')
            admin.execute("COMMENT ON SCHEMA audit IS 'kliv bootstrap v2'")
        plan = escalation.plan()
        assert [c.resource for c in plan.changes if c.action != "noop"] == [
            f"Project/{escalation.namespace}/escalation"
        ]
        escalation.apply()
        assert escalation.plan().empty
        with escalation.login("authenticated") as login, login.connect() as connection:
            connection.execute(f'SET ROLE "{authenticated}"')
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute("CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb")
        with escalation.connect() as admin:
            owner = admin.execute("SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'record'").fetchone()
        assert owner == (f'"{escalation.role("auditor")}"',) or owner == (escalation.role("auditor"),)


class TestAuditorLifecycle:
    def test_dropped_with_the_project(self, escalation: Project) -> None:
        escalation.engine.drop_project(escalation.database)
        with psycopg.connect(escalation.url) as admin:
            left = admin.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                [[escalation.role(s) for s in (*ROLES, "auditor")]],
            ).fetchall()
        assert left == []
