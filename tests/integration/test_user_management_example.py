"""examples/user-management, Supabase's User Management Starter ported whole, behaves as the original.

Acted on from an application's login (not a superuser) through the project roles and
``request.jwt.claims``; sign-up is the platform's row in ``auth.users``, written as the admin.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
from postgres_projects import ROOT, Project, as_user

ALICE = str(uuid.UUID(int=0xA11CE))
BOB = str(uuid.UUID(int=0xB0B))


@pytest.fixture
def starter(project: Callable[[str | Path], Project]) -> Project:
    created = project(ROOT / "examples" / "user-management")
    created.apply()
    for user, name in ((ALICE, "Alice"), (BOB, "Bob")):
        created.sign_up(user, f"{name.lower()}@example.com", {"full_name": name, "avatar_url": f"{name}.png"})
    return created


@pytest.fixture
def app(starter: Project) -> Iterator[psycopg.Connection[Any]]:
    with starter.application() as connection:
        yield connection


class TestUserManagementStarter:
    def test_replans_empty(self, starter: Project) -> None:
        plan = starter.plan()
        assert plan.empty, [c.summary for c in plan.changes if c.summary]

    def test_sign_up_made_the_profiles_everyone_reads(self, starter: Project, app: psycopg.Connection[Any]) -> None:
        as_user(app, starter.role("anon"), None)
        rows = app.execute("SELECT full_name, avatar_url FROM profiles ORDER BY full_name").fetchall()
        assert rows == [("Alice", "Alice.png"), ("Bob", "Bob.png")]

    def test_only_the_owner_updates(self, starter: Project, app: psycopg.Connection[Any]) -> None:
        as_user(app, starter.role("authenticated"), ALICE, {"role": "authenticated"})
        assert app.execute("UPDATE profiles SET website = 'https://alice.example' RETURNING id::text").fetchall() == [
            (ALICE,)
        ]
        as_user(app, starter.role("anon"), None)
        assert app.execute("UPDATE profiles SET website = 'x' RETURNING id").fetchall() == []

    def test_username_length_is_the_constraint_postgres_reports(
        self, starter: Project, app: psycopg.Connection[Any]
    ) -> None:
        as_user(app, starter.role("authenticated"), BOB, {"role": "authenticated"})
        with pytest.raises(psycopg.errors.CheckViolation) as caught:
            app.execute("UPDATE profiles SET username = 'bo'")
        assert caught.value.diag.constraint_name == "username_length"

    def test_a_profile_needs_its_user(self, starter: Project, app: psycopg.Connection[Any]) -> None:
        stranger = str(uuid.uuid4())
        as_user(app, starter.role("authenticated"), stranger, {"role": "authenticated"})
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            app.execute("INSERT INTO profiles (id, username) VALUES (%s, 'stranger')", [stranger])
