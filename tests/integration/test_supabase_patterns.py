"""The forms Supabase's documentation and example applications write, applied and acted on as users.

One scenario: a user-management schema in Supabase's own words (profiles keyed by ``auth.users``,
``(select auth.uid())`` in policies, a restrictive policy, named and table-level checks, column
privileges). It validates, applies, re-plans empty, and behaves like the original: the tests insert
into ``auth.users`` as the platform would and act as users through ``request.jwt.claims`` and the
project roles, from a login that is not a superuser.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg.errors
import pytest
from postgres_projects import Project, as_user

from kliv.stacks.errors import EngineError

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: members}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: profiles}
spec:
  projectRef: {name: members}
  columns:
    - {name: id, type: uuid, primaryKey: true, references: {table: auth.users, onDelete: cascade}}
    - {name: username, type: text, unique: true}
    - {name: website, type: text}
    - {name: suspended, type: boolean, nullable: false, default: "false"}
    - {name: handle, type: text, generated: "lower(username)"}
    - {name: billing_plan, type: text, nullable: false, default: "'free'"}
  checks:
    - {name: username_length, expression: "char_length(username) >= 3"}
  columnPrivileges:
    - {role: authenticated, insert: [id, username, website], update: [username, website]}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: memberships}
spec:
  projectRef: {name: members}
  columns:
    - {name: team, type: text, primaryKey: true}
    - {name: member, type: uuid, primaryKey: true, references: {table: auth.users}}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: bookings}
spec:
  projectRef: {name: members}
  columns:
    - {name: id, type: bigint, primaryKey: true, identity: always}
    - {name: team, type: text, nullable: false}
    - {name: member, type: uuid, nullable: false}
    - {name: starts_at, type: timestamptz, nullable: false}
    - {name: ends_at, type: timestamptz, nullable: false}
  checks:
    - {name: bookings_in_order, expression: "starts_at < ends_at"}
  foreignKeys:
    - columns: [team, member]
      references: {table: memberships, columns: [team, member]}
      onDelete: cascade
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: profiles-read}
spec:
  projectRef: {name: members}
  table: profiles
  command: select
  roles: [anon, authenticated]
  using: "true"
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: profiles-own-update}
spec:
  projectRef: {name: members}
  table: profiles
  command: update
  roles: [authenticated]
  using: "(select auth.uid()) = id"
  withCheck: "(select auth.uid()) = id"
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: profiles-own-insert}
spec:
  projectRef: {name: members}
  table: profiles
  command: insert
  roles: [authenticated]
  withCheck: "(select auth.uid()) = id"
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: suspended-read-nothing}
spec:
  projectRef: {name: members}
  table: profiles
  mode: restrictive
  command: select
  roles: [anon, authenticated]
  using: "not suspended"
"""

ALICE = str(uuid.UUID(int=0xA11CE))
BOB = str(uuid.UUID(int=0xB0B))


@pytest.fixture
def members(project: Callable[[str], Project]) -> Project:
    created = project(SPECS)
    created.apply()
    return created


@pytest.fixture
def app(members: Project) -> Iterator[psycopg.Connection[Any]]:
    with members.application() as connection:
        yield connection


def _platform_signs_up(members: Project, user_id: str, email: str) -> None:
    members.sign_up(user_id, email)


class TestAuthUsers:
    def test_replans_empty(self, members: Project) -> None:
        plan = members.plan()
        assert plan.empty, [c.summary for c in plan.changes]

    def test_profile_needs_a_user(self, members: Project, app: psycopg.Connection[Any]) -> None:
        as_user(app, members.role("authenticated"), ALICE, {"role": "authenticated"})
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            app.execute("INSERT INTO profiles (id, username) VALUES (%s, 'alice')", [ALICE])
        _platform_signs_up(members, ALICE, "alice@example.com")
        app.execute("INSERT INTO profiles (id, username) VALUES (%s, 'alice')", [ALICE])
        assert app.execute("SELECT username FROM profiles").fetchall() == [("alice",)]

    def test_deleting_the_user_deletes_the_profile(self, members: Project) -> None:
        _platform_signs_up(members, ALICE, "alice@example.com")
        with members.connect() as admin:
            admin.execute("INSERT INTO profiles (id, username) VALUES (%s, 'alice')", [ALICE])
            admin.execute("DELETE FROM auth.users WHERE id = %s", [ALICE])
            assert admin.execute("SELECT count(*) FROM profiles").fetchone() == (0,)

    @pytest.mark.parametrize("role", ["anon", "authenticated"])
    def test_app_roles_cannot_touch_auth_users(self, members: Project, app: psycopg.Connection[Any], role: str) -> None:
        _platform_signs_up(members, ALICE, "alice@example.com")
        as_user(app, members.role(role), ALICE, {"role": role})
        for sql in (
            "SELECT email FROM auth.users",
            "UPDATE auth.users SET email = 'x@example.com'",
            "INSERT INTO auth.users (id) VALUES (gen_random_uuid())",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(sql)

    def test_service_role_manages_users(self, members: Project, app: psycopg.Connection[Any]) -> None:
        as_user(app, members.role("service_role"), None, {"role": "service_role"})
        app.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'bob@example.com')", [BOB])
        assert app.execute("SELECT email FROM auth.users WHERE id = %s", [BOB]).fetchone() == ("bob@example.com",)


