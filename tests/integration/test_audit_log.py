"""The audit trail (`audit.log` and the `kliv_audit` trigger), proven against the real database.

Uses the blog example with `comments` switched to `audit: false`; changes are
made as signed-in users through the project's `authenticated` role.
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

ALICE = "00000000-0000-4000-8000-00000000a11c"
BOB = "00000000-0000-4000-8000-000000000b0b"

AUDIT_COLUMNS = "table_name, operation, old_row, new_row, changed_columns, actor::text, transaction_id"


@dataclasses.dataclass
class Audited:
    """The applied project, an admin connection, and the last audit.log id before the test acted."""

    project: Project
    connection: psycopg.Connection[Any]
    mark: int
    published_post: str

    def act_as(self, sub: str) -> None:
        as_user(self.connection, self.project.role("authenticated"), sub, {"role": "authenticated"})

    def snapshot(self, table: str, key: str) -> Any:
        """The row as jsonb, read as the superuser (the role is restored afterwards by the caller)."""
        self.connection.execute("RESET ROLE")
        row = self.connection.execute(f"SELECT to_jsonb(t) FROM {table} t WHERE id = %s", [key]).fetchone()
        assert row is not None
        return row[0]

    def recorded(self) -> list[tuple[Any, ...]]:
        """audit.log rows written since the fixture finished seeding, oldest first."""
        self.connection.execute("RESET ROLE")
        return self.connection.execute(
            f"SELECT {AUDIT_COLUMNS} FROM audit.log WHERE id > %s ORDER BY id", [self.mark]
        ).fetchall()


@pytest.fixture
def audited(project: Callable[[str | Path], Project]) -> Iterator[Audited]:
    """The blog example with unaudited comments, Bob's profile and one published post of his."""
    created = project(ROOT / "examples" / "blog")
    created.edit("Table", "comments", lambda document: document["spec"].update(audit=False))
    created.apply()
    with created.connect() as connection:
        connection.execute("INSERT INTO profiles (id, username) VALUES (%s, 'bob')", [BOB])
        row = connection.execute(
            "INSERT INTO posts (author_id, status, title) VALUES (%s, 'published', 'Hello') RETURNING id::text", [BOB]
        ).fetchone()
        assert row is not None
        published = str(row[0])
        mark = connection.execute("SELECT coalesce(max(id), 0) FROM audit.log").fetchone()
        assert mark is not None
        yield Audited(created, connection, int(mark[0]), published)
        connection.execute("RESET ROLE")


