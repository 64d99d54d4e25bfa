"""Regression tests for the bugs an independent review of the native engine found.

Each test reproduces one finding against the real servers and proves it fixed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres_projects import Project
from psycopg.conninfo import make_conninfo

from kliv.specs import ProjectSpecs, load
from kliv.stacks import AlreadyExistsError, ApplyFailedError, EngineError, PostgresEngine
from kliv.stacks.postgres import inventory, naming
from kliv.stacks.postgres.pool import SessionPool

MakeProject = Callable[[str | Path], Project]


HEAD = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: p}
spec:
  enums:
    - {name: st, values: [draft, published]}
"""


def table(body: str) -> str:
    return HEAD + "---\napiVersion: cloud.kliv.dev/v1alpha1\nkind: Table\n" + body


def group(created: Project) -> ProjectSpecs:
    validation = load([created.folder])
    if not validation.valid:
        pytest.fail(str([e.message for e in validation.errors]))  # a broken test, not the bug
    [found] = [g for g in validation.specs.projects.values() if g.project]
    return found


def column(document: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in document["spec"]["columns"] if c["name"] == name]
    return found


def changes(created: Project) -> list[tuple[str, list[str]]]:
    return [(c.resource, c.summary) for c in created.plan().changes if c.action != "noop"]


def _delete(created: Project) -> None:
    """What the operator does when the Project (deletionPolicy Delete) is deleted."""
    specs = group(created)
    assert specs.project is not None
    database = specs.project.resource.database_name
    deletion = created.engine.plan_deletion(specs.namespace, specs.name, database, drop=True)
    created.engine.apply_deletion(deletion, allow_data_loss=True, actor="test")


def database_exists(url: str, name: str) -> bool:
    with psycopg.connect(url, autocommit=True) as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def other_project(url: str, tmp_path: Path, database: str, documents: list[dict[str, Any]]) -> Project:
    folder = tmp_path / f"other-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    created = Project(url, folder, f"other-{uuid.uuid4().hex[:8]}", database)
    created.write(documents)
    return created


class TestDeletion:
    """deletionPolicy Delete only ever drops what the Project claims."""

    def test_delete_of_refused_project_keeps_the_owners_database(
        self, project: MakeProject, server_url: str, tmp_path: Path
    ) -> None:
        owner = project(table("metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: id, type: int}]}"))
        owner.apply()
        intruder = other_project(
            server_url,
            tmp_path,
            owner.database,
            [
                {
                    "apiVersion": "cloud.kliv.dev/v1alpha1",
                    "kind": "Project",
                    "metadata": {"name": "evil"},
                    "spec": {"deletionPolicy": "Delete"},
                },
            ],
        )
        with pytest.raises(AlreadyExistsError):
            intruder.engine.plan(group(intruder))
        _delete(intruder)
        assert database_exists(server_url, owner.database)

    def test_delete_never_drops_an_unmanaged_database(self, server_url: str, tmp_path: Path) -> None:
        name = f"unmanaged_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            created = other_project(
                server_url,
                tmp_path,
                name,
                [
                    {
                        "apiVersion": "cloud.kliv.dev/v1alpha1",
                        "kind": "Project",
                        "metadata": {"name": "x"},
                        "spec": {"deletionPolicy": "Delete"},
                    },
                ],
            )
            _delete(created)
            assert database_exists(server_url, name)
        finally:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


class TestClaims:
    """Physical names (databases, roles) belong to one Project."""

    def test_role_prefixes_never_shared(self, server_url: str, tmp_path: Path) -> None:
        """A hashed role prefix cannot be spelled as a database name, and unclaimed roles are never adopted."""
        from kliv.specs.errors import SpecValueError
        from kliv.specs.names import postgres_identifier

        long_name = f"tenant_{uuid.uuid4().hex[:8]}_" + "x" * 45
        crafted = naming.role_prefix(long_name)
        with pytest.raises(SpecValueError):
            postgres_identifier(crafted)  # no other project's database can be called like this prefix
        name = f"roles_{uuid.uuid4().hex[:8]}"
        squatter = other_project(
            server_url,
            tmp_path,
            name,
            [
                {"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Project", "metadata": {"name": "a"}},
            ],
        )
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE ROLE "{naming.role(name, "anon")}" NOLOGIN')
        try:
            with pytest.raises(AlreadyExistsError, match="exist but no kliv Project claims them"):
                squatter.plan()
        finally:
            squatter.engine.drop_project(name)


