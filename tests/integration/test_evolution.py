"""Evolving a live project: each spec change is planned with the right risk and applied without losing rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres_projects import Project

from kliv.stacks import ApplyFailedError, Change, Plan, RefusedError
from kliv.stacks.errors import PlanRefusedError

MakeProject = Callable[[str | Path], Project]

BASE = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: evo}
spec:
  displayName: Evolution
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: notes}
spec:
  projectRef: {name: evo}
  columns:
    - {name: id, type: bigint, primaryKey: true, identity: byDefault}
    - {name: title, type: varchar(20), nullable: false, check: "length(title) > 0"}
    - {name: n, type: integer, default: "0", check: "n >= 0"}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: notes-read}
spec:
  projectRef: {name: evo}
  table: notes
  command: select
  using: "true"
"""

ROWS = [(1, "alpha", 1), (2, "beta", 2), (3, "gamma", 3)]


def table(name: str, deletion_policy: str = "Retain") -> dict[str, Any]:
    """A one-column Table document for the project ``evo``."""
    return {
        "apiVersion": "cloud.kliv.dev/v1alpha1",
        "kind": "Table",
        "metadata": {"name": name},
        "spec": {
            "projectRef": {"name": "evo"},
            "columns": [{"name": "id", "type": "bigint", "primaryKey": True, "identity": "byDefault"}],
            "deletionPolicy": deletion_policy,
        },
    }


def start(project: MakeProject) -> Project:
    """The base project, applied, with three rows in ``notes``."""
    created = project(BASE)
    created.apply()
    with created.connect() as connection:
        connection.execute("INSERT INTO notes (title, n) VALUES ('alpha', 1), ('beta', 2), ('gamma', 3)")
    return created


def ref(created: Project, kind: str, name: str) -> str:
    return f"{kind}/{created.namespace}/{name}"


def changed(plan: Plan) -> dict[str, Change]:
    """The plan's non-noop changes by resource."""
    return {c.resource: c for c in plan.changes if c.action != "noop"}


def only_change(plan: Plan, resource: str) -> Change:
    """The single change of a plan, which must be to ``resource``."""
    changes = changed(plan)
    assert list(changes) == [resource], [(c.resource, c.action, c.summary) for c in changes.values()]
    return changes[resource]


def assert_empty(created: Project) -> None:
    plan = created.plan()
    assert plan.empty, [(c.resource, c.action, c.risk, c.summary) for c in changed(plan).values()]


def columns(connection: psycopg.Connection[Any], relation: str) -> dict[str, str]:
    """Column name -> format_type of a public table."""
    rows = connection.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        [f"public.{relation}"],
    ).fetchall()
    return dict(rows)


def exists(connection: psycopg.Connection[Any], relation: str) -> bool:
    row = connection.execute("SELECT to_regclass(%s) IS NOT NULL", [f"public.{relation}"]).fetchone()
    assert row is not None
    return bool(row[0])


