"""Review findings: each test demonstrates a real bug of the native Postgres engine or the CLI.

Every test is ``xfail(strict=True, raises=AssertionError)``: it passes only while the bug
exists and the demonstrated behaviour is the one described (any other error is a real
failure). When a bug is fixed, its test XPASSes strictly: drop the marker then.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres_projects import Project
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from kliv.cli import app
from kliv.specs import ProjectSpecs, load
from kliv.stacks import AlreadyExistsError, ApplyFailedError, PostgresEngine
from kliv.stacks.postgres import naming
from kliv.stacks.postgres.client import PostgresProjectClient

MakeProject = Callable[[str | Path], Project]


def bug(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"BUG: {reason}")


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
    assert validation.valid, [e.message for e in validation.errors]
    [found] = [g for g in validation.specs.projects.values() if g.project]
    return found


def column(document: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in document["spec"]["columns"] if c["name"] == name]
    return found


def changes(created: Project) -> list[tuple[str, list[str]]]:
    return [(c.resource, c.summary) for c in created.plan().changes if c.action != "noop"]


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
    @bug("client.delete (deletionPolicy Delete) drops the database by name without checking the claim: "
         "a refused Project in another namespace deletes the owner's database")  # fmt: skip
    def test_delete_of_refused_project_keeps_the_owners_database(
        self, project: MakeProject, server_url: str, tmp_path: Path
    ) -> None:
        owner = project(table("metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: id, type: int}]}"))
        owner.apply()
        intruder = other_project(server_url, tmp_path, owner.database, [
            {"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Project", "metadata": {"name": "evil"},
             "spec": {"deletionPolicy": "Delete"}},
        ])  # fmt: skip
        client = PostgresProjectClient(intruder.engine)
        with pytest.raises(AlreadyExistsError):
            asyncio.run(client.observe(group(intruder)))
        asyncio.run(client.delete(group(intruder)))
        assert database_exists(server_url, owner.database)

    @bug("client.delete drops a database kliv never managed (observe says AlreadyExists, delete drops it)")
    def test_delete_never_drops_an_unmanaged_database(self, server_url: str, tmp_path: Path) -> None:
        name = f"unmanaged_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            created = other_project(server_url, tmp_path, name, [
                {"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Project", "metadata": {"name": "x"},
                 "spec": {"deletionPolicy": "Delete"}},
            ])  # fmt: skip
            asyncio.run(PostgresProjectClient(created.engine).delete(group(created)))
            assert database_exists(server_url, name)
        finally:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


class TestClaims:
    @bug("role prefixes are not claimed: a 49-character database name equal to another database's hashed "
         "prefix reuses that project's roles (cross-tenant read through service_role)")  # fmt: skip
    def test_role_prefixes_never_shared(self, server_url: str, tmp_path: Path) -> None:
        long_name = f"tenant_{uuid.uuid4().hex[:8]}_" + "x" * 45
        crafted = naming.role_prefix(long_name)
        assert crafted != long_name and naming.role_prefix(crafted) == crafted

        def documents(name: str) -> list[dict[str, Any]]:
            return [
                {"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Project", "metadata": {"name": name}},
                {"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Table", "metadata": {"name": "secrets"},
                 "spec": {"projectRef": {"name": name}, "columns": [{"name": "v", "type": "text"}]}},
            ]  # fmt: skip

        victim = other_project(server_url, tmp_path, long_name, documents("a"))
        attacker = other_project(server_url, tmp_path, crafted, documents("b"))
        try:
            victim.apply()
            with victim.connect() as connection:
                connection.execute("INSERT INTO secrets VALUES ('tenant A only')")
            try:
                attacker.apply()
            except AlreadyExistsError:
                return  # refused: what should happen
            with victim.connect() as connection:
                connection.execute(f'SET ROLE "{naming.role(crafted, "service_role")}"')
                try:
                    rows = connection.execute("SELECT v FROM secrets").fetchall()
                except psycopg.errors.InsufficientPrivilege:
                    rows = []
            assert rows == []
        finally:
            victim.engine.drop_project(crafted)
            victim.engine.drop_project(long_name)


class TestConcurrency:
    @bug("PostgresProjectClient runs engine calls in asyncio.to_thread but the engine shares its "
         "connections between threads: concurrent reconciles corrupt each other's transactions")  # fmt: skip
    def test_concurrent_reconciles(self, project: MakeProject) -> None:
        spec = table(
            "metadata: {name: t}\nspec:\n  projectRef: {name: p}\n"
            "  columns: [{name: id, type: bigint, primaryKey: true}, {name: v, type: text, check: 'length(v) > 0'}]\n"
        )
        made = [project(spec) for _ in range(6)]
        client = PostgresProjectClient(PostgresEngine(made[0].url))

        async def scenario() -> list[Any]:
            return await asyncio.gather(*(client.create(group(m)) for m in made), return_exceptions=True)

        results = asyncio.run(scenario())
        client.engine.close()
        assert [type(r).__name__ for r in results if isinstance(r, BaseException)] == []


class TestIdempotency:
    @bug("format_type differs from the desired spelling: `char` is character(1), numeric(10) is numeric(10,0), "
         "an enum named like a col_name keyword is quoted; every re-plan changes the type (char/enum as data-loss)")  # fmt: skip
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

    @bug("enum labels removed or reordered in the spec give an empty plan: the change is silently ignored")
    def test_enum_value_removed_is_not_ignored(self, project: MakeProject) -> None:
        created = project(HEAD)
        created.apply()
        created.edit("Project", "p", lambda d: d["spec"]["enums"][0].__setitem__("values", ["published"]))
        try:
            plan = created.plan()
        except Exception:
            return  # refusing is fine
        assert not plan.empty


class TestApplyOrdering:
    @bug("ALTER TYPE ... ADD VALUE and a use of the new label in the same transaction: "
         "'unsafe use of new value', so the final specs can never be applied in one go")  # fmt: skip
    def test_new_enum_value_used_as_default(self, project: MakeProject) -> None:
        created = project(table(
            "metadata: {name: t}\nspec:\n  projectRef: {name: p}\n"
            "  columns: [{name: id, type: int}, {name: s, type: st, default: \"'draft'\"}]\n"
        ))  # fmt: skip
        created.apply()
        created.edit("Project", "p", lambda d: d["spec"]["enums"][0]["values"].append("archived"))
        created.edit("Table", "t", lambda d: column(d, "s").__setitem__("default", "'archived'"))
        try:
            created.apply()
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None

    @bug("identity added to a nullable column: ADD GENERATED runs before SET NOT NULL and fails")
    def test_identity_on_nullable_column(self, project: MakeProject) -> None:
        created = project(table("metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: n, type: int}]}"))
        created.apply()
        created.edit("Table", "t", lambda d: column(d, "n").__setitem__("identity", "byDefault"))
        try:
            created.apply(allow_data_loss=True)
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None

    @bug("default replaced by identity: ADD GENERATED runs before DROP DEFAULT (and SET NOT NULL) and fails")
    def test_default_to_identity(self, project: MakeProject) -> None:
        created = project(table(
            "metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: n, type: int, nullable: false, "
            "default: '0'}]}"
        ))  # fmt: skip
        created.apply()

        def change(document: dict[str, Any]) -> None:
            del column(document, "n")["default"]
            column(document, "n")["identity"] = "always"

        created.edit("Table", "t", change)
        try:
            created.apply(allow_data_loss=True)
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None

    @bug("identity added to a populated key column starts its sequence at 1: the next insert collides")
    def test_identity_starts_after_existing_rows(self, project: MakeProject) -> None:
        created = project(table(
            "metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: id, type: bigint, primaryKey: true}, "
            "{name: a, type: text}]}"
        ))  # fmt: skip
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

    @bug("a safe type change of a column that an RLS policy uses fails: the policy is not dropped and re-created")
    def test_widen_column_used_by_policy(self, project: MakeProject) -> None:
        created = project(table(
            "metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: n, type: integer}]}\n"
            "---\napiVersion: cloud.kliv.dev/v1alpha1\nkind: TablePolicy\nmetadata: {name: pol}\n"
            "spec: {projectRef: {name: p}, table: t, command: select, using: 'n >= 0'}\n"
        ))  # fmt: skip
        created.apply()
        created.edit("Table", "t", lambda d: column(d, "n").__setitem__("type", "bigint"))
        try:
            created.apply()
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None

    @bug("type change with a new default: ALTER TYPE runs while the old default is still set and fails")
    def test_type_change_with_new_default(self, project: MakeProject) -> None:
        created = project(table(
            "metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: v, type: text, default: \"'x'\"}]}"
        ))  # fmt: skip
        created.apply()
        created.edit("Table", "t", lambda d: column(d, "v").update(type="integer", default="0"))
        try:
            created.apply(allow_data_loss=True)
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None


REFERENCED = HEAD + """
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


