"""SQL fragments: the allow-list, what it reports, and what it extracts."""

from __future__ import annotations

import re

import pytest

from kliv.specs.expressions import ExpressionError, check_expression


class TestAllowed:
    """Expressions a real schema needs are accepted."""

    @pytest.mark.parametrize(
        ("text", "context"),
        [
            ("now()", "default"),
            ("gen_random_uuid()", "default"),
            ("'draft'", "default"),
            ("'{}'", "default"),
            ("auth.uid()", "default"),
            ("timezone('utc', now())", "default"),
            ("'utc'::text", "default"),
            ("length(title) > 0", "check"),
            ("price >= 0 and price < 1000000", "check"),
            ("body between 1 and 10", "check"),
            ("status in ('draft', 'published')", "check"),
            ("coalesce(nickname, '') <> ''", "check"),
            ("lower(email) like '%@%'", "check"),
            ("status = 'published'", "index"),
            ("deleted_at is null", "index"),
            ("status = 'published' or author_id = auth.uid()", "policy"),
            ("(auth.jwt() ->> 'role') = 'admin'", "policy"),
            (
                "exists (select 1 from memberships m where m.org_id = projects.org_id and m.user_id = auth.uid())",
                "policy",
            ),
            ("org_id in (select org_id from memberships where user_id = auth.uid())", "policy"),
            ("case when public then true else owner_id = auth.uid() end", "policy"),
            ("tags @> array['news']", "policy"),
            ("current_date > start_date", "check"),
        ],
    )
    def test_accepted(self, text: str, context: str) -> None:
        """The expression passes the allow-list for its context."""
        assert check_expression(text, context).text == text  # type: ignore[arg-type]


class TestRejected:
    """Anything outside the allow-list is rejected naming the node and its position."""

    @pytest.mark.parametrize(
        ("text", "context", "fragment", "offset"),
        [
            ("1; drop table users", "check", "several statements", 3),
            ("'; drop table x; --", "check", "invalid SQL", 0),
            ("pg_sleep(10)", "policy", "`pg_sleep()`", 0),
            ("true and pg_read_file('/etc/passwd') is not null", "policy", "`pg_read_file()`", 9),
            ("dblink('host=evil', 'select 1') is null", "policy", "`dblink()`", 0),
            ("set_config('role', 'postgres', false) = ''", "policy", "`set_config()`", 0),
            ("current_setting('request.jwt.claims') = ''", "policy", "`current_setting()`", 0),
            ("exists (select 1 from pg_authid)", "policy", "system catalog `pg_authid`", 22),
            ("exists (select 1 from public.users)", "policy", "other schemas", 22),
            ("exists (select 1 from generate_series(1, 10))", "policy", "sub-query's FROM", None),
            ("1 from pg_user", "check", "not a single expression", None),
            ("1 union select 2", "check", "not a single expression", None),
            ("'x'::regclass is not null", "check", "`regclass`", 5),
            ("name", "default", "cannot reference column", 0),
            ("now() > created_at", "index", "not immutable", 0),
            ("exists (select 1 from t)", "check", "sub-queries are not allowed", 0),
            ("auth.uid() is not null", "check", "cannot be used in a check", 0),
            ("auth.password()", "policy", "does not exist", 0),
            ("pg_catalog.pg_sleep(1) is null", "policy", "`pg_catalog.pg_sleep()`", 0),
            ("a operator(pg_catalog.=) b", "check", "OPERATOR(pg_catalog.=)", 2),
            ("count(*) > 0", "check", "`count()`", 0),
            ("(select 1 from posts) = 1", "policy", "only `EXISTS", 0),
            ("$1 = 1", "check", "parameter", 0),
            ("a.b.c = 1", "check", "schema-qualified", 0),
            ("exists (with w as (select 1) select 1 from w)", "policy", "withClause", 0),
            ("1 as x", "check", "may not name", None),
            ("", "check", "empty", None),
            ("x = 1\x00", "check", "control character", 5),
        ],
    )
    def test_rejected(self, text: str, context: str, fragment: str, offset: int | None) -> None:
        """The error names the offending construct and where it is."""
        with pytest.raises(ExpressionError) as caught:
            check_expression(text, context)  # type: ignore[arg-type]
        assert fragment in caught.value.message
        assert caught.value.offset == offset

    def test_deep_nesting_is_an_error_not_a_crash(self) -> None:
        """A pathologically nested expression fails cleanly."""
        with pytest.raises(ExpressionError):
            check_expression("not " * 5000 + "true", "check")

    def test_overlong_is_rejected(self) -> None:
        """Fragments have a length cap."""
        with pytest.raises(ExpressionError, match="characters long"):
            check_expression("1 = 1 and " * 1000 + "true", "check")