class TestPolicies:
    def _two_profiles(self, members: Project) -> None:
        for user, name in ((ALICE, "alice"), (BOB, "bob")):
            _platform_signs_up(members, user, f"{name}@example.com")
        with members.connect() as admin:
            admin.execute("INSERT INTO profiles (id, username) VALUES (%s, 'alice'), (%s, 'bob')", [ALICE, BOB])

    def test_select_auth_uid_lets_the_owner_update(self, members: Project, app: psycopg.Connection[Any]) -> None:
        self._two_profiles(members)
        as_user(app, members.role("authenticated"), ALICE, {"role": "authenticated"})
        updated = app.execute("UPDATE profiles SET website = 'https://alice.example' RETURNING id::text").fetchall()
        assert updated == [(ALICE,)]  # bob's row is not hers to update

    def test_policy_is_kept_as_written(self, members: Project) -> None:
        with members.connect() as admin:
            row = admin.execute(
                "SELECT qual FROM pg_policies WHERE tablename = 'profiles' AND policyname = 'profiles_own_update'"
            ).fetchone()
        assert row is not None
        assert "SELECT auth.uid()" in row[0]

    def test_restrictive_policy_narrows_the_permissive_one(
        self, members: Project, app: psycopg.Connection[Any]
    ) -> None:
        self._two_profiles(members)
        with members.connect() as admin:
            admin.execute("UPDATE profiles SET suspended = true WHERE id = %s", [BOB])
        for role in ("anon", "authenticated"):
            as_user(app, members.role(role), ALICE, {"role": role})
            assert app.execute("SELECT username FROM profiles").fetchall() == [("alice",)]
        with members.connect() as admin:
            row = admin.execute(
                "SELECT permissive FROM pg_policies WHERE policyname = 'suspended_read_nothing'"
            ).fetchone()
        assert row == ("RESTRICTIVE",)

    def test_changing_the_mode_replaces_the_policy(self, members: Project) -> None:
        members.edit("TablePolicy", "suspended-read-nothing", lambda d: d["spec"].update(mode="permissive"))
        plan = members.plan()
        assert [s for c in plan.changes for s in c.summary if "policy" in s]
        members.apply()
        with members.connect() as admin:
            row = admin.execute(
                "SELECT permissive FROM pg_policies WHERE policyname = 'suspended_read_nothing'"
            ).fetchone()
        assert row == ("PERMISSIVE",)
        assert members.plan().empty


class TestConstraints:
    def test_the_named_check_is_the_one_postgres_reports(self, members: Project) -> None:
        _platform_signs_up(members, ALICE, "alice@example.com")
        with members.connect() as admin, pytest.raises(psycopg.errors.CheckViolation) as caught:
            admin.execute("INSERT INTO profiles (id, username) VALUES (%s, 'al')", [ALICE])
        assert caught.value.diag.constraint_name == "username_length"

    def test_a_table_level_check_over_two_columns(self, members: Project) -> None:
        with members.connect() as admin, pytest.raises(psycopg.errors.CheckViolation) as caught:
            admin.execute(
                "INSERT INTO bookings (team, member, starts_at, ends_at) "
                "VALUES ('a', %s, now(), now() - interval '1 h')",
                [ALICE],
            )
        assert caught.value.diag.constraint_name == "bookings_in_order"

    def test_composite_foreign_key(self, members: Project) -> None:
        _platform_signs_up(members, ALICE, "alice@example.com")
        with members.connect() as admin:
            admin.execute("INSERT INTO memberships VALUES ('red', %s)", [ALICE])
            booking = (
                "INSERT INTO bookings (team, member, starts_at, ends_at) VALUES (%s, %s, now(), now() + interval '1 h')"
            )
            admin.execute(booking, ["red", ALICE])
            with pytest.raises(psycopg.errors.ForeignKeyViolation) as caught, admin.transaction():
                admin.execute(booking, ["blue", ALICE])  # alice is in red, not blue
            assert caught.value.diag.constraint_name == "bookings_team_member_fkey"
            admin.execute("DELETE FROM memberships WHERE team = 'red'")
            assert admin.execute("SELECT count(*) FROM bookings").fetchone() == (0,)

    def test_generated_column(self, members: Project) -> None:
        _platform_signs_up(members, ALICE, "alice@example.com")
        with members.connect() as admin:
            admin.execute("INSERT INTO profiles (id, username) VALUES (%s, 'Alice')", [ALICE])
            assert admin.execute("SELECT handle FROM profiles").fetchone() == ("alice",)
            with pytest.raises(psycopg.errors.GeneratedAlways):
                admin.execute("UPDATE profiles SET handle = 'x'")