class TestConcurrency:
    """The external client may run reconciles concurrently."""

    def test_concurrent_reconciles(self, project: MakeProject) -> None:
        spec = table(
            "metadata: {name: t}\nspec:\n  projectRef: {name: p}\n"
            "  columns: [{name: id, type: bigint, primaryKey: true}, {name: v, type: text, check: 'length(v) > 0'}]\n"
        )
        made = [project(spec) for _ in range(6)]
        engine = PostgresEngine(made[0].url)

        def converge(created: Project) -> None:
            engine.apply(engine.plan(group(created)))

        async def scenario() -> list[Any]:
            return await asyncio.gather(*(asyncio.to_thread(converge, m) for m in made), return_exceptions=True)

        results = asyncio.run(scenario())
        engine.close()
        assert [type(r).__name__ for r in results if isinstance(r, BaseException)] == []

    def test_connections_kept_per_thread_are_bounded(self, project: MakeProject) -> None:
        """A thread serving many projects keeps admin + control + KEPT_PROJECT_SESSIONS connections."""
        spec = table("metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: id, type: int}]}")
        made = [project(spec) for _ in range(5)]
        name = f"kliv-bound-{uuid.uuid4().hex[:8]}"
        engine = PostgresEngine(made[0].url, application_name=name)
        try:
            for created in made:
                engine.apply(engine.plan(group(created)), actor="test")
            with psycopg.connect(made[0].url, autocommit=True) as admin:
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]
                ).fetchone()
            assert row is not None
            assert row[0] == 2 + SessionPool.KEPT_PROJECT_SESSIONS
        finally:
            engine.close()


class TestIdempotency:
    """Applying the same specs twice plans nothing; no change is ignored."""

    def test_type_spellings_replan_empty(self, project: MakeProject) -> None:
        created = project("""
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: p}
spec:
  enums: [{name: position, values: [a, b]}]
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: t}
spec:
  projectRef: {name: p}
  columns:
    - {name: c1, type: char}
    - {name: c2, type: numeric(10)}
    - {name: c3, type: position}
""")
        created.apply()
        assert changes(created) == []

    def test_enum_value_removed_is_not_ignored(self, project: MakeProject) -> None:
        """Removing an enum value is refused with a clear error, never silently ignored."""
        created = project(HEAD)
        created.apply()
        created.edit("Project", "p", lambda d: d["spec"]["enums"][0].__setitem__("values", ["published"]))
        with pytest.raises(EngineError, match="values can only be added"):
            created.plan()


class TestApplyOrdering:
    """Column, enum and policy changes run in an order Postgres accepts."""

    def test_new_enum_value_used_as_default(self, project: MakeProject) -> None:
        created = project(
            table(
                "metadata: {name: t}\nspec:\n  projectRef: {name: p}\n"
                "  columns: [{name: id, type: int}, {name: s, type: st, default: \"'draft'\"}]\n"
            )
        )
        created.apply()
        created.edit("Project", "p", lambda d: d["spec"]["enums"][0]["values"].append("archived"))
        created.edit("Table", "t", lambda d: column(d, "s").__setitem__("default", "'archived'"))
        try:
            created.apply()
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None

    def test_identity_on_nullable_column(self, project: MakeProject) -> None:
        created = project(table("metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: n, type: int}]}"))
        created.apply()
        created.edit("Table", "t", lambda d: column(d, "n").__setitem__("identity", "byDefault"))
        try:
            created.apply(allow_data_loss=True)
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None

    def test_default_to_identity(self, project: MakeProject) -> None:
        created = project(
            table(
                "metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: n, type: int, nullable: false, "
                "default: '0'}]}"
            )
        )
        created.apply()

        def change(document: dict[str, Any]) -> None:
            del column(document, "n")["default"]
            column(document, "n")["identity"] = "always"

        created.edit("Table", "t", change)
        try:
            created.apply(allow_data_loss=True)
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None

    def test_identity_starts_after_existing_rows(self, project: MakeProject) -> None:
        created = project(
            table(
                "metadata: {name: t}\nspec: {projectRef: {name: p}, "
                "columns: [{name: id, type: bigint, primaryKey: true}, {name: a, type: text}]}"
            )
        )
        created.apply()
        with created.connect() as connection:
            connection.execute("INSERT INTO t (id, a) VALUES (1, 'x'), (2, 'y')")
        created.edit("Table", "t", lambda d: column(d, "id").__setitem__("identity", "byDefault"))
        created.apply()
        with created.connect() as connection:
            try:
                connection.execute("INSERT INTO t (a) VALUES ('z')")
            except psycopg.errors.UniqueViolation as exc:
                raise AssertionError(str(exc)) from None

    def test_widen_column_used_by_policy(self, project: MakeProject) -> None:
        created = project(
            table(
                "metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: n, type: integer}]}\n"
                "---\napiVersion: cloud.kliv.dev/v1alpha1\nkind: TablePolicy\nmetadata: {name: pol}\n"
                "spec: {projectRef: {name: p}, table: t, command: select, using: 'n >= 0'}\n"
            )
        )
        created.apply()
        created.edit("Table", "t", lambda d: column(d, "n").__setitem__("type", "bigint"))
        try:
            created.apply()
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None

    def test_type_change_with_new_default(self, project: MakeProject) -> None:
        created = project(
            table(
                "metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: v, type: text, default: \"'x'\"}]}"
            )
        )
        created.apply()
        created.edit("Table", "t", lambda d: column(d, "v").update(type="integer", default="0"))
        try:
            created.apply(allow_data_loss=True)
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None


