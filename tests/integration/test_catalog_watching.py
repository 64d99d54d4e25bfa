"""A long-lived engine reuses its catalog reading while no other session ran DDL (stacks/postgres/watching.py).

Every scenario drives the real engine on a real server and counts the full catalog
readings; what matters is that a plan never misses a change a full reading would see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from postgres_projects import ROOT, Project

from kliv.specs import load
from kliv.stacks import PostgresEngine
from kliv.stacks.postgres import watching

MakeProject = Callable[..., Project]


@pytest.fixture
def readings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The databases read in full, in order (not the tables a plan reads again to verify)."""
    done: list[str] = []
    original = watching.observe

    def counted(connection: psycopg.Connection[Any], only: Any = None) -> Any:
        if only is None:
            done.append(connection.info.dbname)
        return original(connection, only)

    monkeypatch.setattr(watching, "observe", counted)
    return done


def _changes(project: Project) -> list[str]:
    return [c.resource for c in project.plan().changes if c.action != "noop"]


def _eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def _fresh_plan(project: Project, engine: PostgresEngine) -> Any:
    """The plan a new process would make (no reading, no record kept)."""
    validation = load([project.folder])
    [group] = [g for g in validation.specs.projects.values() if g.project]
    return engine.plan(group).plan


def _table(name: str, columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "cloud.kliv.dev/v1alpha1",
        "kind": "Table",
        "metadata": {"name": name},
        "spec": {
            "projectRef": {"name": "blog"},
            "columns": [{"name": "id", "type": "bigint", "primaryKey": True, "identity": "always"}, *columns],
        },
    }


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

    def test_a_lost_listener_means_a_full_reading(self, project: MakeProject, readings: list[str]) -> None:
        """What happened while nobody listened cannot have been heard: the next plan reads, and listens anew."""
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        blog.plan()
        readings.clear()
        with blog.connect() as admin:
            [(killed,)] = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'kliv watch'"
            ).fetchall()
            assert killed == 1
            _eventually(lambda: blog.engine.watches._databases[blog.database].listener is None)
            admin.execute("ALTER TABLE posts ADD COLUMN scratch integer")  # nobody listens
        assert _changes(blog) == [f"Table/{blog.namespace}/posts"]
        assert readings == [blog.database]
        assert _changes(blog) == [f"Table/{blog.namespace}/posts"]
        assert readings == [blog.database]  # listening again since before that reading

    def test_an_idle_engine_holds_back_no_notifications(self, project: MakeProject) -> None:
        """The listener is drained at once, not when the engine next plans: a listener nobody reads
        would hold the server's notification queue (shared by every database) and, once full,
        make every NOTIFY fail."""
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        blog.plan()
        with blog.login("authenticated") as login, login.connect() as app:
            for _ in range(1500):  # ~10 MB: more than socket buffers hold
                with app.transaction():
                    app.execute("SELECT pg_notify('kliv_ddl', repeat('x', 7000))")
            with blog.connect() as admin:
                _eventually(lambda: admin.execute("SELECT pg_notification_queue_usage()").fetchone() == (0.0,))
                [(state,)] = admin.execute(
                    "SELECT wait_event FROM pg_stat_activity WHERE application_name = 'kliv watch' "
                    "AND datname = current_database()"
                ).fetchall()
                assert state != "ClientWrite"

    def test_a_change_no_trigger_reported_is_never_recorded_as_kliv_s(
        self, project: MakeProject, readings: list[str]
    ) -> None:
        """A superuser's DDL with triggers off (or a REINDEX before PG 17) is not heard; when a later
        plan changes that table, its catalog rows are read again first: the plan corrects the drift
        instead of the apply recording it as what kliv made."""
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        blog.plan()
        with blog.connect() as person:
            person.execute("SET session_replication_role = replica")
            person.execute("ALTER TABLE posts ALTER COLUMN body SET DEFAULT 'drifted'")
        assert blog.plan().empty  # not heard yet
        blog.edit("Table", "posts", lambda d: d["spec"]["columns"].append({"name": "teaser", "type": "text"}))
        readings.clear()
        plan = blog.plan()
        assert readings == [blog.database]  # the kept posts differed from the catalog: read again
        [posts] = [c for c in plan.changes if c.action != "noop"]
        assert any("default" in line for line in posts.summary), posts.summary
        blog.apply()
        fresh = PostgresEngine(blog.url)
        try:
            assert _fresh_plan(blog, fresh).empty
        finally:
            fresh.close()
        with blog.connect() as person:
            [(default,)] = person.execute(
                "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'posts'::regclass "
                "AND adnum = (SELECT attnum FROM pg_attribute WHERE attrelid = 'posts'::regclass AND attname = 'body')"
            ).fetchall()
        assert "drifted" not in default

    def test_a_renamed_table_leaves_no_phantom(self, project: MakeProject) -> None:
        """After a table is renamed under a new Table name, the old name is free: declaring a new table
        there creates it (the kept reading no longer holds the old table under its old name)."""
        blog = project(ROOT / "examples" / "blog")
        documents = blog.documents()
        documents.append(_table("drafts", [{"name": "body", "type": "text"}]))
        blog.write(documents)
        blog.apply()
        blog.plan()
        documents = blog.documents()
        for document in documents:
            if document["metadata"]["name"] == "drafts":
                document["metadata"]["name"] = "notes"
                document["spec"]["renamedFrom"] = "drafts"
        blog.write(documents)
        blog.apply()
        documents = blog.documents()
        for document in documents:
            if document["metadata"]["name"] == "notes":
                del document["spec"]["renamedFrom"]
        documents.append(_table("drafts", [{"name": "title", "type": "text"}]))
        blog.write(documents)
        fresh = PostgresEngine(blog.url)
        try:
            expected = [(c.resource, c.action, c.summary) for c in _fresh_plan(blog, fresh).changes]
        finally:
            fresh.close()
        assert [(c.resource, c.action, c.summary) for c in blog.plan().changes] == expected
        assert (f"Table/{blog.namespace}/drafts", "create") in [(r, a) for r, a, _ in expected]

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

    def test_watching_in_a_process_with_many_files_open(self, project: MakeProject, readings: list[str]) -> None:
        """A long-lived process holds file descriptors past select()'s 1,024: the listener is still read."""
        import os
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 2048:
            pytest.skip(f"the hard limit of open files is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
        try:
            blog = project(ROOT / "examples" / "blog")
            blog.apply()
            blog.plan()
            readings.clear()
            assert blog.plan().empty
            assert readings == []
            with blog.connect() as person:
                person.execute("ALTER TABLE posts ADD COLUMN scratch integer")
            assert _changes(blog) == [f"Table/{blog.namespace}/posts"]
            assert readings == [blog.database]
        finally:
            for fd in held:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def test_at_most_capacity_databases_are_watched(
        self, project: MakeProject, readings: list[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One listening connection per watched database, for the last CAPACITY planned: a project
        planned after others took its place reads in full again."""
        monkeypatch.setattr(watching, "CAPACITY", 1)
        blog = project(ROOT / "examples" / "blog")
        other = project(ROOT / "examples" / "blog")
        other.engine.close()
        other.engine = blog.engine  # one engine, two projects
        blog.apply()
        other.apply()
        blog.plan()
        other.plan()  # takes the only place
        readings.clear()
        blog.plan()
        other.plan()
        assert readings == [blog.database, other.database]
        with blog.connect() as admin:
            [(listeners,)] = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kliv watch' AND datname IN (%s, %s)",
                [blog.database, other.database],
            ).fetchall()
        assert listeners <= 1

    def test_a_trigger_calling_another_function_is_not_trusted(self, project: MakeProject, readings: list[str]) -> None:
        blog = project(ROOT / "examples" / "blog")
        blog.apply()
        with blog.connect() as admin:
            admin.execute("CREATE FUNCTION public.quiet() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$")
            admin.execute("DROP EVENT TRIGGER kliv_ddl_end")
            admin.execute("CREATE EVENT TRIGGER kliv_ddl_end ON ddl_command_end EXECUTE FUNCTION public.quiet()")
        blog.plan()
        readings.clear()
        blog.plan()
        blog.plan()
        assert readings == [blog.database, blog.database]
