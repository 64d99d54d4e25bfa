"""The fragment checker, driven by hypothesis over the allow-list's own grammar, against a real Postgres.

For every generated expression (mostly built from what the allow-list admits,
sometimes with a forbidden construct mixed in):

- the checker either accepts it or raises ExpressionError: nothing else escapes;
- an accepted fragment runs as a policy of a project table, queried by a login that
  holds only the project's `anon` role, within the database's statement_timeout
  (it may fail as SQL fails: a type mismatch, a division by zero; never on a
  privilege, a timeout or the server's resources);
- what Postgres stored for it (the policy's node tree) calls only allowed
  functions (pg_catalog's allow-list, `auth.*`, cast functions) and operators.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kliv.specs import load
from kliv.specs.expressions import AUTH_FUNCTIONS, FUNCTIONS, OPERATORS, ExpressionError, check_expression
from kliv.stacks import PostgresEngine
from kliv.stacks.postgres import naming

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {{name: props, namespace: {namespace}}}
spec:
  database: {{name: {database}, statementTimeout: 2s}}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {{name: items, namespace: {namespace}}}
spec:
  projectRef: {{name: props}}
  columns:
    - {{name: id, type: uuid, primaryKey: true, default: gen_random_uuid()}}
    - {{name: n, type: integer}}
    - {{name: t, type: text}}
    - {{name: b, type: boolean}}
    - {{name: ts, type: timestamptz}}
    - {{name: tags, type: "text[]"}}
    - {{name: data, type: jsonb}}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {{name: others, namespace: {namespace}}}
spec:
  projectRef: {{name: props}}
  columns:
    - {{name: id, type: uuid, primaryKey: true, default: gen_random_uuid()}}
    - {{name: x, type: integer}}
    - {{name: label, type: text}}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {{name: others-read, namespace: {namespace}}}
spec: {{projectRef: {{name: props}}, table: others, command: select, roles: [anon], using: "true"}}
"""
ROWS = 20
# SQLSTATE classes an accepted fragment may fail with (it is checked for shape, not for types).
PLAIN_FAILURES = ("21", "22", "42", "0A", "2202")
NOT_PLAIN = ("42501", "57014", "53")

# -- the grammar -----------------------------------------------------------------------------------

COLUMNS = ["n", "t", "b", "ts", "tags", "data", "id", "items.n", "items.t"]
CASTS = ["text", "integer", "int", "bigint", "numeric", "boolean", "timestamptz", "date", "uuid", "jsonb", "varchar(5)"]
# A little of what the checker must refuse, mixed into otherwise valid expressions.
HOSTILE = ["pg_sleep(1)", "pg_read_file('/etc/passwd')", "set_config('role', 'postgres', false)",
           "pg_catalog.pg_sleep(1)", "n OPERATOR(pg_catalog.+) 1", "'a'::regclass", "(select 1)",
           "lpad('', 100000000, 'x')", "current_setting('is_superuser')", "public.items.n", "n <<= 1",
           "exists (select 1 from pg_authid)", "dblink('x')", "'\\' || ' || pg_sleep(1) -- '"]  # fmt: skip


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


CONSTANTS = ["true", "false", "null", "'{}'", "auth.uid()", "auth.role()", "auth.jwt()", "current_date",
             "current_timestamp", "now()"]  # fmt: skip
leaves = st.one_of(
    st.sampled_from(COLUMNS),
    st.integers(-1000, 1000).map(str),
    st.text(alphabet="ab'\\%_ é-", max_size=6).map(_literal),
    st.sampled_from(CONSTANTS),
)