REFERENCED = (
    HEAD
    + """
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: parent}
spec:
  projectRef: {name: p}
  columns:
    - {name: id, type: bigint, primaryKey: true}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: child}
spec:
  projectRef: {name: p}
  columns:
    - {name: id, type: bigint, primaryKey: true}
    - {name: parent_id, type: bigint, references: {table: parent}}
"""
)


class TestRenames:
    """Renames keep keys that others depend on."""

    def test_rename_referenced_key_column(self, project: MakeProject) -> None:
        created = project(REFERENCED)
        created.apply()

        def rename(document: dict[str, Any]) -> None:
            column(document, "id").update(name="pid", renamedFrom="id")

        created.edit("Table", "parent", rename)
        try:
            created.apply()
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None


class TestRetainDelete:
    """Moving a spec document never drops what is still declared."""

    def test_moving_a_table_document_keeps_the_table(self, project: MakeProject) -> None:
        created = project(
            table(
                "metadata: {name: notes}\nspec: {projectRef: {name: p}, deletionPolicy: Delete, "
                "columns: [{name: id, type: int}]}"
            )
        )
        created.apply()
        with created.connect() as connection:
            connection.execute("INSERT INTO notes VALUES (1)")

        def move(document: dict[str, Any]) -> None:
            document["metadata"]["name"] = "notes-v2"
            document["spec"]["name"] = "notes"

        created.edit("Table", "notes", move)
        created.apply(allow_data_loss=True)
        with created.connect() as connection:
            exists = connection.execute("SELECT to_regclass('public.notes') IS NOT NULL").fetchone()
        assert exists == (True,)


class TestNames:
    """Derived names never collide."""

    def test_every_declared_index_exists(self, project: MakeProject) -> None:
        created = project(
            table(
                "metadata: {name: t}\nspec:\n  projectRef: {name: p}\n"
                "  columns: [{name: a, type: text}, {name: s, type: st}]\n"
                "  indexes:\n    - {columns: [a], unique: true}\n"
                "    - {columns: [a], unique: true, where: \"s = 'published'\"}\n"
            )
        )
        created.apply()
        with created.connect() as connection:
            [count] = connection.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 't'").fetchone() or [0]
        assert count == 2

    def test_derived_names_do_not_collide_with_tables(self, project: MakeProject) -> None:
        created = project(
            table(
                "metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: id, type: int, primaryKey: true}]}"
            )
            + "\n---\napiVersion: cloud.kliv.dev/v1alpha1\nkind: Table\nmetadata: {name: t-pkey}\n"
            "spec: {projectRef: {name: p}, columns: [{name: id, type: int}]}\n"
        )
        if not load([created.folder]).valid:
            return  # rejected at validation: fine
        with pytest.raises(EngineError, match="derived for an index of table t is also table t_pkey"):
            created.plan()  # refused before anything is applied, naming both