class TestAuditLog:
    """Row changes on audited tables land in audit.log with who, what and which transaction."""

    def test_insert_update_delete_recorded(self, audited: Audited) -> None:
        """Alice's insert, update and delete of her profile are logged with rows, changed columns and her sub."""
        audited.act_as(ALICE)
        audited.connection.execute("INSERT INTO profiles (username) VALUES ('alice')")
        inserted = audited.snapshot("profiles", ALICE)
        audited.act_as(ALICE)
        assert audited.connection.execute("UPDATE profiles SET display_name = 'Alice'").rowcount == 1
        updated = audited.snapshot("profiles", ALICE)
        audited.act_as(ALICE)
        assert audited.connection.execute("DELETE FROM profiles WHERE id = %s", [ALICE]).rowcount == 1
        rows = audited.recorded()
        assert [row[:6] for row in rows] == [
            ("profiles", "INSERT", None, inserted, None, ALICE),
            ("profiles", "UPDATE", inserted, updated, ["display_name"], ALICE),
            ("profiles", "DELETE", updated, None, None, ALICE),
        ]
        assert inserted["username"] == "alice"
        assert updated["display_name"] == "Alice"
        assert len({row[6] for row in rows}) == 3, "autocommit statements are separate transactions"

    def test_update_lists_only_changed_columns(self, audited: Audited) -> None:
        """Columns assigned their current value are not listed; the list is sorted."""
        audited.act_as(BOB)
        audited.connection.execute(
            "UPDATE posts SET title = 'Hello again', body = body, status = 'published', headline = 'Hi' WHERE id = %s",
            [audited.published_post],
        )
        [row] = audited.recorded()
        table, operation, old_row, new_row, changed, actor, _ = row
        assert (table, operation, changed, actor) == ("posts", "UPDATE", ["headline", "title"], BOB)
        assert (old_row["title"], new_row["title"]) == ("Hello", "Hello again")
        assert (old_row["headline"], new_row["headline"]) == (None, "Hi")
        assert old_row["body"] == new_row["body"]

    def test_changes_in_one_transaction_share_transaction_id(self, audited: Audited) -> None:
        """Every change of one transaction carries its txid; a later statement carries another."""
        with audited.connection.transaction():
            audited.act_as(ALICE)
            audited.connection.execute("INSERT INTO profiles (username) VALUES ('alice')")
            audited.connection.execute("INSERT INTO posts (title) VALUES ('First')")
            audited.connection.execute("UPDATE posts SET status = 'published' WHERE title = 'First'")
            txid = audited.connection.execute("SELECT txid_current()").fetchone()
        assert txid is not None
        audited.act_as(BOB)
        audited.connection.execute("UPDATE posts SET headline = 'Later' WHERE id = %s", [audited.published_post])
        rows = audited.recorded()
        assert [(row[0], row[1], row[5]) for row in rows] == [
            ("profiles", "INSERT", ALICE),
            ("posts", "INSERT", ALICE),
            ("posts", "UPDATE", ALICE),
            ("posts", "UPDATE", BOB),
        ]
        assert {row[6] for row in rows[:3]} == {txid[0]}
        assert rows[3][6] != txid[0]

    def test_log_readable_by_service_role_only(self, audited: Audited) -> None:
        """service_role reads audit.log; anon and authenticated cannot read it; nobody can forge or erase it."""
        audited.act_as(BOB)
        audited.connection.execute("UPDATE posts SET headline = 'Seen' WHERE id = %s", [audited.published_post])
        as_user(audited.connection, audited.project.role("service_role"), None, {"role": "service_role"})
        rows = audited.connection.execute(
            "SELECT table_name, operation, actor::text FROM audit.log WHERE id > %s", [audited.mark]
        ).fetchall()
        assert rows == [("posts", "UPDATE", BOB)]
        for statement in ("DELETE FROM audit.log", "UPDATE audit.log SET actor = NULL"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                audited.connection.execute(statement)
        for role, sub in (("anon", None), ("authenticated", BOB)):
            as_user(audited.connection, audited.project.role(role), sub)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                audited.connection.execute("SELECT * FROM audit.log")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                audited.connection.execute("INSERT INTO audit.log (table_name, operation) VALUES ('posts', 'DELETE')")
        assert len(audited.recorded()) == 1

    def test_table_without_audit_records_nothing(self, audited: Audited) -> None:
        """comments has `audit: false`: no trigger, and its changes never reach audit.log."""
        audited.connection.execute("RESET ROLE")
        triggers = audited.connection.execute(
            "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname = 'kliv_audit' ORDER BY 1"
        ).fetchall()
        assert triggers == [("posts",), ("profiles",)]
        audited.act_as(BOB)
        audited.connection.execute(
            "INSERT INTO comments (post_id, body) VALUES (%s, 'first!')", [audited.published_post]
        )
        as_user(audited.connection, audited.project.role("service_role"), None)
        assert audited.connection.execute("UPDATE comments SET body = 'edited'").rowcount == 1
        audited.act_as(BOB)
        assert audited.connection.execute("DELETE FROM comments").rowcount == 1
        assert audited.recorded() == []
        audited.connection.execute("RESET ROLE")
        assert audited.connection.execute("SELECT 1 FROM audit.log WHERE table_name = 'comments'").rowcount == 0