class TestRenames:
    @bug("renaming a primary-key column that a foreign key references drops the primary key (fails: FK depends on it)")
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
    @bug("a Table document renamed (metadata.name) with the same physical table and deletionPolicy Delete: "
         "the plan drops the table the specs still declare")  # fmt: skip
    def test_moving_a_table_document_keeps_the_table(self, project: MakeProject) -> None:
        created = project(table(
            "metadata: {name: notes}\nspec: {projectRef: {name: p}, deletionPolicy: Delete, "
            "columns: [{name: id, type: int}]}"
        ))  # fmt: skip
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
    @bug("two indexes with the same derived name (same columns and uniqueness, different method/where) "
         "validate, but only the last is created: a declared unique index silently never exists")  # fmt: skip
    def test_every_declared_index_exists(self, project: MakeProject) -> None:
        created = project(table(
            "metadata: {name: t}\nspec:\n  projectRef: {name: p}\n"
            "  columns: [{name: a, type: text}, {name: s, type: st}]\n"
            "  indexes:\n    - {columns: [a], unique: true}\n    - {columns: [a], unique: true, where: \"s = 'published'\"}\n"
        ))  # fmt: skip
        created.apply()
        with created.connect() as connection:
            [count] = connection.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 't'").fetchone() or [0]
        assert count == 2

    @bug("derived constraint names can equal another table's name (table `t_pkey`): valid specs that never apply")
    def test_derived_names_do_not_collide_with_tables(self, project: MakeProject) -> None:
        created = project(
            table("metadata: {name: t}\nspec: {projectRef: {name: p}, columns: [{name: id, type: int, primaryKey: true}]}")
            + "\n---\napiVersion: cloud.kliv.dev/v1alpha1\nkind: Table\nmetadata: {name: t-pkey}\n"
            "spec: {projectRef: {name: p}, columns: [{name: id, type: int}]}\n"
        )  # fmt: skip
        if not load([created.folder]).valid:
            return  # rejected at validation: fine
        try:
            created.apply()
        except ApplyFailedError as exc:
            raise AssertionError(exc.message) from None