class TestOnlinePhase:
    """Replacing an index never leaves a moment without its guarantee."""

    def test_failed_unique_index_replacement_keeps_old_guarantee(self, project: MakeProject) -> None:
        created = project(
            table(
                "metadata: {name: posts}\nspec:\n  projectRef: {name: p}\n"
                "  columns: [{name: slug, type: text}, {name: status, type: st}]\n"
                "  indexes: [{name: posts_slug, columns: [slug], unique: true, where: \"status = 'published'\"}]\n"
            )
        )
        created.apply()
        with created.connect() as connection:
            connection.execute("INSERT INTO posts VALUES ('a', 'published'), ('b', 'draft'), ('b', 'draft')")
        created.edit("Table", "posts", lambda d: d["spec"]["indexes"][0].pop("where"))
        with pytest.raises(ApplyFailedError):
            created.apply()
        with created.connect() as connection:
            try:
                connection.execute("INSERT INTO posts VALUES ('a', 'published')")
            except psycopg.errors.UniqueViolation:
                return
        raise AssertionError("a second published post with slug 'a' was accepted")


class TestSecrets:
    """Passwords never show up in errors."""

    def test_malformed_url_never_prints_the_password(self, project: MakeProject) -> None:
        created = project(HEAD)
        url = (
            created.url.replace("postgresql://", "postgresql://u:S3cret PW@", 1)
            if "@" not in created.url
            else (created.url.replace("@", ":S3cret PW@", 1))
        )
        result = subprocess.run(
            [sys.executable, "-c", "from kliv.cli import main; main()", "plan", str(created.folder)],
            env={**os.environ, "KLIV_DATABASE_URL": url, "KLIV_CONFIG": "/nonexistent"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "S3cret" not in result.stdout + result.stderr


class TestQuoting:
    """Literals are right whatever the server's string settings."""

    def test_backslash_comment_with_legacy_strings(self, project: MakeProject) -> None:
        created = project(
            table(
                "metadata: {name: t}\nspec: {projectRef: {name: p}, description: 'C:\\new\\table', "
                "columns: [{name: id, type: int}]}"
            )
        )
        created.engine = PostgresEngine(make_conninfo(created.url, options="-c standard_conforming_strings=off"))
        created.apply()
        assert changes(created) == []


class TestInventoryWrites:
    def test_only_changed_rows_are_written(self, project: MakeProject) -> None:
        """Adding a column to one table rewrites that table's row only; a removed policy's row goes."""
        from postgres_projects import ROOT

        created = project(ROOT / "examples" / "blog")
        created.apply()
        control = created.engine.control_session()

        def rows() -> dict[tuple[str, str], Any]:
            found = control.execute(
                "SELECT kind, name, xmin::text FROM inventory.resources WHERE namespace = %s", [created.namespace]
            ).fetchall()
            return {(kind, name): version for kind, name, version in found}

        before = rows()
        created.edit("Table", "posts", lambda d: d["spec"]["columns"].append({"name": "subtitle2", "type": "text"}))
        documents = [d for d in created.documents() if d["metadata"]["name"] != "comments-own-delete"]
        created.write(documents)
        created.apply(allow_data_loss=True)
        after = rows()
        rewritten = {key for key in after if before.get(key) != after[key]}
        assert rewritten == {("Table", "posts")}
        assert set(before) - set(after) == {("TablePolicy", "comments-own-delete")}

    def test_a_targeted_record_equals_a_full_reading(self, project: MakeProject) -> None:
        """After a change to some tables only those are read again: the recorded fingerprints must be
        exactly what reading every table gives (else the next plan rebuilds, or misses drift)."""
        from postgres_projects import ROOT

        from kliv.stacks.postgres import planning

        created = project(ROOT / "examples" / "blog")
        created.apply()
        created.edit("Table", "posts", lambda d: d["spec"]["columns"].append(
            {"name": "rank", "type": "integer", "default": "0", "check": "rank >= 0"}))  # fmt: skip
        created.edit("TablePolicy", "comments-own-delete", lambda d: d["spec"].update(using="true"))
        prepared = created.prepare()
        assert prepared.touched == {"posts", "comments"}
        created.engine.apply(prepared)
        recorded = inventory.load(created.engine.control_session(), created.namespace, "blog").fingerprints
        full = dataclasses.replace(created.prepare(), touched=None)
        with created.connect() as connection:
            assert recorded == planning.applied_fingerprints(connection, full)[0]
        assert created.plan().empty

    def test_a_record_from_before_digests_still_matches(self, project: MakeProject) -> None:
        """Records written before the inventory kept digests hold each expression's text: the next
        plan must find them unchanged (else an upgrade would rebuild every index and policy)."""
        import json as json_module

        from postgres_projects import ROOT

        created = project(ROOT / "examples" / "blog")
        created.apply()
        texts = created.prepare().desired.fingerprints()
        control = created.engine.control_session()
        recorded = inventory.load(control, created.namespace, "blog").fingerprints
        assert recorded
        assert all(value[0].startswith("sha256:") for value in recorded.values())
        old = {key: [texts[key], value[1]] for key, value in recorded.items()}
        # As that kliv recorded them: in the project's row. The buckets this kliv wrote before stay,
        # stale (a rolling upgrade, or a rollback): the column, written last, wins.
        with control.transaction():
            control.execute(
                "UPDATE inventory.fingerprints SET entries = (SELECT jsonb_object_agg(key, '[\"stale\", \"stale\"]') "
                "FROM jsonb_each(entries)) WHERE namespace = %s", [created.namespace])  # fmt: skip
            control.execute("UPDATE inventory.projects SET fingerprints = %s WHERE namespace = %s",
                            [json_module.dumps(old), created.namespace])  # fmt: skip
        assert inventory.load(control, created.namespace, "blog").fingerprints == old
        assert created.plan().empty
        # The next apply moves them into buckets, as digests.
        created.edit("Table", "posts", lambda d: d["spec"]["columns"].append({"name": "rank", "type": "integer"}))
        created.apply()
        [column] = control.execute(
            "SELECT fingerprints FROM inventory.projects WHERE namespace = %s", [created.namespace]
        ).fetchone() or [None]
        assert column == {}
        moved = inventory.load(control, created.namespace, "blog").fingerprints
        assert moved.keys() == recorded.keys()
        assert all(v[0].startswith("sha256:") for v in moved.values())
        assert created.plan().empty

    def test_the_engines_own_record_is_reused_until_another_replaces_it(self, project: MakeProject) -> None:
        """After its apply an engine plans from the record it wrote (no rows read back); once another
        engine (another replica) records an apply, the next plan reads that one."""
        from postgres_projects import ROOT

        created = project(ROOT / "examples" / "blog")
        created.apply()
        control = created.engine.control_session()
        statements: list[str] = []
        original = control.execute

        def counted(query: Any, *args: Any, **kwargs: Any) -> Any:
            statements.append(str(query))
            return original(query, *args, **kwargs)

        control.execute = counted  # type: ignore[method-assign]
        try:
            assert created.plan().empty
            assert not [s for s in statements if "FROM inventory.resources" in s]
            other = PostgresEngine(created.url)
            try:
                created.edit(
                    "Table", "posts", lambda d: d["spec"]["columns"].append({"name": "rank", "type": "integer"})
                )
                group = next(g for g in load([created.folder]).specs.projects.values() if g.project)
                other.apply(other.plan(group))
            finally:
                other.close()
            statements.clear()
            prepared = created.prepare()
            assert [s for s in statements if "FROM inventory.resources" in s]  # read back: not this engine's
            assert prepared.plan.empty
            assert prepared.changed_specs == []  # the other engine's record of the new posts spec
        finally:
            del control.execute

    def test_only_the_buckets_of_changed_fingerprints_are_written(self, project: MakeProject) -> None:
        from postgres_projects import ROOT

        created = project(ROOT / "examples" / "blog")
        created.apply()
        control = created.engine.control_session()

        def buckets() -> dict[int, str]:
            rows = control.execute(
                "SELECT bucket, xmin::text FROM inventory.fingerprints WHERE namespace = %s", [created.namespace]
            ).fetchall()
            return dict(rows)

        before = buckets()
        fingerprints = inventory.load(control, created.namespace, "blog").fingerprints
        created.edit(
            "Table", "posts", lambda d: d["spec"]["columns"].append({"name": "rank", "type": "integer", "default": "0"})
        )
        created.apply()
        after = buckets()
        added = set(inventory.load(control, created.namespace, "blog").fingerprints) - set(fingerprints)
        assert added == {"default:posts.rank"}
        assert {b for b in after if after[b] != before.get(b)} == {inventory._bucket("default:posts.rank")}
