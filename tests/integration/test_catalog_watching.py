"""A long-lived engine reuses its catalog reading while no other session ran DDL (stacks/postgres/watching.py).

Every scenario drives the real engine on a real server and counts the full catalog
readings; what matters is that a plan never misses a change a full reading would see.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from postgres_projects import ROOT, Project

from kliv.stacks.postgres import watching

MakeProject = Callable[..., Project]


@pytest.fixture
def readings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The databases read in full, in order."""
    done: list[str] = []
    original = watching.observe

    def counted(connection: psycopg.Connection[Any], only: Any = None) -> Any:
        done.append(connection.info.dbname)
        return original(connection, only)

    monkeypatch.setattr(watching, "observe", counted)
    return done


def _changes(project: Project) -> list[str]:
    return [c.resource for c in project.plan().changes if c.action != "noop"]


def _in_thread(work: Callable[[], Any]) -> Any:
    """``work()`` in a new thread (with its own connections), its result or its exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:  # re-raised below, in the test's thread
            outcome.append((False, exc))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    [(succeeded, value)] = outcome
    if not succeeded:
        raise value
    return value


class TestCatalogWatching:
    def test_an_unchanged_database_is_read_once(self, project: MakeProject, readings: list[str]) -> None:
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        assert blog.plan().empty
        readings.clear()
        for _ in range(3):
            assert blog.plan().empty
        assert readings == []  # the first reading stands

    def test_the_engines_own_apply_keeps_the_reading_up_to_date(
        self, project: MakeProject, readings: list[str]
    ) -> None:
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        blog.plan()
        readings.clear()
        blog.edit("Table", "posts", lambda d: d["spec"]["columns"].append({"name": "teaser", "type": "text"}))
        blog.apply()
        assert readings == []
        assert blog.plan().empty  # the column the apply added is in the kept reading
        blog.edit("Table", "posts", lambda d: d["spec"]["columns"].pop())
        [changed] = _changes(blog)
        assert changed == f"Table/{blog.namespace}/posts"
        assert readings == []

    def test_ddl_by_another_session_is_seen_by_the_next_plan(self, project: MakeProject, readings: list[str]) -> None:
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        blog.plan()
        readings.clear()
        with blog.connect() as person:  # someone's psql, behind kliv's back
            person.execute("ALTER TABLE posts ADD COLUMN scratch integer")
        assert _changes(blog) == [f"Table/{blog.namespace}/posts"]  # the drift, as a full reading sees it
        assert readings == [blog.database]
        with blog.connect() as person:
            person.execute("COMMENT ON TABLE comments IS 'noted'")
        assert f"Table/{blog.namespace}/comments" in _changes(blog)

    def test_a_failed_concurrent_index_build_is_seen(self, project: MakeProject, readings: list[str]) -> None:
        """It commits an invalid index before failing: the start of the command is heard."""
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        blog.plan()
        with blog.connect() as person:
            author = "00000000-0000-0000-0000-000000000001"
            person.execute("INSERT INTO profiles (id, username) VALUES (%s, 'someone')", [author])
            person.execute("INSERT INTO posts (title, author_id) VALUES ('a', %s), ('a', %s)", [author, author])
            with pytest.raises(psycopg.errors.UniqueViolation):
                person.execute("CREATE UNIQUE INDEX CONCURRENTLY posts_title_once ON posts (title)")
        readings.clear()
        assert f"Table/{blog.namespace}/posts" in _changes(blog)
        assert readings == [blog.database]

    def test_an_app_login_can_only_cause_a_reading(self, project: MakeProject, readings: list[str]) -> None:
        """Any login may NOTIFY (it costs a full reading, nothing else) but cannot run the trigger
        function, and cannot silence what it listens for."""
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        blog.plan()
        readings.clear()
        with blog.login("authenticated") as login, login.connect() as app:
            assert not login.is_superuser()
            app.execute("NOTIFY kliv_ddl")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("ALTER EVENT TRIGGER kliv_ddl_end DISABLE")
            with pytest.raises(psycopg.Error):
                app.execute("SELECT audit.ddl_changed()")
        assert blog.plan().empty
        assert readings == [blog.database]

    def test_without_the_triggers_every_plan_reads(self, project: MakeProject, readings: list[str]) -> None:
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        with blog.connect() as person:
            person.execute("ALTER EVENT TRIGGER kliv_ddl_end DISABLE")
        blog.plan()
        readings.clear()
        with blog.connect() as person:
            person.execute("ALTER TABLE posts ADD COLUMN scratch integer")  # only the start trigger hears it
            person.execute("ALTER EVENT TRIGGER kliv_ddl_start DISABLE")
            person.execute("ALTER TABLE posts ADD COLUMN scratch2 integer")  # heard by nobody
        assert _changes(blog) == [f"Table/{blog.namespace}/posts"]
        assert _changes(blog) == [f"Table/{blog.namespace}/posts"]
        assert readings == [blog.database, blog.database]

    def test_ddl_with_triggers_suppressed_is_seen_within_max_age(
        self, project: MakeProject, readings: list[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A superuser can run DDL with event triggers off; that drift waits at most MAX_AGE."""
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        blog.plan()
        with blog.connect() as person:
            person.execute("SET session_replication_role = replica")
            person.execute("ALTER TABLE posts ADD COLUMN scratch integer")
        readings.clear()
        assert blog.plan().empty  # not heard: the reading stands
        monkeypatch.setattr(watching, "MAX_AGE", 0.0)
        assert _changes(blog) == [f"Table/{blog.namespace}/posts"]
        assert readings == [blog.database]

    def test_a_plan_and_an_apply_on_other_threads(self, project: MakeProject, readings: list[str]) -> None:
        """Each thread has its own connection: another thread's apply is still the engine's own DDL,
        and its re-reading keeps the reading every thread uses up to date (the operator plans and
        applies in whichever worker thread is free)."""
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        blog.plan()  # this thread's connection listens since before this reading
        blog.edit("Table", "posts", lambda d: d["spec"]["columns"].append({"name": "teaser", "type": "text"}))
        _in_thread(blog.apply)
        readings.clear()
        assert blog.plan().empty  # the column the other thread added is in the kept reading
        assert readings == []
        with blog.connect() as person:  # heard here, though the other thread's connection is idle
            person.execute("ALTER TABLE posts ADD COLUMN scratch integer")
        assert _changes(blog) == [f"Table/{blog.namespace}/posts"]
        assert readings == [blog.database]

    def test_a_connection_that_began_listening_later_reads_in_full(
        self, project: MakeProject, readings: list[str]
    ) -> None:
        """It cannot have heard what happened before it listened: a new thread's first plan reads."""
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        blog.plan()
        readings.clear()
        assert _in_thread(lambda: blog.plan().empty)
        assert readings == [blog.database]
        assert blog.plan().empty  # this thread listened before that reading began: reused
        assert readings == [blog.database]

    def test_an_apply_that_stops_half_way_leaves_nothing_reused(
        self, project: MakeProject, readings: list[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from kliv.stacks.postgres import engine as engine_module

        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        blog.edit("Table", "posts", lambda d: d["spec"]["columns"].append({"name": "teaser", "type": "text"}))
        prepared = blog.prepare()

        def crash(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt

        with monkeypatch.context() as patched:
            patched.setattr(engine_module.inventory, "record", crash)
            with pytest.raises(KeyboardInterrupt):
                blog.engine.apply(prepared)
        readings.clear()
        assert blog.plan().empty  # committed before the stop: the new reading has the column
        assert readings == [blog.database]
