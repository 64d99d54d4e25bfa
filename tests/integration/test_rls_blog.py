"""Row-level security of the blog example, proven against the real database.

Rows are inserted as the superuser, then read and written as the project's
roles with JWT claims, as PostgREST would do it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
from postgres_projects import ROOT, Project, as_user

ALICE = "00000000-0000-4000-8000-00000000a11c"
BOB = "00000000-0000-4000-8000-000000000b0b"


@dataclasses.dataclass
class Blog:
    """The applied blog project, an admin connection and the ids of the seeded rows."""

    project: Project
    connection: psycopg.Connection[Any]
    alice_published: str
    alice_draft: str
    bob_published: str
    bob_draft: str
    comment_on_alice_published: int
    comment_on_bob_draft: int

    def as_anon(self) -> None:
        as_user(self.connection, self.project.role("anon"), None)

    def as_author(self, sub: str) -> None:
        as_user(self.connection, self.project.role("authenticated"), sub, {"role": "authenticated"})

    def as_service(self) -> None:
        as_user(self.connection, self.project.role("service_role"), None, {"role": "service_role"})

    def ids(self, sql: str, params: list[Any] | None = None) -> set[Any]:
        return {row[0] for row in self.connection.execute(sql, params).fetchall()}


@pytest.fixture
def blog(project: Callable[[str | Path], Project]) -> Iterator[Blog]:
    """The blog example applied, with two authors, a published post and a draft each, and two comments."""
    created = project(ROOT / "examples" / "blog")
    created.apply()
    with created.connect() as connection:
        connection.execute(
            "INSERT INTO profiles (id, username) VALUES (%s, 'alice'), (%s, 'bob')",
            [ALICE, BOB],
        )

        def post(author: str, status: str, title: str) -> str:
            row = connection.execute(
                "INSERT INTO posts (author_id, status, title) VALUES (%s, %s, %s) RETURNING id::text",
                [author, status, title],
            ).fetchone()
            assert row is not None
            return str(row[0])

        def comment(post_id: str, author: str) -> int:
            row = connection.execute(
                "INSERT INTO comments (post_id, author_id, body) VALUES (%s, %s, 'hello') RETURNING id",
                [post_id, author],
            ).fetchone()
            assert row is not None
            return int(row[0])

        alice_published = post(ALICE, "published", "Alice in public")
        alice_draft = post(ALICE, "draft", "Alice thinking")
        bob_published = post(BOB, "published", "Bob in public")
        bob_draft = post(BOB, "draft", "Bob thinking")
        seeded = Blog(
            project=created,
            connection=connection,
            alice_published=alice_published,
            alice_draft=alice_draft,
            bob_published=bob_published,
            bob_draft=bob_draft,
            comment_on_alice_published=comment(alice_published, BOB),
            comment_on_bob_draft=comment(bob_draft, BOB),
        )
        yield seeded
        connection.execute("RESET ROLE")


class TestBlogRowLevelSecurity:
    """Readers see published posts, authors own their posts, the service role sees everything."""

    def test_anon_sees_only_published_posts(self, blog: Blog) -> None:
        """The anon role reads the two published posts and neither draft."""
        blog.as_anon()
        assert blog.ids("SELECT id::text FROM posts") == {blog.alice_published, blog.bob_published}
        assert blog.ids("SELECT id::text FROM posts WHERE status = 'draft'") == set()

    def test_author_sees_own_drafts_not_others(self, blog: Blog) -> None:
        """Alice reads every published post and her own draft, never Bob's draft."""
        blog.as_author(ALICE)
        assert blog.ids("SELECT id::text FROM posts") == {blog.alice_published, blog.alice_draft, blog.bob_published}
        assert blog.ids("SELECT id::text FROM posts WHERE id = %s", [blog.bob_draft]) == set()
        blog.as_author(BOB)
        assert blog.ids("SELECT id::text FROM posts") == {blog.alice_published, blog.bob_published, blog.bob_draft}

    def test_author_inserts_only_as_themselves(self, blog: Blog) -> None:
        """Alice may insert a post as herself (explicitly or by default); a forged author_id is refused."""
        blog.as_author(ALICE)
        blog.connection.execute("INSERT INTO posts (author_id, title) VALUES (%s, 'Mine')", [ALICE])
        blog.connection.execute("INSERT INTO posts (title) VALUES ('Mine by default')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            blog.connection.execute("INSERT INTO posts (author_id, title) VALUES (%s, 'Forged')", [BOB])
        blog.connection.execute("RESET ROLE")
        rows = blog.connection.execute(
            "SELECT title, author_id::text FROM posts WHERE title LIKE 'Mine%%' OR title = 'Forged' ORDER BY title"
        ).fetchall()
        assert rows == [("Mine", ALICE), ("Mine by default", ALICE)]

    def test_author_cannot_change_another_authors_post(self, blog: Blog) -> None:
        """Alice's update and delete of Bob's posts affect 0 rows; the same statements work on her own post."""
        blog.as_author(ALICE)
        for post in (blog.bob_published, blog.bob_draft):
            updated = blog.connection.execute("UPDATE posts SET title = 'Hijacked' WHERE id = %s", [post])
            assert updated.rowcount == 0
            deleted = blog.connection.execute("DELETE FROM posts WHERE id = %s", [post])
            assert deleted.rowcount == 0
        own = blog.connection.execute("UPDATE posts SET headline = 'Edited' WHERE id = %s", [blog.alice_draft])
        assert own.rowcount == 1
        blog.connection.execute("RESET ROLE")
        rows = blog.connection.execute(
            "SELECT id::text, title FROM posts WHERE author_id = %s ORDER BY title", [BOB]
        ).fetchall()
        assert rows == [(blog.bob_published, "Bob in public"), (blog.bob_draft, "Bob thinking")]

    def test_author_cannot_hand_a_post_to_another_author(self, blog: Blog) -> None:
        """Updating her own post to author_id = Bob fails the update policy's check."""
        blog.as_author(ALICE)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            blog.connection.execute("UPDATE posts SET author_id = %s WHERE id = %s", [BOB, blog.alice_draft])

    def test_comments_visible_only_on_visible_posts(self, blog: Blog) -> None:
        """The comment on Bob's draft is hidden from anon and Alice, and visible to Bob."""
        everything = {blog.comment_on_alice_published, blog.comment_on_bob_draft}
        blog.as_anon()
        assert blog.ids("SELECT id FROM comments") == {blog.comment_on_alice_published}
        blog.as_author(ALICE)
        assert blog.ids("SELECT id FROM comments") == {blog.comment_on_alice_published}
        blog.as_author(BOB)
        assert blog.ids("SELECT id FROM comments") == everything

    def test_comments_only_as_self_on_published_posts(self, blog: Blog) -> None:
        """Alice comments on a published post as herself; drafts and forged authors are refused."""
        blog.as_author(ALICE)
        blog.connection.execute("INSERT INTO comments (post_id, body) VALUES (%s, 'nice')", [blog.bob_published])
        for post, author in ((blog.bob_draft, ALICE), (blog.alice_draft, ALICE), (blog.bob_published, BOB)):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                blog.connection.execute(
                    "INSERT INTO comments (post_id, author_id, body) VALUES (%s, %s, 'sneaky')", [post, author]
                )
        blog.connection.execute("RESET ROLE")
        rows = blog.connection.execute(
            "SELECT post_id::text, author_id::text, body FROM comments WHERE body <> 'hello'"
        )
        assert rows.fetchall() == [(blog.bob_published, ALICE, "nice")]

    def test_service_role_bypasses_rls(self, blog: Blog) -> None:
        """The service role reads every post and comment and may update any post."""
        blog.as_service()
        assert blog.ids("SELECT id::text FROM posts") == {
            blog.alice_published,
            blog.alice_draft,
            blog.bob_published,
            blog.bob_draft,
        }
        assert blog.ids("SELECT id FROM comments") == {blog.comment_on_alice_published, blog.comment_on_bob_draft}
        updated = blog.connection.execute("UPDATE posts SET status = 'archived' WHERE id = %s", [blog.bob_draft])
        assert updated.rowcount == 1

    def test_unknown_subject_sees_only_published(self, blog: Blog) -> None:
        """A signed-in user without posts reads exactly what anon reads."""
        blog.as_author(str(uuid.uuid4()))
        assert blog.ids("SELECT id::text FROM posts") == {blog.alice_published, blog.bob_published}


class TestBlogSignUp:
    """The sign-up hook: a row in auth.users (as the platform writes it) gets its profile."""

    def test_sign_up_creates_the_profile(self, blog: Blog) -> None:
        carol = "00000000-0000-4000-8000-00000000ca01"
        blog.connection.execute(
            "INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES (%s, 'carol@example.com', %s)",
            [carol, '{"username": "carol", "full_name": "Carol C."}'],
        )
        blog.as_author(carol)
        row = blog.connection.execute("SELECT username, display_name FROM profiles WHERE id = %s", [carol]).fetchone()
        assert row == ("carol", "Carol C.")

    def test_a_name_is_made_when_the_platform_has_none(self, blog: Blog) -> None:
        dave = "00000000-0000-4000-8000-0000000000da"
        blog.connection.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'dave@example.com')", [dave])
        row = blog.connection.execute("SELECT username FROM profiles WHERE id = %s", [dave]).fetchone()
        assert row == ("user_00000000",)

    def test_users_cannot_sign_themselves_up(self, blog: Blog) -> None:
        blog.as_author(ALICE)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            blog.connection.execute("INSERT INTO auth.users (id) VALUES (gen_random_uuid())")
