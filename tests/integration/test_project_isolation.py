"""Two projects on one server: one project's roles get nothing in the other's database.

Project A is the blog example, project B the saas example, both applied to the
same server with their own database and roles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
from postgres_projects import ROOT, Project, as_user

ROLES = ("anon", "authenticated", "service_role")
SUB = "00000000-0000-4000-8000-0000000a0001"


@dataclasses.dataclass
class TwoProjects:
    """Projects A and B applied side by side, with a superuser connection to B's database."""

    a: Project
    b: Project
    in_b: psycopg.Connection[Any]

    def scalar(self, sql: str, params: list[Any]) -> Any:
        row = self.in_b.execute(sql, params).fetchone()
        assert row is not None
        return row[0]

    def has(self, kind: str, role: str, target: str, privilege: str) -> Any:
        """``has_<kind>_privilege(role, target, privilege)`` evaluated in B's database."""
        return self.scalar(f"SELECT has_{kind}_privilege(%s, %s, %s)", [role, target, privilege])

    def b_tables(self) -> list[str]:
        rows = self.in_b.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1"
        ).fetchall()
        return [row[0] for row in rows]


@pytest.fixture
def two(project: Callable[[str | Path], Project]) -> Iterator[TwoProjects]:
    """Blog as A and saas as B on one server, B holding one org row."""
    a = project(ROOT / "examples" / "blog")
    b = project(ROOT / "examples" / "saas")
    a.apply()
    b.apply()
    assert a.database != b.database
    with b.connect() as in_b:
        in_b.execute("INSERT INTO orgs (name, slug, owner_id) VALUES ('B', 'org-b', %s)", [SUB])
        yield TwoProjects(a, b, in_b)
        in_b.execute("RESET ROLE")


class TestProjectIsolation:
    """Roles are cluster-wide, so every grant must stay inside its own project."""

    def test_no_connect_privilege_on_other_database(self, two: TwoProjects) -> None:
        """A's roles lack CONNECT on B's database, B's roles have it, and PUBLIC has none."""
        for suffix in ROLES:
            assert two.has("database", two.a.role(suffix), two.b.database, "CONNECT") is False
            assert two.has("database", two.a.role(suffix), two.b.database, "TEMPORARY") is False
            assert two.has("database", two.b.role(suffix), two.b.database, "CONNECT") is True
        public_grants = two.scalar(
            "SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s AND a.grantee = 0",
            [two.b.database],
        )
        assert public_grants == 0

    def test_no_table_or_schema_privilege_in_other_database(self, two: TwoProjects) -> None:
        """No table privilege on any of B's tables, nor usage of B's auth and audit schemas, for A's roles."""
        tables = two.b_tables()
        assert tables == ["memberships", "orgs", "projects", "tasks"]
        for suffix in ROLES:
            role = two.a.role(suffix)
            for table in tables:
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                    assert two.has("table", role, f"public.{table}", privilege) is False
                assert two.has("table", two.b.role(suffix), f"public.{table}", "SELECT") is True
            for schema in ("auth", "audit"):
                assert two.has("schema", role, schema, "USAGE") is False
            assert two.has("table", role, "audit.log", "SELECT") is False

    @pytest.mark.parametrize("suffix", ROLES)
    def test_other_projects_role_cannot_read_tables(self, two: TwoProjects, suffix: str) -> None:
        """Acting as A's role inside B's database, reading B's tables fails with permission denied."""
        as_user(two.in_b, two.a.role(suffix), SUB, {"role": suffix})
        for table in ("orgs", "memberships", "projects", "tasks"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                two.in_b.execute(f"SELECT * FROM {table}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            two.in_b.execute("INSERT INTO orgs (name, slug, owner_id) VALUES ('A', 'org-a', %s)", [SUB])
        two.in_b.execute("RESET ROLE")
        assert two.scalar("SELECT count(*) FROM orgs", []) == 1

    def test_roles_do_not_cross_projects(self, two: TwoProjects) -> None:
        """No A role is a member of (or inherits) any B role, in either direction."""
        for first in ROLES:
            for second in ROLES:
                for member, group in ((two.a, two.b), (two.b, two.a)):
                    granted = two.scalar(
                        "SELECT pg_has_role(%s, %s, 'MEMBER')", [member.role(first), group.role(second)]
                    )
                    assert granted is False
