"""Generated bad input (hypothesis): names, SQL fragments, values anywhere, random YAML.

Checks the allow-lists from the other side: whatever validation accepts is within them, and
nothing ever escapes as an exception. The hand-written corpus is ``test_bad_input_corpus.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from corpus_baseline import (
    FUNCTION,
    ORDERS,
    POLICY_UPDATE,
    TRACEBACK,
    VALID_POINTER,
    baseline,
    escape,
    set_at,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pglast import parser as pg_parser
from pglast.keywords import RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS
from test_bad_input_corpus import (
    SQL_FIELDS,
    _laughs,
)

from kliv import policies
from kliv.config import PolicySettings
from kliv.specs import Document, Problem, Source, parse_text, validate_documents
from kliv.specs.documents import MAX_EXPANDED_NODES
from kliv.specs.expressions import AUTH_FUNCTIONS, CAST_TYPES, FUNCTIONS

# -- generated inputs ------------------------------------------------------------------------------

PG_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
POSTGRES_RESERVED = frozenset(RESERVED_KEYWORDS) | frozenset(TYPE_FUNC_NAME_KEYWORDS)
PROJECT_TABLES = {"customers", "orders"}
PROJECT_ENUMS = {"order_state"}
GENERATED = settings(max_examples=150, deadline=None)


def validate_in_memory(documents: list[dict[str, Any]]) -> list[Problem]:
    """The CLI's pipeline without files: models, resolver and guardrails; errors only."""
    validation = validate_documents(Document(Source("generated.yaml", i), d) for i, d in enumerate(documents))
    problems = validation.problems + policies.evaluate(validation.specs, PolicySettings())
    errors = [p for p in problems if p.severity == "error"]
    for problem in errors:
        assert VALID_POINTER.fullmatch(problem.path), problem
        assert TRACEBACK not in problem.message
    return errors


def errors_at(errors: list[Problem], doc: int, pointer: str) -> list[Problem]:
    return [p for p in errors if p.document == doc and p.path == pointer]


def with_value(doc: int, pointer: str, value: Any) -> list[dict[str, Any]]:
    documents = baseline()
    set_at(documents[doc], pointer, value)
    return documents