def _composites(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    operators = sorted(o for o in OPERATORS if " " not in o and o != "!=")
    functions = sorted(FUNCTIONS)
    return st.one_of(
        st.tuples(children, st.sampled_from(operators), children).map(lambda p: f"({p[0]} {p[1]} {p[2]})"),
        st.tuples(st.sampled_from(functions), st.lists(children, min_size=1, max_size=3)).map(
            lambda p: f"{p[0]}({', '.join(p[1])})"
        ),
        st.tuples(children, st.sampled_from(CASTS)).map(lambda p: f"({p[0]})::{p[1]}"),
        children.map(lambda c: f"not ({c})"),
        st.tuples(children, st.sampled_from(["and", "or"]), children).map(lambda p: f"({p[0]} {p[1]} {p[2]})"),
        st.tuples(children, children, children).map(lambda p: f"case when {p[0]} then {p[1]} else {p[2]} end"),
        st.tuples(children, children).map(lambda p: f"coalesce({p[0]}, {p[1]})"),
        children.map(lambda c: f"({c}) is null"),
        st.tuples(children, children, children).map(lambda p: f"({p[0]}) between {p[1]} and {p[2]}"),
        st.tuples(children, st.lists(children, min_size=1, max_size=3)).map(
            lambda p: f"({p[0]}) in ({', '.join(p[1])})"
        ),
        st.tuples(st.integers(1, 3), children).map(
            lambda p: (
                "exists (select 1 from "
                + ", ".join(f"others o{i}" for i in range(p[0]))
                + f" where o0.x = n or {p[1]})"
            )
        ),
        children.map(lambda c: f"n in (select x from others where {c})"),
        st.tuples(children, st.sampled_from(HOSTILE)).map(lambda p: f"({p[0]}) = ({p[1]})"),
    )


expressions = st.recursive(leaves, _composites, max_leaves=10)

# -- the database ------------------------------------------------------------------------------------


class Probe:
    """A project (items, others) and a non-superuser login holding only its anon role."""

    def __init__(self, url: str) -> None:
        self.url = url
        suffix = uuid.uuid4().hex[:8]
        self.database = f"props_{suffix}"
        self.namespace = f"test-props-{suffix}"
        self.engine = PostgresEngine(url)
        self.login = f"login_{suffix}"

    def create(self, folder: Any) -> None:
        (folder / "specs.yaml").write_text(SPECS.format(namespace=self.namespace, database=self.database))
        [group] = [g for g in load([folder]).specs.projects.values() if g.project]
        self.engine.apply(self.engine.plan(group))
        anon = naming.role(self.database, "anon")
        with self.admin() as admin:
            admin.execute(
                "INSERT INTO items (n, t, b, ts, tags, data) SELECT g, 'item ' || g, g %% 2 = 0, now() - g * interval "
                "'1 day', array['a', 'b' || g], jsonb_build_object('k', g) FROM generate_series(1, %s) g",
                [ROWS],
            )
            admin.execute("INSERT INTO others (x, label) SELECT g, 'o' || g FROM generate_series(1, %s) g", [ROWS])
            admin.execute(f'CREATE ROLE "{self.login}" LOGIN INHERIT IN ROLE "{anon}"')
        self.user = psycopg.connect(
            psycopg.conninfo.make_conninfo(self.url, dbname=self.database, user=self.login), autocommit=True
        )
        self.user.execute(f'SET ROLE "{anon}"')

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(psycopg.conninfo.make_conninfo(self.url, dbname=self.database), autocommit=True)

    def drop(self) -> None:
        self.user.close()
        self.engine.drop_project(self.database)
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{self.login}"')
        self.engine.close()


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Probe]:
    """On the server at KLIV_TEST_DATABASE_URL (CI: PG 15), else on the session's embedded PG 18."""
    url = os.environ.get("KLIV_TEST_DATABASE_URL") or str(request.getfixturevalue("embedded_url"))
    created = Probe(url)
    created.create(tmp_path_factory.mktemp("props"))
    yield created
    created.drop()


_FUNC = re.compile(r"\{FUNCEXPR :funcid (\d+) .*?:funcformat (\d+)")
_OP = re.compile(r":opno (\d+)")


def _stored_calls(probe: Probe, text: str) -> tuple[list[tuple[str, str, bool, int]], list[tuple[str, str]]]:
    """(name, schema, is a cast function, format) of every function and (name, schema) of every operator
    in the node tree Postgres stores for ``text`` as a policy (created and rolled back)."""
    with probe.admin() as admin, admin.transaction(force_rollback=True):
        admin.execute(f"CREATE POLICY kliv_probe ON items USING ({text}\n)")
        row = admin.execute(
            "SELECT polqual::text FROM pg_policy WHERE polname = 'kliv_probe' AND polrelid = 'items'::regclass"
        ).fetchone()
        assert row is not None
        tree = row[0]
        functions = [(int(oid), int(form)) for oid, form in _FUNC.findall(tree)]
        found = admin.execute(
            "SELECT p.oid::int, p.proname, n.nspname, EXISTS (SELECT 1 FROM pg_cast c WHERE c.castfunc = p.oid) "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = ANY(%s)",
            [[oid for oid, _ in functions]],
        ).fetchall()
        names = {oid: (name, schema, cast) for oid, name, schema, cast in found}
        operators = admin.execute(
            "SELECT o.oprname, n.nspname FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace "
            "WHERE o.oid = ANY(%s)",
            [[int(oid) for oid in _OP.findall(tree)]],
        ).fetchall()
    return [(*names[oid], form) for oid, form in functions], [tuple(o) for o in operators]


def _run(probe: Probe, text: str) -> tuple[str, str] | None:
    """Query the policy's table through the fragment as the anon login: None, or (SQLSTATE, message)."""
    try:
        probe.user.execute(f"SELECT count(*) FROM items WHERE ({text}\n)").fetchone()
    except psycopg.Error as exc:
        return exc.sqlstate or "", str(exc)
    return None


# SQL syntax Postgres turns into calls of functions the spec never names.
_SYNTAX_FUNCTIONS = {"btrim", "ltrim", "rtrim", "timezone", "date_part", "extract", "like_escape", "textlike",
                     "similar_to_escape", "position", "substring", "overlay"}  # fmt: skip


class TestGeneratedFragments:
    @settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=expressions)
    def test_accepted_fragments_are_bounded_and_allowed(self, probe: Probe, text: str) -> None:
        try:
            check_expression(text, "policy")
        except ExpressionError:
            event("refused")
            return
        event("accepted")
        failure = _run(probe, text)
        if failure is not None:
            state, message = failure
            assert not state.startswith(NOT_PLAIN), (text, state, message)
            assert state.startswith(PLAIN_FAILURES), (text, state, message)
            event(f"failed as SQL fails ({state[:2]})")
            return
        event("ran")
        functions, operators = _stored_calls(probe, text)
        for name, schema, cast, form in functions:
            if schema == "auth":
                assert name in AUTH_FUNCTIONS, (text, name)
            else:
                assert schema == "pg_catalog", (text, schema, name)
                assert name in FUNCTIONS or name in _SYNTAX_FUNCTIONS or (cast and form in (1, 2)), (text, name)
        for name, schema in operators:
            assert schema == "pg_catalog", (text, schema, name)
            assert name in OPERATORS | {"<>"}, (text, name)