class TestExtraction:
    """The checked expression reports what the resolver needs."""

    def test_columns_and_scopes(self) -> None:
        """Column references keep their qualifier and sub-query scope."""
        expression = check_expression(
            "owner_id = auth.uid() or exists (select 1 from members m where m.team_id = docs.team_id)", "policy"
        )
        uses = [(u.qualifier, u.column, u.scope) for u in expression.columns]
        assert uses == [(None, "owner_id", 0), ("m", "team_id", 1), ("docs", "team_id", 1)]
        assert expression.tables == {"members"}
        assert expression.scopes[1].parent == 0

    def test_enum_casts_are_reported(self) -> None:
        """Casts to non-built-in types are left for the resolver to check against enums."""
        assert check_expression("'draft'::post_status", "default").casts == ("post_status",)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [("true", True), ("1 = 1", True), ("'t'::boolean", True), ("false or true", True),
         ("not false", True), ("2 > 1", True), ("coalesce(null, true)", True), ("now() > '2000-01-01'", True),
         ("1 = 2", True), ("false", False), ("null", False), ("owner_id = auth.uid()", False),
         ("auth.role() = 'anon'", False), ("exists (select 1 from t where t.open)", False)],
    )  # fmt: skip
    def test_constant_true(self, text: str, expected: bool) -> None:
        """Conditions that depend on neither the row nor the caller count as letting everything through
        (the review found `not false`, `2 > 1` and `coalesce(null, true)` passing the guardrail); only a
        literal `false` or `null` says otherwise."""
        assert check_expression(text, "policy").constant_true is expected


class TestBounds:
    """Allowed fragments cannot make the shared server build huge values or join without bound."""

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("length(lpad('', 100000000, 'x')) > 0", "the length of lpad() must be a number written out"),
            ("rpad(name, length(name) * 1000, 'x') = ''", "the length of rpad() must be a number written out"),
            ("replace(name, 'a', name) = ''", "the replacement of replace() must be text written out"),
            ("regexp_replace(name, '', name, 'g') = ''", "the replacement of regexp_replace() must be text"),
            ("array_to_string(tags, name) = ''", "the separator of array_to_string() must be text"),
            ("length(replace(replace(name, 'a', '" + "b" * 40 + "'), 'b', '" + "c" * 40 + "')) > 0",
             "can repeat what it reads 1,681 times over"),
            ("length(replace('" + "a" * 4000 + "', 'a', '" + "b" * 300 + "')) > 0",
             "can build a value of 1,204,301 characters"),
            ("length(" + " || ".join(["name"] * 101) + ") > 0", "can repeat what it reads 101 times over"),
            ("exists (select 1 from a, b, c, d)", "the sub-query reads 4 tables; at most 3"),
            ("exists (select 1 from a join b on a.x = b.x join c on true join d on true)", "reads 4 tables"),
            ("exists (select 1 from a, b) and exists (select 1 from c, d, e)", "reads 5 tables in its sub-queries"),
            ("exists (select 1 from a where exists (select 1 from b, c where exists (select 1 from d, e)))",
             "reads 5 tables in its sub-queries"),
        ],
    )  # fmt: skip
    def test_refused(self, text: str, message: str) -> None:
        with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_expression(text, "policy")

    @pytest.mark.parametrize(
        "text",
        [
            "lpad(code, 8, '0') = '00000042'",
            "replace(lower(name), ' ', '-') = slug",
            "array_to_string(tags, ', ') <> ''",
            "length(" + " || ".join(["name"] * 100) + ") > 0",
            "exists (select 1 from memberships m join orgs o on o.id = m.org_id where m.user_id = auth.uid())",
            "exists (select 1 from a, b) and exists (select 1 from c, d)",
            "concat_ws(' ', first_name, last_name) <> ''",
        ],
    )
    def test_ordinary_fragments_stay_allowed(self, text: str) -> None:
        check_expression(text, "policy")


class TestOperatorsEverywhere:
    """An operator is checked wherever the grammar puts it (the review found two places it was not)."""

    @pytest.mark.parametrize(
        "text",
        ["owner <<= any (select net from nets)", "exists (select 1 from t order by a using ~>~)",
         "x = any (select y from t) and y OPERATOR(pg_catalog.=) 1"],
    )  # fmt: skip
    def test_refused(self, text: str) -> None:
        with pytest.raises(ExpressionError, match="operator `"):
            check_expression(text, "policy")

    @pytest.mark.parametrize("text", ["x = any (select y from t)", "exists (select 1 from t order by a using <)"])
    def test_allowed(self, text: str) -> None:
        check_expression(text, "policy")


class TestReviewFindings:
    """What the attacker's review of the bounds found."""

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("lpad('', 161, 'a') || 'x' ~ '^(a*)(a*)(a*)(a*)\\1\\2\\3\\4x$'", "uses a back-reference"),
            ("regexp_replace(t, '(a)\\1', 'b') = ''", "uses a back-reference"),
            ("t ~ t", "the pattern of a regular expression must be text written out"),
            ("t similar to t", "the pattern of SIMILAR TO must be text written out"),
            ("t ~ '" + "a" * 300 + "'", "at most 256"),
            ("length(replace(power(10::numeric, 131071)::text, '0', '" + "x" * 7000 + "')) > 0",
             "can build a value of 1,032,346,457 characters"),
            ("length(replace((10::numeric ^ 131071)::text, '0', 'xxxxxxxx')) > 0", "can build a value of"),
        ],
    )  # fmt: skip
    def test_refused(self, text: str, message: str) -> None:
        with pytest.raises(ExpressionError, match=re.escape(message)):
            check_expression(text, "check")

    @pytest.mark.parametrize("text", ["code ~ '^[A-Z]{3}$'", "t similar to 'a%'", "round(price * 1.2, 2) > 10"])
    def test_allowed(self, text: str) -> None:
        check_expression(text, "check")
