"""Tenant isolation and role-based writes of the saas example, proven against the real database.

Two orgs are seeded as the superuser: A (an owner, an admin, a plain member)
and B (its own owner). Each test then acts as one of those users through the
project's `authenticated` role with a JWT subject, following
examples/saas/policies.yaml.
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

A_OWNER = "00000000-0000-4000-8000-0000000a0001"
A_ADMIN = "00000000-0000-4000-8000-0000000a0002"
A_MEMBER = "00000000-0000-4000-8000-0000000a0003"
B_OWNER = "00000000-0000-4000-8000-0000000b0001"
NEWCOMER = "00000000-0000-4000-8000-00000000c001"

RLS_REFUSED = pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security")


@dataclasses.dataclass
class Saas:
    """The applied saas project, an admin connection and the ids of the seeded rows."""

    project: Project
    connection: psycopg.Connection[Any]
    org_a: str
    org_b: str
    project_a: str
    project_b: str
    task_a_assigned: str  # assigned to A_MEMBER
    task_a_open: str  # unassigned
    task_b: str

    def act_as(self, sub: str) -> None:
        as_user(self.connection, self.project.role("authenticated"), sub, {"role": "authenticated"})

    def admin(self) -> None:
        self.connection.execute("RESET ROLE")

    def ids(self, sql: str, params: list[Any] | None = None) -> set[str]:
        return {str(row[0]) for row in self.connection.execute(sql, params).fetchall()}

    def count(self, sql: str, params: list[Any] | None = None) -> int:
        return self.connection.execute(sql, params).rowcount


@pytest.fixture
def saas(project: Callable[[str | Path], Project]) -> Iterator[Saas]:
    """The saas example applied with orgs A and B, one project each, and tasks."""
    created = project(ROOT / "examples" / "saas")
    created.apply()
    with created.connect() as connection:

        def one(sql: str, params: list[Any]) -> str:
            row = connection.execute(sql, params).fetchone()
            assert row is not None
            return str(row[0])

        org_a = one("INSERT INTO orgs (name, slug, owner_id) VALUES ('A', 'org-a', %s) RETURNING id", [A_OWNER])
        org_b = one("INSERT INTO orgs (name, slug, owner_id) VALUES ('B', 'org-b', %s) RETURNING id", [B_OWNER])
        connection.execute(
            "INSERT INTO memberships (org_id, user_id, role) VALUES "
            "(%s, %s, 'owner'), (%s, %s, 'admin'), (%s, %s, 'member'), (%s, %s, 'owner')",
            [org_a, A_OWNER, org_a, A_ADMIN, org_a, A_MEMBER, org_b, B_OWNER],
        )
        insert_project = "INSERT INTO projects (org_id, name, created_by) VALUES (%s, %s, %s) RETURNING id"
        project_a = one(insert_project, [org_a, "Apollo", A_OWNER])
        project_b = one(insert_project, [org_b, "Borealis", B_OWNER])
        insert_task = (
            "INSERT INTO tasks (project_id, title, assignee_id, created_by) VALUES (%s, %s, %s, %s) RETURNING id"
        )
        seeded = Saas(
            project=created,
            connection=connection,
            org_a=org_a,
            org_b=org_b,
            project_a=project_a,
            project_b=project_b,
            task_a_assigned=one(insert_task, [project_a, "Assigned", A_MEMBER, A_OWNER]),
            task_a_open=one(insert_task, [project_a, "Open", None, A_OWNER]),
            task_b=one(insert_task, [project_b, "Secret", B_OWNER, B_OWNER]),
        )
        yield seeded
        connection.execute("RESET ROLE")


class TestSaasTenantIsolation:
    """Members see their org only; owners and admins write, plain members mostly read."""

    def test_member_sees_own_org_only(self, saas: Saas) -> None:
        """A plain member of A reads A's org, project and tasks, and nothing of B."""
        saas.act_as(A_MEMBER)
        assert saas.ids("SELECT id FROM orgs") == {saas.org_a}
        assert saas.ids("SELECT id FROM projects") == {saas.project_a}
        assert saas.ids("SELECT id FROM tasks") == {saas.task_a_assigned, saas.task_a_open}
        assert saas.ids("SELECT id FROM orgs WHERE id = %s", [saas.org_b]) == set()
        assert saas.ids("SELECT id FROM projects WHERE id = %s", [saas.project_b]) == set()
        assert saas.ids("SELECT id FROM tasks WHERE id = %s", [saas.task_b]) == set()
        assert saas.ids("SELECT id FROM tasks WHERE project_id = %s", [saas.project_b]) == set()

    def test_member_reads_only_own_membership(self, saas: Saas) -> None:
        """Memberships are readable row by row: a member sees only their own row."""
        saas.act_as(A_MEMBER)
        rows = saas.connection.execute("SELECT org_id::text, user_id::text, role::text FROM memberships").fetchall()
        assert rows == [(saas.org_a, A_MEMBER, "member")]

    def test_owner_of_b_sees_nothing_of_a(self, saas: Saas) -> None:
        """Isolation holds the other way round, for an owner too."""
        saas.act_as(B_OWNER)
        assert saas.ids("SELECT id FROM orgs") == {saas.org_b}
        assert saas.ids("SELECT id FROM projects") == {saas.project_b}
        assert saas.ids("SELECT id FROM tasks") == {saas.task_b}

    def test_anon_sees_nothing(self, saas: Saas) -> None:
        """The anon role has no policy on any table, so it reads no rows and inserts none."""
        as_user(saas.connection, saas.project.role("anon"), None)
        for table in ("orgs", "memberships", "projects", "tasks"):
            assert saas.count(f"SELECT 1 FROM {table}") == 0
        with RLS_REFUSED:
            saas.connection.execute("INSERT INTO orgs (name, slug, owner_id) VALUES ('X', 'org-x', %s)", [NEWCOMER])

    def test_cross_tenant_writes_refused(self, saas: Saas) -> None:
        """A's owner cannot insert into B's org nor touch B's rows: inserts fail, updates and deletes hit 0 rows."""
        saas.act_as(A_OWNER)
        with RLS_REFUSED:
            saas.connection.execute("INSERT INTO projects (org_id, name) VALUES (%s, 'Intruder')", [saas.org_b])
        with RLS_REFUSED:
            saas.connection.execute("INSERT INTO tasks (project_id, title) VALUES (%s, 'Intruder')", [saas.project_b])
        with RLS_REFUSED:
            saas.connection.execute(
                "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'owner')", [saas.org_b, A_OWNER]
            )
        assert saas.count("UPDATE orgs SET name = 'Pwned' WHERE id = %s", [saas.org_b]) == 0
        assert saas.count("UPDATE projects SET name = 'Pwned' WHERE id = %s", [saas.project_b]) == 0
        assert saas.count("UPDATE tasks SET title = 'Pwned' WHERE id = %s", [saas.task_b]) == 0
        assert saas.count("DELETE FROM tasks WHERE id = %s", [saas.task_b]) == 0
        assert saas.count("DELETE FROM projects WHERE id = %s", [saas.project_b]) == 0
        assert saas.count("DELETE FROM orgs WHERE id = %s", [saas.org_b]) == 0
        assert saas.count("DELETE FROM memberships WHERE user_id = %s", [B_OWNER]) == 0
        saas.admin()
        assert saas.ids("SELECT name FROM orgs WHERE id = %s", [saas.org_b]) == {"B"}
        assert saas.ids("SELECT name FROM projects WHERE org_id = %s", [saas.org_b]) == {"Borealis"}
        assert saas.ids("SELECT title FROM tasks WHERE project_id = %s", [saas.project_b]) == {"Secret"}

    def test_project_cannot_move_to_another_org(self, saas: Saas) -> None:
        """The projects update check re-checks the new org_id: A's owner cannot move a project into B."""
        saas.act_as(A_OWNER)
        with RLS_REFUSED:
            saas.connection.execute("UPDATE projects SET org_id = %s WHERE id = %s", [saas.org_b, saas.project_a])

    @pytest.mark.parametrize("writer", [A_OWNER, A_ADMIN], ids=["owner", "admin"])
    def test_owner_and_admin_write_projects_and_tasks(self, saas: Saas, writer: str) -> None:
        """Owners and admins create, update and delete their org's projects and tasks."""
        saas.act_as(writer)
        saas.connection.execute("INSERT INTO projects (org_id, name) VALUES (%s, 'Second')", [saas.org_a])
        [second] = saas.ids("SELECT id FROM projects WHERE name = 'Second'")
        saas.connection.execute("INSERT INTO tasks (project_id, title) VALUES (%s, 'New')", [second])
        assert saas.count("UPDATE projects SET description = 'edited' WHERE id = %s", [saas.project_a]) == 1
        assert saas.count("UPDATE tasks SET status = 'in_progress' WHERE id = %s", [saas.task_a_open]) == 1
        assert saas.count("DELETE FROM tasks WHERE id = %s", [saas.task_a_assigned]) == 1
        assert saas.count("DELETE FROM projects WHERE id = %s", [second]) == 1
        saas.admin()
        assert saas.ids("SELECT created_by FROM projects WHERE id = %s", [saas.project_a]) == {A_OWNER}
        assert saas.ids("SELECT id FROM tasks WHERE project_id = %s", [saas.project_a]) == {saas.task_a_open}

    def test_writer_cannot_forge_created_by(self, saas: Saas) -> None:
        """projects-admin-insert requires created_by = the caller, even for an owner."""
        saas.act_as(A_OWNER)
        with RLS_REFUSED:
            saas.connection.execute(
                "INSERT INTO projects (org_id, name, created_by) VALUES (%s, 'Forged', %s)", [saas.org_a, A_ADMIN]
            )

    def test_plain_member_cannot_write_projects_or_tasks(self, saas: Saas) -> None:
        """A plain member's inserts are refused, and updates and deletes of unassigned rows hit 0 rows."""
        saas.act_as(A_MEMBER)
        with RLS_REFUSED:
            saas.connection.execute("INSERT INTO projects (org_id, name) VALUES (%s, 'Mine')", [saas.org_a])
        with RLS_REFUSED:
            saas.connection.execute("INSERT INTO tasks (project_id, title) VALUES (%s, 'Mine')", [saas.project_a])
        assert saas.count("UPDATE projects SET name = 'Renamed' WHERE id = %s", [saas.project_a]) == 0
        assert saas.count("DELETE FROM projects WHERE id = %s", [saas.project_a]) == 0
        assert saas.count("UPDATE tasks SET title = 'Renamed' WHERE id = %s", [saas.task_a_open]) == 0
        assert saas.count("DELETE FROM tasks WHERE id = %s", [saas.task_a_assigned]) == 0
        assert saas.count("UPDATE orgs SET name = 'Renamed' WHERE id = %s", [saas.org_a]) == 0
        assert saas.count("DELETE FROM orgs WHERE id = %s", [saas.org_a]) == 0

    def test_assignee_updates_own_task_but_cannot_hand_it_off(self, saas: Saas) -> None:
        """A plain member updates the task assigned to them; reassigning it fails the check."""
        saas.act_as(A_MEMBER)
        assert saas.count("UPDATE tasks SET status = 'done' WHERE id = %s", [saas.task_a_assigned]) == 1
        with RLS_REFUSED:
            saas.connection.execute("UPDATE tasks SET assignee_id = %s WHERE id = %s", [A_ADMIN, saas.task_a_assigned])
        saas.admin()
        rows = saas.connection.execute(
            "SELECT status::text, assignee_id::text FROM tasks WHERE id = %s", [saas.task_a_assigned]
        ).fetchall()
        assert rows == [("done", A_MEMBER)]

    def test_only_owner_updates_org(self, saas: Saas) -> None:
        """orgs-owner-update: an admin's update of the org hits 0 rows, the owner's hits 1."""
        saas.act_as(A_ADMIN)
        assert saas.count("UPDATE orgs SET name = 'By admin' WHERE id = %s", [saas.org_a]) == 0
        saas.act_as(A_OWNER)
        assert saas.count("UPDATE orgs SET name = 'By owner' WHERE id = %s", [saas.org_a]) == 1

    def test_only_billing_owner_deletes_org(self, saas: Saas) -> None:
        """orgs-billing-owner-delete: the admin deletes nothing; the billing owner deletes the org and its rows."""
        saas.act_as(A_ADMIN)
        assert saas.count("DELETE FROM orgs WHERE id = %s", [saas.org_a]) == 0
        saas.act_as(A_OWNER)
        assert saas.count("DELETE FROM orgs WHERE id = %s", [saas.org_a]) == 1
        saas.admin()
        assert saas.count("SELECT 1 FROM projects WHERE org_id = %s", [saas.org_a]) == 0
        assert saas.ids("SELECT id FROM orgs") == {saas.org_b}

    def test_invitations_follow_roles(self, saas: Saas) -> None:
        """Owners invite any role; admins invite members and admins but not owners; members invite nobody."""
        invite = "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, %s)"
        saas.act_as(A_MEMBER)
        with RLS_REFUSED:
            saas.connection.execute(invite, [saas.org_a, NEWCOMER, "member"])
        saas.act_as(A_ADMIN)
        with RLS_REFUSED:
            saas.connection.execute(invite, [saas.org_a, NEWCOMER, "owner"])
        saas.connection.execute(invite, [saas.org_a, NEWCOMER, "admin"])
        saas.act_as(A_OWNER)
        saas.connection.execute(invite, [saas.org_a, B_OWNER, "owner"])
        saas.admin()
        rows = saas.connection.execute(
            "SELECT user_id::text, role::text, invited_by::text FROM memberships "
            "WHERE org_id = %s AND user_id IN (%s, %s) ORDER BY user_id",
            [saas.org_a, NEWCOMER, B_OWNER],
        ).fetchall()
        assert sorted(rows) == sorted([(NEWCOMER, "admin", A_ADMIN), (B_OWNER, "owner", A_OWNER)])

    def test_nobody_changes_membership_roles(self, saas: Saas) -> None:
        """memberships has no update policy: an admin cannot promote themselves, nor an owner anyone."""
        saas.act_as(A_ADMIN)
        assert saas.count("UPDATE memberships SET role = 'owner' WHERE user_id = %s", [A_ADMIN]) == 0
        saas.act_as(A_OWNER)
        assert saas.count("UPDATE memberships SET role = 'admin' WHERE org_id = %s", [saas.org_a]) == 0
        saas.admin()
        assert saas.ids("SELECT role FROM memberships WHERE user_id = %s", [A_ADMIN]) == {"admin"}

    def test_invite_cannot_forge_inviter(self, saas: Saas) -> None:
        """memberships-admin-invite requires invited_by = the caller."""
        saas.act_as(A_OWNER)
        with RLS_REFUSED:
            saas.connection.execute(
                "INSERT INTO memberships (org_id, user_id, invited_by) VALUES (%s, %s, %s)",
                [saas.org_a, NEWCOMER, A_ADMIN],
            )

    def test_new_org_bootstrap(self, saas: Saas) -> None:
        """A newcomer creates an org as its billing owner, becomes its owner, and cannot claim someone else's org."""
        saas.act_as(NEWCOMER)
        with RLS_REFUSED:
            saas.connection.execute("INSERT INTO orgs (name, slug, owner_id) VALUES ('C', 'org-c', %s)", [A_OWNER])
        saas.connection.execute("INSERT INTO orgs (name, slug) VALUES ('C', 'org-c')")
        [org_c] = saas.ids("SELECT id FROM orgs")
        saas.connection.execute(
            "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'owner')", [org_c, NEWCOMER]
        )
        with RLS_REFUSED:
            saas.connection.execute(
                "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'owner')", [saas.org_a, NEWCOMER]
            )
        saas.connection.execute("INSERT INTO projects (org_id, name) VALUES (%s, 'First')", [org_c])
        assert saas.ids("SELECT id FROM orgs") == {org_c}
        assert saas.count("SELECT 1 FROM projects") == 1

    def test_member_leaves_but_cannot_remove_others(self, saas: Saas) -> None:
        """memberships-leave: a member deletes their own membership (then sees nothing of A), not anyone else's."""
        saas.act_as(A_MEMBER)
        assert saas.count("DELETE FROM memberships WHERE user_id = %s", [A_OWNER]) == 0
        assert saas.count("DELETE FROM memberships WHERE user_id = %s", [A_MEMBER]) == 1
        assert saas.count("SELECT 1 FROM projects") == 0
        assert saas.count("SELECT 1 FROM tasks") == 0
        assert saas.count("UPDATE tasks SET status = 'done' WHERE id = %s", [saas.task_a_assigned]) == 0
