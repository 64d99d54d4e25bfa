"""Applies that race or stop half-way: nothing false is reported, nothing is lost, nothing rebuilt.

The review found: two concurrent `kliv apply` of one project (the locks were
in-process only) made the loser report hundreds of false `failed` events; a
crash before the project transaction left the database's creation never
audited; a crash between the commit and the inventory record made the next
apply rebuild every constraint, index and policy. A crash is simulated by a
`KeyboardInterrupt` at the point in question: it passes every `except
Exception`, as a killed process would leave things.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres_projects import ROOT, Project
from typer.testing import CliRunner

from kliv.cli import app
from kliv.stacks import PostgresEngine
from kliv.stacks.errors import ConflictError
from kliv.stacks.postgres import applying, inventory, outbox
from kliv.stacks.postgres import engine as engine_module


def _outcomes(created: Project) -> list[tuple[str, str]]:
    """(subject, type) of every event of the project the relay would publish."""
    rows = outbox.read(created.url, f"{created.namespace}/blog", limit=None)
    return [(json.loads(r.body)["subject"], json.loads(r.body)["type"].rsplit(".", 1)[1]) for r in rows]


@pytest.fixture
def blog(project: Callable[[str | Path], Project]) -> Project:
    return project(ROOT / "examples" / "blog")


class TestConcurrentApplies:
    def test_the_second_of_two_is_refused_before_it_changes_anything(self, blog: Project) -> None:
        other = PostgresEngine(blog.url)
        try:
            first, second = blog.prepare(), other.plan(_group(blog))
            blog.engine.apply(first)
            with pytest.raises(ConflictError, match="was applied by another run since this plan"):
                other.apply(second)
            assert [o for o in _outcomes(blog) if o[1] == "failed"] == []
            assert other.plan(_group(blog)).plan.empty
        finally:
            other.close()

    def test_a_running_apply_holds_the_project(self, blog: Project) -> None:
        prepared = blog.prepare()
        holder = psycopg.connect(psycopg.conninfo.make_conninfo(blog.url, dbname="kliv"), autocommit=True)
        try:
            assert inventory.project_lock(holder, blog.namespace, "blog")
            with pytest.raises(ConflictError, match=r"another apply of Project .* is running"):
                blog.engine.apply(prepared)
            result = CliRunner().invoke(
                app, ["apply", str(blog.folder)], env={"KLIV_DATABASE_URL": blog.url, "KLIV_CONFIG": "/nonexistent"}
            )
            assert result.exit_code == 3, result.output  # failed, nothing changed
            assert "is running; nothing was applied" in result.output
            assert _outcomes(blog) == []
        finally:
            pid = holder.info.backend_pid
            holder.close()  # the session lock goes with the session, as with a killed process
        with psycopg.connect(blog.url) as admin:  # the backend exits a moment after the client closed
            for _ in range(100):
                if admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() == (0,):
                    break
                time.sleep(0.05)
        blog.engine.apply(prepared)
        assert blog.plan().empty

    def test_racing_threads(self, blog: Project) -> None:
        """Two engines (two processes' worth of connections) apply the same plan at once: one wins."""
        engines = [PostgresEngine(blog.url), PostgresEngine(blog.url)]
        plans = [e.plan(_group(blog)) for e in engines]
        results: list[str] = []

        def run(index: int) -> None:
            try:
                engines[index].apply(plans[index])
                results.append("applied")
            except ConflictError:
                results.append("conflict")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for engine in engines:
            engine.close()
        assert sorted(results) == ["applied", "conflict"]
        assert [o for o in _outcomes(blog) if o[1] == "failed"] == []
        assert blog.plan().empty


class TestStoppedHalfWay:
    def test_stopped_before_the_project_transaction(self, blog: Project, monkeypatch: pytest.MonkeyPatch) -> None:
        """The database and roles exist, nothing else: the next apply finishes the creation and audits it."""
        original = applying.in_transaction

        def crash(connection: Any, statements: list[str], before_commit: Any = None) -> None:
            if before_commit is not None:
                raise KeyboardInterrupt
            original(connection, statements, before_commit)

        _stopped(blog, monkeypatch, applying, "in_transaction", crash)
        with blog.connect() as connection:
            assert connection.execute("SELECT to_regclass('public.posts')").fetchone() == (None,)
        [project] = [c for c in blog.plan().changes if c.resource.startswith("Project/")]
        assert project.action == "create"
        assert project.summary[0].startswith("finish creating the project")
        blog.apply()
        assert (f"Project/{blog.namespace}/blog", "created") in _outcomes(blog)
        assert blog.plan().empty

    def test_stopped_between_commit_and_record(self, blog: Project, monkeypatch: pytest.MonkeyPatch) -> None:
        """The pending record written before the commit stands: nothing is rebuilt, nothing audited twice
        (the new expressions' fingerprints, which it holds as a change to the recorded ones, included)."""
        blog.apply()
        teaser = {"name": "teaser", "type": "text", "default": "'none'", "check": "length(teaser) < 500"}
        blog.edit("Table", "posts", lambda d: d["spec"]["columns"].append(teaser))

        def crash(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt

        _stopped(blog, monkeypatch, engine_module.inventory, "record", crash)
        with blog.connect() as connection:
            assert connection.execute(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'posts'::regclass AND attname = 'teaser'"
            ).fetchone() == (1,)
        plan = blog.plan()
        assert [c.resource for c in plan.changes if c.action != "noop"] == []
        updated = [o for o in _outcomes(blog) if o == (f"Table/{blog.namespace}/posts", "updated")]
        assert len(updated) == 1

    def test_stopped_between_commit_and_record_twice(self, blog: Project, monkeypatch: pytest.MonkeyPatch) -> None:
        """Two applies in a row that each stop after their commit: the second planned from the first's
        pending record, so its own record must hold both changes (a record of what changed against
        rows that do not hold the first change would lose it)."""
        blog.apply()

        def crash(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt

        teaser = {"name": "teaser", "type": "text", "default": "'none'"}
        blog.edit("Table", "posts", lambda d: d["spec"]["columns"].append(teaser))
        with monkeypatch.context() as patched:
            _stopped(blog, patched, engine_module.inventory, "record", crash)
        blog.edit("Table", "comments", lambda d: d["spec"].update(deletionPolicy="Delete"))  # another resource
        with monkeypatch.context() as patched:
            _stopped(blog, patched, engine_module.inventory, "record", crash)
        prepared = blog.prepare()
        assert prepared.plan.empty
        assert prepared.changed_specs == []  # both specs as applied: nothing audited again
        row = (
            blog.engine.control_session()
            .execute(
                "SELECT retain FROM inventory.resources WHERE namespace = %s AND name = 'comments'", [blog.namespace]
            )
            .fetchone()
        )
        assert row == (True,)  # the rows still as the first apply left them: only the pending records moved
        blog.apply()
        assert blog.plan().empty

    def test_stopped_after_an_online_build(self, blog: Project, monkeypatch: pytest.MonkeyPatch) -> None:
        """An index built after the transaction, then a crash before its event: the next apply audits it
        (rebuilding that one index, whose spelling the record could not hold yet)."""
        blog.apply()
        blog.edit("Table", "posts", lambda d: d["spec"].setdefault("indexes", []).append({"columns": ["title"]}))
        original = applying.single_steps

        def crash(connection: Any, steps: list[Any], progress: Any) -> None:
            original(connection, steps, progress)
            if steps and steps[0][0].phase == "online":
                raise KeyboardInterrupt  # built, not yet audited

        _stopped(blog, monkeypatch, applying, "single_steps", crash)
        prepared = blog.prepare()
        [change] = [c for c in prepared.plan.changes if c.action != "noop"]
        assert (change.resource, change.summary) == (
            f"Table/{blog.namespace}/posts",
            ["replace index posts_title_idx", "create index posts_title_idx"],
        )
        assert f"Table/{blog.namespace}/posts" in prepared.changed_specs
        blog.engine.apply(prepared)
        assert (f"Table/{blog.namespace}/posts", "updated") in _outcomes(blog)
        assert blog.plan().empty

    def test_stopped_before_commit_is_not_trusted(self, blog: Project, monkeypatch: pytest.MonkeyPatch) -> None:
        """A pending record whose transaction never committed is ignored: the change is planned again."""
        blog.apply()
        blog.edit("Table", "posts", lambda d: d["spec"]["columns"].append({"name": "teaser", "type": "text"}))
        original = applying.in_transaction

        def crash_at_commit(connection: Any, statements: list[str], before: Any = None) -> None:
            if before is None:
                original(connection, statements, before)
                return

            def then_stop(conn: Any) -> None:
                before(conn)
                raise KeyboardInterrupt  # after the pending record, before COMMIT

            original(connection, statements, then_stop)

        _stopped(blog, monkeypatch, applying, "in_transaction", crash_at_commit)
        [change] = [c for c in blog.plan().changes if c.action != "noop"]
        assert change.summary == ["add column teaser"]
        blog.apply()
        assert blog.plan().empty


def _stopped(blog: Project, monkeypatch: pytest.MonkeyPatch, where: Any, name: str, crash: Any) -> None:
    """Apply with ``where.name`` replaced by ``crash`` (which stops it), then restore, as a restarted process."""
    monkeypatch.setattr(where, name, crash)
    with pytest.raises(KeyboardInterrupt):
        blog.apply()
    monkeypatch.undo()
    blog.engine.close()


def _group(created: Project) -> Any:
    from kliv.specs import load

    [group] = [g for g in load([created.folder]).specs.projects.values() if g.project]
    return group