def sql_nodes(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (node type, body) pair pglast finds in ``SELECT <text>``."""
    stack: list[Any] = [json.loads(pg_parser.parse_sql_json("SELECT " + text))]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, body in value.items():
                if key[:1].isupper() and isinstance(body, dict):
                    yield key, body
                stack.append(body)
        elif isinstance(value, list):
            stack.extend(value)


def _names(items: list[dict[str, Any]]) -> list[str]:
    return [item["String"]["sval"] for item in items if "String" in item]


def assert_within_allow_list(text: str) -> None:
    """An accepted fragment: one statement; allowed functions, casts and tables only."""
    assert len(json.loads(pg_parser.parse_sql_json("SELECT " + text))["stmts"]) == 1
    for kind, body in sql_nodes(text):
        if kind == "FuncCall":
            names = _names(body["funcname"])
            if len(names) == 2 and names[0] == "auth":
                assert names[1] in AUTH_FUNCTIONS, text
            else:
                assert names[-1] in FUNCTIONS, text
                assert len(names) == 1 or names[0] == "pg_catalog", text
        elif kind == "RangeVar":
            assert "schemaname" not in body, text
            assert "catalogname" not in body, text
            assert body["relname"] in PROJECT_TABLES, text
        elif kind == "TypeCast":
            names = _names(body["typeName"]["names"])
            assert names[-1] in CAST_TYPES | PROJECT_ENUMS, text
            assert len(names) == 1 or names[0] == "pg_catalog", text
        assert kind not in {"ParamRef", "RangeFunction", "RangeSubselect", "CommonTableExpr", "CollateClause"}, text


FUNCTION_NAMES = ["now", "lower", "length", "coalesce", "pg_sleep", "pg_read_file", "dblink", "set_config"]
FUNCTION_NAMES += ["current_setting", "pg_catalog.now", "pg_catalog.pg_sleep", "auth.uid", "auth.jwt", "public.evil"]
FUNCTION_NAMES += ["version", "lo_import", "to_regclass", "nextval", "query_to_xml", '"pg_sleep"', 'U&"\\0070g_sleep"']
TABLE_NAMES = ["customers", "orders", "customers c", "pg_authid", "pg_catalog.pg_roles", "information_schema.tables"]
TABLE_NAMES += ["public.orders", "auth.users", '"PG_AUTHID"', "pg_temp.x"]
TYPE_NAMES = ["text", "int", "timestamptz", "order_state", "regclass", "pg_catalog.regclass", "oid", "public.t"]
TYPE_NAMES += ['"RegClass"', "name", "pg_lsn"]
ATOMS = ["1", "'a'", "true", "null", "customer_id", "total", "c.id", "x", "$1", "current_user", "E'\\''", "$$x$$"]
ATOMS += ["auth.uid()", "now()", "array[1]", "'{}'"]
SUFFIXES = ["; drop table x", " -- c", "; select pg_sleep(1)", " /* x */", " order by 1", " from pg_authid", " as x"]


def _compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    tables = st.sampled_from(TABLE_NAMES)
    return st.one_of(
        st.tuples(st.sampled_from(FUNCTION_NAMES), st.lists(inner, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"
        ),
        st.tuples(inner, st.sampled_from(["=", "<>", "+", "||", "and", "or", "->>", "@@", "~"]), inner).map(" ".join),
        inner.map(lambda e: f"({e})"),
        st.tuples(inner, st.sampled_from(TYPE_NAMES)).map("::".join),
        st.tuples(tables, inner).map(lambda t: f"exists (select 1 from {t[0]} where {t[1]})"),
        st.tuples(inner, tables).map(lambda t: f"(select {t[0]} from {t[1]})"),
        st.tuples(inner, inner, tables).map(lambda t: f"{t[0]} in (select {t[1]} from {t[2]})"),
        st.tuples(inner, inner).map(lambda t: f"case when {t[0]} then {t[1]} end"),
        inner.map(lambda e: f"not {e}"),
        st.tuples(inner, st.sampled_from(SUFFIXES)).map("".join),
    )


SQL_EXPRESSIONS = st.recursive(st.sampled_from(ATOMS), _compound, max_leaves=8)
SQL_WORDS = ["select", "from", "where", "exists", "(", ")", ",", ";", "--", "/*", "*/", "'", '"', "::", "="]
SQL_WORDS += ["and", "or", "not", "union", "drop table x", "\n", "limit", "into", "with"]
SQL_TOKENS = st.lists(
    st.sampled_from([*ATOMS, *FUNCTION_NAMES, *TABLE_NAMES, *SQL_WORDS]),
    min_size=1,
    max_size=12,
).map(" ".join)
INJECTION_SUFFIXES = [
    "; drop table x",
    ";drop table x; --",
    "; select pg_sleep(10)",
    " or pg_sleep(10) is null",
    " and pg_read_file('/etc/passwd') is null",
    " or dblink('host=evil', 'select 1') is null",
    " or set_config('role', 'postgres', false) is null",
    " or current_setting('is_superuser') = 'on'",
    " or exists (select 1 from pg_authid)",
    " or 'pg_authid'::regclass is null",
    " or public.evil() is null",
    "'; drop table x; --",
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _pointers(node: Any, prefix: str = "") -> Iterator[str]:
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _pointers(value, f"{prefix}/{escape(key)}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _pointers(value, f"{prefix}/{index}")


EVERY_POINTER = [(doc, pointer) for doc, document in enumerate(baseline()) for pointer in _pointers(document)]


class TestGeneratedInputs:
    @GENERATED
    @given(
        st.one_of(
            st.text(max_size=70),
            st.from_regex(r"[a-z_][a-z0-9_]{0,70}", fullmatch=True),
            st.sampled_from(sorted(POSTGRES_RESERVED)),
            st.text(alphabet="aé表_0Z-;'\" \n", max_size=70),
        )
    )
    def test_accepted_column_names_match_the_identifier_rule(self, name: str) -> None:
        """A column name is accepted only if it is a lowercase, <=63-byte, non-reserved identifier."""
        valid = bool(PG_IDENTIFIER.fullmatch(name)) and name not in POSTGRES_RESERVED
        pointer = "/spec/columns/4/name"
        errors = errors_at(validate_in_memory(with_value(ORDERS, pointer, name)), ORDERS, pointer)
        assert valid or errors, f"accepted invalid identifier {name!r}"

    @GENERATED
    @given(st.one_of(st.text(max_size=70), st.from_regex(r"[a-z0-9][-a-z0-9.]{0,70}", fullmatch=True)))
    def test_accepted_metadata_names_match_the_kubernetes_rule(self, name: str) -> None:
        """metadata.name is accepted only as a DNS-1123 label of at most 63 characters."""
        errors = errors_at(validate_in_memory(with_value(FUNCTION, "/metadata/name", name)), FUNCTION, "/metadata/name")
        assert K8S_NAME.fullmatch(name) or errors, f"accepted invalid name {name!r}"

    @GENERATED
    @given(
        st.sampled_from(sorted(SQL_FIELDS)),
        st.sampled_from(INJECTION_SUFFIXES),
        st.text(alphabet=" \t\n", max_size=3),
        st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
    )
    def test_injection_suffix_is_always_rejected(self, field: str, suffix: str, gap: str, word: str) -> None:
        """Any valid fragment followed by an injection, or calling any pg_* function, is rejected at its field."""
        doc, pointer, ok = SQL_FIELDS[field]
        for text in (ok + gap + suffix, f"{ok} or pg_{word}(1) is null"):
            errors = errors_at(validate_in_memory(with_value(doc, pointer, text)), doc, pointer)
            assert errors, f"accepted {text!r} in {field}"

    @GENERATED
    @given(SQL_EXPRESSIONS)
    def test_accepted_policy_expressions_stay_within_the_allow_list(self, text: str) -> None:
        """A generated policy expression is either rejected at /spec/using or uses only allowed parts."""
        errors = validate_in_memory(with_value(POLICY_UPDATE, "/spec/using", text))
        accepted = not errors_at(errors, POLICY_UPDATE, "/spec/using")
        event("accepted" if accepted else "rejected")
        if accepted:
            assert_within_allow_list(text)

    @GENERATED
    @given(st.sampled_from(sorted(SQL_FIELDS)), SQL_TOKENS)
    def test_sql_token_soup_is_rejected_cleanly_or_allowed(self, field: str, text: str) -> None:
        """Random SQL token sequences in any fragment field never crash validation."""
        doc, pointer, _ = SQL_FIELDS[field]
        errors = validate_in_memory(with_value(doc, pointer, text))
        accepted = not errors_at(errors, doc, pointer)
        event("accepted" if accepted else "rejected")
        if accepted:
            assert_within_allow_list(text)

    @GENERATED
    @given(st.sampled_from(EVERY_POINTER), JSON_VALUES)
    def test_any_value_anywhere_is_handled(self, target: tuple[int, str], value: Any) -> None:
        """Replacing any field of the baseline with any JSON value never raises; errors carry valid pointers."""
        doc, pointer = target
        validate_in_memory(with_value(doc, pointer, value))

    @GENERATED
    @given(st.text(alphabet="ab:-[]{}&*!|>'\"#?,%@` \n\t~<", max_size=120))
    def test_random_yaml_text_is_handled(self, text: str) -> None:
        """Arbitrary YAML-ish text never raises from parsing or validation."""
        documents, problems = parse_text(text, "fuzz.yaml")
        for problem in problems:
            assert VALID_POINTER.fullmatch(problem.path)
        validation = validate_documents(documents)
        for problem in validation.problems:
            assert VALID_POINTER.fullmatch(problem.path)

    @settings(max_examples=60, deadline=None)
    @given(st.integers(min_value=2, max_value=12), st.integers(min_value=1, max_value=12))
    def test_alias_expansion_is_bounded(self, fanout: int, levels: int) -> None:
        """An alias chain is refused exactly when its expansion is far beyond the node limit."""
        expanded = fanout**levels
        documents, problems = parse_text(_laughs(levels, fanout), "laughs.yaml")
        if expanded > 4 * MAX_EXPANDED_NODES:
            assert [(p.path, p.document) for p in problems] == [("", 0)]
            assert not documents
        elif expanded * 8 < MAX_EXPANDED_NODES:
            assert not problems