class TestOnlinePhase:
    @bug("replacing a unique index drops the old one inside the transaction and builds the new one after: "
         "when the build fails the table is left with no uniqueness at all")  # fmt: skip
    def test_failed_unique_index_replacement_keeps_old_guarantee(self, project: MakeProject) -> None:
        created = project(table(
            "metadata: {name: posts}\nspec:\n  projectRef: {name: p}\n"
            "  columns: [{name: slug, type: text}, {name: status, type: st}]\n"
            "  indexes: [{name: posts_slug, columns: [slug], unique: true, where: \"status = 'published'\"}]\n"
        ))  # fmt: skip
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


class TestInventory:
    @bug("the inventory is committed (control database) before the project transaction commits: when that "
         "COMMIT fails, the inventory says a Delete table was dropped and the next plan is empty")  # fmt: skip
    def test_inventory_not_recorded_when_commit_fails(self, project: MakeProject, server_url: str) -> None:
        created = project(table(
            "metadata: {name: keep}\nspec: {projectRef: {name: p}, columns: [{name: id, type: int}]}\n"
            "---\napiVersion: cloud.kliv.dev/v1alpha1\nkind: Table\nmetadata: {name: gone}\n"
            "spec: {projectRef: {name: p}, deletionPolicy: Delete, columns: [{name: id, type: int}]}\n"
        ))  # fmt: skip
        created.apply()
        created.write([d for d in created.documents() if d["metadata"]["name"] != "gone"])
        blocker = psycopg.connect(make_conninfo(server_url, dbname="kliv"))
        blocker.execute("LOCK TABLE inventory.resources IN SHARE MODE")  # holds record() back
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                created.apply(allow_data_loss=True)
                outcome.append(None)
            except Exception as exc:  # noqa: BLE001
                outcome.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        try:
            with psycopg.connect(server_url, autocommit=True) as monitor:
                for _ in range(200):
                    waiting = monitor.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE datname = 'kliv' AND application_name = 'kliv' "
                        "AND wait_event_type = 'Lock'"
                    ).fetchone()
                    if waiting:
                        break
                    time.sleep(0.05)
                assert waiting, "record() never waited"
                # The project connection dies while the project transaction is still open.
                monitor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = 'kliv'",
                    [created.database],
                )
                time.sleep(0.3)
        finally:
            blocker.rollback()
            blocker.close()
            worker.join(30)
        assert outcome and outcome[0] is not None, "apply should have failed"
        with created.connect() as connection:
            still_there = connection.execute("SELECT to_regclass('public.gone') IS NOT NULL").fetchone()
        assert still_there == (True,)
        created.engine = PostgresEngine(server_url)
        assert not created.plan().empty, "the table `gone` (deletionPolicy Delete) is never dropped now"


class TestSecrets:
    @bug("`kliv up` prints the admin connection string, password included, when KLIV_DATABASE_URL has one")
    def test_up_never_prints_the_password(self, project: MakeProject) -> None:
        created = project(HEAD)
        url = make_conninfo(created.url, password="S3cretPassw0rd")
        result = CliRunner().invoke(
            app, ["up", str(created.folder)], env={"KLIV_DATABASE_URL": url, "KLIV_CONFIG": "/nonexistent"}
        )
        assert result.exit_code == 0, result.output
        assert "S3cretPassw0rd" not in result.output


class TestQuoting:
    @bug("literal() assumes standard_conforming_strings=on: with it off (server, role or URL option) a backslash "
         "in a description is interpreted and every re-plan resets the comment")  # fmt: skip
    def test_backslash_comment_with_legacy_strings(self, project: MakeProject) -> None:
        created = project(table(
            "metadata: {name: t}\nspec: {projectRef: {name: p}, description: 'C:\\new\\table', "
            "columns: [{name: id, type: int}]}"
        ))  # fmt: skip
        created.engine = PostgresEngine(make_conninfo(created.url, options="-c standard_conforming_strings=off"))
        created.apply()
        assert changes(created) == []