class TestColumnPrivileges:
    def test_owner_cannot_update_billing_columns(self, members: Project, app: psycopg.Connection[Any]) -> None:
        _platform_signs_up(members, ALICE, "alice@example.com")
        as_user(app, members.role("authenticated"), ALICE, {"role": "authenticated"})
        app.execute("INSERT INTO profiles (id, username) VALUES (%s, 'alice')", [ALICE])
        app.execute("UPDATE profiles SET website = 'https://alice.example'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("UPDATE profiles SET billing_plan = 'pro'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("UPDATE profiles SET suspended = false")
        as_user(app, members.role("service_role"), None, {"role": "service_role"})
        app.execute("UPDATE profiles SET billing_plan = 'pro'")  # service_role is never restricted
        assert app.execute("SELECT website, billing_plan FROM profiles").fetchone() == ("https://alice.example", "pro")

    def test_owner_cannot_insert_billing_columns(self, members: Project, app: psycopg.Connection[Any]) -> None:
        _platform_signs_up(members, ALICE, "alice@example.com")
        as_user(app, members.role("authenticated"), ALICE, {"role": "authenticated"})
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("INSERT INTO profiles (id, username, billing_plan) VALUES (%s, 'alice', 'pro')", [ALICE])

    def test_lifting_the_restriction_converges(self, members: Project, app: psycopg.Connection[Any]) -> None:
        members.edit("Table", "profiles", lambda d: d["spec"].pop("columnPrivileges"))
        summaries = [s for c in members.plan().changes for s in c.summary]
        assert "grant table privileges on profiles" in summaries
        members.apply()
        assert members.plan().empty
        _platform_signs_up(members, ALICE, "alice@example.com")
        as_user(app, members.role("authenticated"), ALICE, {"role": "authenticated"})
        app.execute("INSERT INTO profiles (id, username, billing_plan) VALUES (%s, 'alice', 'pro')", [ALICE])

    def test_a_revoked_column_grant_is_drift(self, members: Project) -> None:
        with members.connect() as admin:
            admin.execute(f'GRANT UPDATE ON profiles TO "{members.role("authenticated")}"')
        summaries = [s for c in members.plan().changes for s in c.summary]
        assert any(s.startswith("grant privileges on profiles: authenticated may insert") for s in summaries), summaries
        members.apply()
        assert members.plan().empty


class TestGeneratedEvolution:
    def test_a_changed_expression_is_refused_at_plan(self, members: Project) -> None:
        def change(document: dict[str, Any]) -> None:
            document["spec"]["columns"][4]["generated"] = "upper(username)"

        members.edit("Table", "profiles", change)
        with pytest.raises(EngineError) as caught:
            members.plan()
        assert "cannot change the expression of column `profiles.handle`" in caught.value.message

    def test_no_longer_generated_keeps_the_values(self, members: Project) -> None:
        _platform_signs_up(members, ALICE, "alice@example.com")
        with members.connect() as admin:
            admin.execute("INSERT INTO profiles (id, username) VALUES (%s, 'Alice')", [ALICE])
        members.edit("Table", "profiles", lambda d: d["spec"]["columns"][4].pop("generated"))
        summaries = [s for c in members.plan().changes for s in c.summary]
        assert "stop generating handle (its values stay)" in summaries
        members.apply()
        assert members.plan().empty
        with members.connect() as admin:
            admin.execute("UPDATE profiles SET handle = 'ally'")
            assert admin.execute("SELECT username, handle FROM profiles").fetchone() == ("Alice", "ally")