def scalar(connection: psycopg.Connection[Any], sql: str, params: list[Any] | None = None) -> Any:
    row = connection.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def column_of(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Finder for a column dict inside a Table document."""

    def find(document: dict[str, Any]) -> dict[str, Any]:
        [column] = [c for c in document["spec"]["columns"] if c["name"] == name]
        return column

    return find


class TestEvolution:
    """Change the specs of a live project with rows and check the plan and the database."""

    def test_add_columns_is_safe_and_keeps_rows(self, project: MakeProject) -> None:
        """Adding a nullable column and a NOT NULL column with a default is safe and keeps every row."""
        created = start(project)
        created.edit(
            "Table",
            "notes",
            lambda d: d["spec"]["columns"].extend(
                [
                    {"name": "note", "type": "text"},
                    {"name": "score", "type": "integer", "nullable": False, "default": "7"},
                ]
            ),
        )
        change = only_change(created.plan(), ref(created, "Table", "notes"))
        assert (change.action, change.risk) == ("update", "safe")
        assert change.summary == ["add column note", "add column score"]
        assert all("ADD COLUMN" in s.sql for s in change.steps)

        created.apply()
        with created.connect() as connection:
            assert columns(connection, "notes") == {
                "id": "bigint",
                "title": "character varying(20)",
                "n": "integer",
                "note": "text",
                "score": "integer",
            }
            assert scalar(
                connection,
                "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'notes'::regclass AND attname = 'score'",
            )
            rows = connection.execute("SELECT id, title, n, note, score FROM notes ORDER BY id").fetchall()
        assert rows == [(i, t, n, None, 7) for i, t, n in ROWS]
        assert_empty(created)

    def test_rename_column_keeps_data(self, project: MakeProject) -> None:
        """`renamedFrom` renames a column in place (risk rename): the values stay under the new name."""
        created = start(project)

        def rename(document: dict[str, Any]) -> None:
            column = column_of("title")(document)
            column.update(name="headline", renamedFrom="title", check="length(headline) > 0")

        created.edit("Table", "notes", rename)
        change = only_change(created.plan(), ref(created, "Table", "notes"))
        assert (change.action, change.risk) == ("update", "rename")
        assert "rename column title to headline" in change.summary
        assert not any("DROP COLUMN" in s.sql or "ADD COLUMN" in s.sql for s in change.steps)

        created.apply()  # a rename is not gated
        with created.connect() as connection:
            assert list(columns(connection, "notes")) == ["id", "headline", "n"]
            assert connection.execute("SELECT id, headline, n FROM notes ORDER BY id").fetchall() == ROWS
            constraints = connection.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'notes'::regclass AND contype = 'c' ORDER BY 1"
            ).fetchall()
        assert constraints == [("notes_headline_check",), ("notes_n_check",)]
        assert_empty(created)

    def test_rename_table_keeps_data(self, project: MakeProject) -> None:
        """`spec.renamedFrom` renames a table in place (risk rename): rows, policy and audit trigger follow it."""
        created = start(project)

        def rename(document: dict[str, Any]) -> None:
            document["spec"].update(name="memos", renamedFrom="notes")

        created.edit("Table", "notes", rename)
        created.edit("TablePolicy", "notes-read", lambda d: d["spec"].update(table="memos"))
        changes = changed(created.plan())
        change = changes[ref(created, "Table", "notes")]
        assert (change.action, change.risk) == ("update", "rename")
        assert change.summary[0] == "rename table notes to memos"
        assert not any("DROP TABLE" in s.sql or "CREATE TABLE" in s.sql for s in change.steps)
        policy_change = changes.get(ref(created, "TablePolicy", "notes-read"))

        created.apply()
        assert policy_change is None or policy_change.action != "delete"  # the policy spec still exists
        with created.connect() as connection:
            assert not exists(connection, "notes")
            assert connection.execute("SELECT id, title, n FROM memos ORDER BY id").fetchall() == ROWS
            policies = connection.execute("SELECT polname FROM pg_policy WHERE polrelid = 'memos'::regclass").fetchall()
            assert policies == [("notes_read",)]
            assert scalar(
                connection,
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'memos'::regclass AND tgname = 'kliv_audit'",
            )
        assert_empty(created)

    def test_widen_types_is_safe(self, project: MakeProject) -> None:
        """integer -> bigint and varchar(20) -> varchar(50) are safe and applied without the flag."""
        created = start(project)

        def widen(document: dict[str, Any]) -> None:
            column_of("n")(document)["type"] = "bigint"
            column_of("title")(document)["type"] = "varchar(50)"

        created.edit("Table", "notes", widen)
        change = only_change(created.plan(), ref(created, "Table", "notes"))
        assert (change.action, change.risk) == ("update", "safe")
        assert change.summary == [
            "change type of title from character varying(20) to character varying(50)",
            "change type of n from integer to bigint",
        ]

        created.apply()
        with created.connect() as connection:
            assert columns(connection, "notes") == {"id": "bigint", "title": "character varying(50)", "n": "bigint"}
            assert connection.execute("SELECT id, title, n FROM notes ORDER BY id").fetchall() == ROWS
        assert_empty(created)

    def test_narrow_types_needs_the_flag(self, project: MakeProject) -> None:
        """Narrowing types is data-loss: refused without the flag (nothing changes), applied with it."""
        created = start(project)

        def narrow(document: dict[str, Any]) -> None:
            column_of("n")(document)["type"] = "smallint"
            column_of("title")(document)["type"] = "varchar(5)"

        created.edit("Table", "notes", narrow)
        change = only_change(created.plan(), ref(created, "Table", "notes"))
        assert (change.action, change.risk) == ("update", "data-loss")
        assert change.summary == [
            "change type of title from character varying(20) to character varying(5) (values may not fit)",
            "change type of n from integer to smallint (values may not fit)",
        ]

        with pytest.raises(RefusedError) as refused:
            created.apply()
        assert [c.resource for c in refused.value.changes] == [change.resource]
        assert "data-loss" in refused.value.message
        with created.connect() as connection:
            assert columns(connection, "notes") == {"id": "bigint", "title": "character varying(20)", "n": "integer"}

        created.apply(allow_data_loss=True)
        with created.connect() as connection:
            assert columns(connection, "notes") == {"id": "bigint", "title": "character varying(5)", "n": "smallint"}
            assert connection.execute("SELECT id, title, n FROM notes ORDER BY id").fetchall() == ROWS
        assert_empty(created)

    def test_drop_column_needs_the_flag(self, project: MakeProject) -> None:
        """Dropping a column is data-loss: refused without the flag (column and values stay), dropped with it."""
        created = start(project)
        created.edit("Table", "notes", lambda d: d["spec"]["columns"].remove(column_of("n")(d)))
        change = only_change(created.plan(), ref(created, "Table", "notes"))
        assert (change.action, change.risk) == ("update", "data-loss")
        assert "drop column n (its data is lost)" in change.summary

        with pytest.raises(RefusedError):
            created.apply()
        with created.connect() as connection:
            assert connection.execute("SELECT id, title, n FROM notes ORDER BY id").fetchall() == ROWS

        created.apply(allow_data_loss=True)
        with created.connect() as connection:
            assert list(columns(connection, "notes")) == ["id", "title"]
            assert connection.execute("SELECT id, title FROM notes ORDER BY id").fetchall() == [r[:2] for r in ROWS]
        assert_empty(created)

    def test_remove_table_specs_follows_deletion_policy(self, project: MakeProject) -> None:
        """A removed Retain table is forgotten (no SQL, rows stay); a removed Delete table needs the flag."""
        created = project(BASE)
        created.write([*created.documents(), table("kept"), table("scratch", "Delete")])
        created.apply()
        with created.connect() as connection:
            connection.execute("INSERT INTO kept DEFAULT VALUES; INSERT INTO kept DEFAULT VALUES")
            connection.execute("INSERT INTO scratch DEFAULT VALUES")

        created.write([d for d in created.documents() if d["metadata"]["name"] != "kept"])
        change = only_change(created.plan(), ref(created, "Table", "kept"))
        assert (change.action, change.risk, change.steps) == ("delete", "safe", [])
        assert change.summary == ["forget table kept (deletionPolicy Retain: the table and its data stay)"]
        created.apply()
        with created.connect() as connection:
            assert scalar(connection, "SELECT count(*) FROM kept") == 2
        assert_empty(created)

        created.write([d for d in created.documents() if d["metadata"]["name"] != "scratch"])
        change = only_change(created.plan(), ref(created, "Table", "scratch"))
        assert (change.action, change.risk) == ("delete", "data-loss")
        assert [s.sql for s in change.steps] == ['DROP TABLE "scratch" CASCADE']
        with pytest.raises(RefusedError):
            created.apply()
        with created.connect() as connection:
            assert scalar(connection, "SELECT count(*) FROM scratch") == 1

        created.apply(allow_data_loss=True)
        with created.connect() as connection:
            assert not exists(connection, "scratch")
            assert scalar(connection, "SELECT count(*) FROM kept") == 2
        assert_empty(created)

    def test_add_then_remove_policy(self, project: MakeProject) -> None:
        """A new TablePolicy is created, and dropped when its spec goes; both changes are safe."""
        created = start(project)
        policy = {
            "apiVersion": "cloud.kliv.dev/v1alpha1",
            "kind": "TablePolicy",
            "metadata": {"name": "notes-insert"},
            "spec": {
                "projectRef": {"name": "evo"},
                "table": "notes",
                "command": "insert",
                "roles": ["authenticated"],
                "withCheck": "n < 100",
            },
        }
        query = "SELECT polname, polcmd FROM pg_policy WHERE polrelid = 'notes'::regclass ORDER BY 1"
        created.write([*created.documents(), policy])
        change = only_change(created.plan(), ref(created, "TablePolicy", "notes-insert"))
        assert (change.action, change.risk) == ("create", "safe")
        assert change.summary == ["create insert policy notes_insert on notes"]
        created.apply()
        with created.connect() as connection:
            assert connection.execute(query).fetchall() == [("notes_insert", "a"), ("notes_read", "r")]
        assert_empty(created)

        created.write([d for d in created.documents() if d["metadata"]["name"] != "notes-insert"])
        change = only_change(created.plan(), ref(created, "TablePolicy", "notes-insert"))
        assert (change.action, change.risk) == ("delete", "safe")
        assert change.summary == ["drop policy notes_insert on notes"]
        created.apply()
        with created.connect() as connection:
            assert connection.execute(query).fetchall() == [("notes_read", "r")]
            assert scalar(connection, "SELECT count(*) FROM notes") == len(ROWS)
        assert_empty(created)

    def test_add_index_builds_concurrently(self, project: MakeProject) -> None:
        """An index added to a table with rows is built CONCURRENTLY after the transaction, and is valid."""
        created = start(project)
        created.edit("Table", "notes", lambda d: d["spec"].update(indexes=[{"columns": ["n"]}]))
        change = only_change(created.plan(), ref(created, "Table", "notes"))
        assert (change.action, change.risk) == ("update", "safe")
        assert change.summary == ["create index notes_n_idx concurrently"]
        [step] = change.steps
        assert (step.phase, step.transactional) == ("online", False)
        assert step.sql.startswith('CREATE INDEX CONCURRENTLY "notes_n_idx" ON "notes"')

        created.apply()
        with created.connect() as connection:
            row = connection.execute(
                "SELECT indisvalid, pg_get_indexdef(indexrelid) FROM pg_index "
                "WHERE indexrelid = 'notes_n_idx'::regclass"
            ).fetchone()
        assert row == (True, "CREATE INDEX notes_n_idx ON public.notes USING btree (n)")
        assert_empty(created)

    def test_toggle_audit(self, project: MakeProject) -> None:
        """`audit: false` drops the kliv_audit trigger; `audit: true` brings it back and rows are recorded again."""
        created = start(project)
        trigger = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'notes'::regclass AND tgname = 'kliv_audit'"
        logged = "SELECT count(*) FROM audit.log WHERE table_name = 'notes'"
        with created.connect() as connection:
            assert scalar(connection, logged) == len(ROWS)

        created.edit("Table", "notes", lambda d: d["spec"].update(audit=False))
        change = only_change(created.plan(), ref(created, "Table", "notes"))
        assert (change.action, change.risk, change.summary) == ("update", "safe", ["stop recording row changes"])
        created.apply()
        with created.connect() as connection:
            assert scalar(connection, trigger) == 0
            connection.execute("INSERT INTO notes (title) VALUES ('unseen')")
            assert scalar(connection, logged) == len(ROWS)
        assert_empty(created)

        created.edit("Table", "notes", lambda d: d["spec"].update(audit=True))
        change = only_change(created.plan(), ref(created, "Table", "notes"))
        assert (change.action, change.risk, change.summary) == ("update", "safe", ["record row changes in audit.log"])
        created.apply()
        with created.connect() as connection:
            assert scalar(connection, trigger) == 1
            connection.execute("INSERT INTO notes (title) VALUES ('seen')")
            assert scalar(connection, logged) == len(ROWS) + 1
        assert_empty(created)

    def test_change_default_and_check(self, project: MakeProject) -> None:
        """A new default and a new check expression are planned as updates; afterwards the plan is empty."""
        created = start(project)
        created.edit("Table", "notes", lambda d: column_of("n")(d).update(default="10", check="n >= 0 and n < 1000"))
        change = only_change(created.plan(), ref(created, "Table", "notes"))
        assert (change.action, change.risk) == ("update", "safe")
        assert change.summary == [
            "set default of n",
            "replace constraint notes_n_check",
            "add constraint notes_n_check",
        ]

        created.apply()
        with created.connect() as connection:
            assert (
                scalar(
                    connection,
                    "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
                    "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
                    "WHERE d.adrelid = 'notes'::regclass AND a.attname = 'n'",
                )
                == "10"
            )
            definition = scalar(
                connection, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'notes_n_check'"
            )
            assert "1000" in definition
            connection.execute("INSERT INTO notes (title) VALUES ('delta')")
            assert scalar(connection, "SELECT n FROM notes WHERE title = 'delta'") == 10
            with pytest.raises(psycopg.errors.CheckViolation):
                connection.execute("INSERT INTO notes (title, n) VALUES ('huge', 5000)")
            assert connection.execute("SELECT id, title, n FROM notes WHERE id <= 3 ORDER BY id").fetchall() == ROWS
        assert_empty(created)

    @pytest.mark.parametrize("bad", ["check-on-integer", "unique-over-duplicates"])
    def test_rejected_statement_rolls_back(self, project: MakeProject, bad: str) -> None:
        """A valid spec that Postgres rejects raises ApplyFailedError naming the statement; nothing is changed."""
        created = start(project)
        with created.connect() as connection:
            connection.execute("INSERT INTO notes (title, n) VALUES ('again', 1)")  # n = 1 twice
            tables_before = scalar(connection, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        original = created.documents()

        def change(document: dict[str, Any]) -> None:
            document["spec"]["columns"].append({"name": "extra", "type": "text"})
            if bad == "check-on-integer":
                column_of("n")(document)["check"] = "length(n) > 0"
            else:
                column_of("n")(document)["unique"] = True

        created.edit("Table", "notes", change)
        created.write([*created.documents(), table("fresh")])
        if bad == "check-on-integer":
            plan = created.plan()
            assert changed(plan)[ref(created, "Table", "fresh")].action == "create"
            assert changed(plan)[ref(created, "Table", "notes")].risk == "safe"
            with pytest.raises(ApplyFailedError) as failed:
                created.apply()
            error = failed.value
            assert error.statement.startswith('ALTER TABLE "notes" ADD CONSTRAINT "notes_n_check"')
            assert error.statement in error.message
            assert "rolled back" in error.message
            assert "function length(integer) does not exist" in error.reason
        else:
            # Duplicate rows under a new unique constraint: refused at plan now, before any statement.
            with pytest.raises(PlanRefusedError, match=r"unique constraint notes_n_key cannot be built.*\(n\)"):
                created.plan()

        with created.connect() as connection:
            assert scalar(connection, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == tables_before
            assert not exists(connection, "fresh")
            assert list(columns(connection, "notes")) == ["id", "title", "n"]
            definition = scalar(
                connection, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'notes_n_check'"
            )
            assert definition == "CHECK ((n >= 0))"
            assert not scalar(connection, "SELECT count(*) FROM pg_constraint WHERE conname = 'notes_n_key'")
            assert scalar(connection, "SELECT count(*) FROM notes") == len(ROWS) + 1

        if bad == "check-on-integer":
            assert not created.plan().empty  # nothing was recorded: the same change is still pending
        created.write(original)
        assert_empty(created)

    def test_apply_twice_is_a_no_op(self, project: MakeProject) -> None:
        """Applying the same specs again plans and does nothing."""
        created = start(project)
        assert_empty(created)
        again = created.apply()
        assert again.empty
        assert not changed(again)
        with created.connect() as connection:
            assert connection.execute("SELECT id, title, n FROM notes ORDER BY id").fetchall() == ROWS
            assert scalar(connection, "SELECT count(*) FROM audit.log") == len(ROWS)
        assert_empty(created)
