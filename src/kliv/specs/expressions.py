"""SQL fragments in specs, parsed with pglast and checked against an allow-list.

Spec models call :func:`check_expression` for every ``default``, ``check``,
index ``where`` and policy ``using``/``withCheck``. A fragment must be one
expression built from constants, casts to allowed types, columns, operators,
``auth.uid()/role()/jwt()``, safe built-ins and (in policies) ``EXISTS``
sub-queries over plain table names. Everything else is rejected naming the
offending node and its character position in the fragment.

The returned :class:`Expression` lists every column and table the fragment
uses, so that :mod:`kliv.specs.resolving` can check them against the project
without parsing again. Engines must embed a fragment as ``(<text>\\n)``: the
newline ends any trailing ``--`` comment, and the parentheses keep operator
precedence.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Literal

from pglast import parser as pg_parser

from kliv.specs import sizes
from kliv.specs.column_types import BUILTIN_TYPES
from kliv.specs.errors import SpecValueError
from kliv.specs.suggestions import closest

Context = Literal["default", "check", "index", "policy", "generated"]

MAX_LENGTH = 8192
# Relations a sub-query may join, and a whole fragment may read: a policy's cost is paid by every
# request (a 5-way cross join of 40 rows took 4.9 s per anonymous query). statement_timeout backs it up.
MAX_FROM_ITEMS = 3
MAX_TABLES = 4
MAX_PATTERN = 256
_BACK_REFERENCE = re.compile(r"\\[1-9]")
_PATTERN_FUNCTIONS = frozenset({"regexp_replace", "regexp_match", "regexp_like"})
_PREFIX = "SELECT "

# name -> volatility ("i"mmutable, "s"table, "v"olatile), as Postgres marks them
# (conservatively: where overloads differ, the weakest).
FUNCTIONS: dict[str, str] = {
    "now": "s", "statement_timestamp": "s", "transaction_timestamp": "s", "clock_timestamp": "v",
    "gen_random_uuid": "v", "random": "v",
    "timezone": "s", "date_trunc": "s", "date_part": "s", "extract": "s", "age": "s",
    "to_char": "s", "make_date": "i", "make_interval": "i", "isfinite": "i",
    "lower": "i", "upper": "i", "initcap": "i", "length": "i", "char_length": "i",
    "character_length": "i", "octet_length": "i", "btrim": "i", "ltrim": "i", "rtrim": "i",
    "substring": "i", "substr": "i", "replace": "i", "left": "i", "right": "i", "strpos": "i",
    "position": "i", "split_part": "i", "starts_with": "i", "lpad": "i", "rpad": "i",
    "reverse": "i", "md5": "i", "concat": "s", "concat_ws": "s",
    "regexp_replace": "i", "regexp_match": "i", "regexp_like": "i", "similar_to_escape": "i",
    "abs": "i", "round": "i", "floor": "i", "ceil": "i", "ceiling": "i", "trunc": "i", "mod": "i",
    "sign": "i", "sqrt": "i", "power": "i",
    "num_nulls": "i", "num_nonnulls": "i",
    "array_length": "i", "cardinality": "i", "array_position": "i", "array_to_string": "s",
    "jsonb_typeof": "i", "jsonb_array_length": "i", "jsonb_extract_path_text": "i",
    "jsonb_build_object": "s", "to_jsonb": "s",
}  # fmt: skip
AUTH_FUNCTIONS = {"uid": "s", "role": "s", "jwt": "s"}

OPERATORS = frozenset(
    [
        "=",
        "<>",
        "!=",
        "<",
        ">",
        "<=",
        ">=",
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "||",
        "~~",
        "~~*",
        "!~~",
        "!~~*",
        "~",
        "~*",
        "!~",
        "!~*",
        "@>",
        "<@",
        "&&",
        "->",
        "->>",
        "#>",
        "#>>",
        "?",
        "?|",
        "?&",
    ]
) | {"BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC", "NOT BETWEEN SYMMETRIC"}

# Internal type names the parser produces for SQL-standard spellings (`::int`).
_INTERNAL_TYPES = {
    "int2", "int4", "int8", "float4", "float8", "bool", "bpchar", "varchar", "numeric",
    "timestamp", "timestamptz", "time", "timetz", "interval",
}  # fmt: skip
CAST_TYPES = BUILTIN_TYPES | _INTERNAL_TYPES | {"int", "float", "decimal", "character"}

_SQL_VALUE_FUNCTIONS = {
    "SVFOP_CURRENT_DATE": "s", "SVFOP_CURRENT_TIME": "s", "SVFOP_CURRENT_TIME_N": "s",
    "SVFOP_CURRENT_TIMESTAMP": "s", "SVFOP_CURRENT_TIMESTAMP_N": "s", "SVFOP_LOCALTIME": "s",
    "SVFOP_LOCALTIME_N": "s", "SVFOP_LOCALTIMESTAMP": "s", "SVFOP_LOCALTIMESTAMP_N": "s",
    "SVFOP_CURRENT_ROLE": "s", "SVFOP_CURRENT_USER": "s", "SVFOP_USER": "s", "SVFOP_SESSION_USER": "s",
}  # fmt: skip

# Names no fragment or body may call, whatever the project declares (pg_catalog's, first in every
# search path: a DatabaseFunction of such a name would never be the one called).
DENIED = frozenset({"set_config", "current_setting", "pg_sleep", "pg_read_file", "pg_read_binary_file",
                    "pg_ls_dir", "lo_import", "lo_export", "dblink", "dblink_exec", "dblink_connect",
                    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_notify", "txid_current",
                    "query_to_xml", "version", "inet_server_addr"})  # fmt: skip
# Prefixes of names no fragment, body or DatabaseFunction may use (catalog, large-object, dblink functions).
RESERVED_PREFIXES = ("pg_", "lo_", "dblink")
# Call clauses that make a call an aggregate, window or variadic one.
CALL_CLAUSES = ("agg_star", "agg_distinct", "func_variadic", "over", "agg_filter", "agg_order")
_FUNCTION_HINTS = {
    "current_setting": "read JWT claims with `auth.jwt()` instead",
    "set_config": "expressions may not change settings",
    "pg_sleep": "expressions may not sleep",
    "uid": "write `auth.uid()`",
    "role": "write `auth.role()`",
    "jwt": "write `auth.jwt()`",
}
_CONTEXT_NAMES = {
    "default": "a column default",
    "check": "a check constraint",
    "index": "an index predicate",
    "generated": "a generated column",
    "policy": "a policy expression",
}
_TRANSPARENT = {
    "BoolExpr": ("args",),
    "NullTest": ("arg",),
    "BooleanTest": ("arg",),
    "CaseExpr": ("arg", "args", "defresult"),
    "CaseWhen": ("expr", "result"),
    "CoalesceExpr": ("args",),
    "MinMaxExpr": ("args",),
    "A_ArrayExpr": ("elements",),
    "List": ("items",),
    "RowExpr": ("args",),
    "A_Indices": ("lidx", "uidx"),
    "ResTarget": ("val",),
}
_NODE_NAMES = {
    "CollateClause": "`COLLATE`",
    "ParamRef": "a parameter (`$n`)",
    "GroupingFunc": "`GROUPING()`",
    "SetToDefault": "`DEFAULT`",
    "XmlExpr": "an XML function",
    "XmlSerialize": "`XMLSERIALIZE`",
    "MultiAssignRef": "a multi-assignment",
}
_SUBQUERY_KEYS = {"targetList", "fromClause", "whereClause", "limitOption", "op", "limitCount",
                  "limitOffset", "sortClause"}  # fmt: skip


class ExpressionError(SpecValueError):
    """A rejected fragment; ``offset`` is the 0-based character position in it."""

    def __init__(self, message: str, hint: str = "", offset: int | None = None) -> None:
        super().__init__(message, hint)
        self.offset = offset


@dataclasses.dataclass(frozen=True)
class Scope:
    """A FROM list of an ``EXISTS`` sub-query: (alias, table) pairs; scope 0 is the own table."""

    tables: tuple[tuple[str, str], ...]
    parent: int | None


@dataclasses.dataclass(frozen=True)
class ColumnUse:
    """A column reference, unresolved: ``qualifier.column`` seen in scope ``scope``."""

    qualifier: str | None
    column: str
    scope: int
    offset: int


@dataclasses.dataclass(frozen=True)
class Expression:
    """A checked fragment and what it refers to."""

    text: str
    columns: tuple[ColumnUse, ...]
    scopes: tuple[Scope, ...]
    casts: tuple[str, ...]
    constant_true: bool  # lets every row through, or at least never depends on the row or the caller
    # Policies: unqualified calls of functions that are not built-ins, (name, arguments, offset):
    # the project's own DatabaseFunctions, or rejected by the resolver.
    calls: tuple[tuple[str, int, int], ...] = ()

    @property
    def tables(self) -> set[str]:
        return {table for scope in self.scopes for _, table in scope.tables}


def check_expression(text: str, context: Context) -> Expression:
    """Parse ``text`` as one SQL expression and check it for ``context``."""
    if not text.strip():
        raise ExpressionError("the expression is empty", "write an SQL expression, e.g. `now()`")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is {len(text)} characters long; at most {MAX_LENGTH}")
    bad = next((i for i, ch in enumerate(text) if ord(ch) < 32 and ch not in "\t\n\r"), None)
    if bad is not None:
        raise ExpressionError("the expression contains a control character", offset=bad)
    sql = _PREFIX + text
    try:
        parsed = json.loads(pg_parser.parse_sql_json(sql))
        return _Checker(sql, context).run(parsed)
    except pg_parser.ParseError as exc:
        message = str(exc.args[0]) if exc.args else "syntax error"
        location = exc.args[1] if len(exc.args) > 1 else None
        offset = max(location - 1 - len(_PREFIX), 0) if isinstance(location, int) else None
        raise ExpressionError(f"invalid SQL: {message}", "check quotes and parentheses", offset) from None
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply", "simplify it") from None


def _node(value: Any) -> tuple[str, dict[str, Any]] | None:
    if isinstance(value, dict) and len(value) == 1:
        ((kind, body),) = value.items()
        if isinstance(body, dict) and kind[:1].isupper():
            return kind, body
    return None


def _strings(items: list[Any]) -> list[str]:
    return [item["String"]["sval"] if "String" in item else "*" for item in items]


def _without_locations(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_locations(v) for k, v in value.items() if not k.endswith("location")}
    if isinstance(value, list):
        return [_without_locations(v) for v in value]
    return value


class _Checker:
    def __init__(self, sql: str, context: Context) -> None:
        self.sql = sql
        self.encoded = sql.encode()
        self.context = context
        self.columns: list[ColumnUse] = []
        self.scopes: list[Scope] = [Scope((), None)]
        self.casts: list[str] = []
        self.calls: list[tuple[str, int, int]] = []
        self.reads_caller = False  # auth.*(), current_user, or a sub-query: depends on who asks

    # -- entry ---------------------------------------------------------------------------------

    def run(self, parsed: dict[str, Any]) -> Expression:
        statements = parsed.get("stmts", [])
        if not statements or not _node(statements[0].get("stmt")):
            raise ExpressionError("the fragment holds no expression (only comments or `;`)", "write an expression")
        if len(statements) != 1:
            raise ExpressionError(
                "the fragment contains several statements (`;`)",
                "write a single expression, without `;`",
                self._offset(statements[1].get("stmt_location")) if len(statements) > 1 else None,
            )
        found = _node(statements[0]["stmt"])
        select = found[1] if found and found[0] == "SelectStmt" else None
        extra = sorted(set(select) - {"targetList", "limitOption", "op"}) if select else []
        if select is None or extra or select.get("op") != "SETOP_NONE" or len(select.get("targetList", [])) != 1:
            what = f" (found {', '.join(extra)})" if extra else ""
            raise ExpressionError(
                f"the fragment is not a single expression{what}",
                "write one expression such as `status = 'published'`, not a query or a list",
            )
        target = select["targetList"][0]["ResTarget"]
        if "name" in target:
            raise ExpressionError("the fragment may not name its result (`AS ...`)", "remove the alias")
        value = target["val"]
        if self.context not in ("default", "generated"):
            _require_condition(value, self)
        self.visit(value, 0)
        sizes.bound(value, self.reject)
        return Expression(
            text=self.sql[len(_PREFIX) :],
            columns=tuple(self.columns),
            scopes=tuple(self.scopes),
            casts=tuple(self.casts),
            calls=tuple(self.calls),
            constant_true=_is_constant_true(value)
            or (not self.columns and not self.reads_caller and not _is_constant_false(value)),
        )

    # -- helpers -------------------------------------------------------------------------------

    def _offset(self, location: Any) -> int | None:
        if not isinstance(location, int) or location < 0:
            return None
        return max(len(self.encoded[:location].decode(errors="ignore")) - len(_PREFIX), 0)

    def reject(self, message: str, body: dict[str, Any], hint: str = "") -> ExpressionError:
        return ExpressionError(message, hint, self._offset(body.get("location")))

    # -- walking -------------------------------------------------------------------------------

    def visit(self, value: Any, scope: int) -> None:
        if value is None:
            return
        if isinstance(value, list):
            for item in value:
                self.visit(item, scope)
            return
        found = _node(value)
        if found is None:
            raise ExpressionError("unexpected SQL construct")
        kind, body = found
        if kind in _TRANSPARENT:
            for key in _TRANSPARENT[kind]:
                self.visit(body.get(key), scope)
            return
        handler = getattr(self, f"visit_{kind}", None)
        if handler is None:
            raise self.reject(
                f"{_NODE_NAMES.get(kind, f'`{kind}`')} is not allowed in {_CONTEXT_NAMES[self.context]}",
                body,
                "use constants, columns, operators, casts and the allowed functions",
            )
        handler(body, scope)

    def visit_A_Const(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        return None

    def visit_ColumnRef(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        fields = _strings(body["fields"])
        if self.context == "default":
            raise self.reject(
                f"a column default cannot reference column `{'.'.join(fields)}`",
                body,
                "use a constant or a function such as `now()`; a string needs quotes: `'draft'`",
            )
        if "*" in fields:
            raise self.reject("`*` is only allowed as `EXISTS (SELECT * ...)`", body, "name a column")
        if len(fields) > 2:
            raise self.reject(
                f"`{'.'.join(fields)}`: schema-qualified columns are not allowed",
                body,
                "write `table.column` or just `column`",
            )
        qualifier = fields[0] if len(fields) == 2 else None
        offset = self._offset(body.get("location")) or 0
        self.columns.append(ColumnUse(qualifier, fields[-1], scope, offset))

    def visit_TypeCast(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        names = _strings(body["typeName"]["names"])
        type_name = names[-1]
        schema = names[0] if len(names) > 1 else None
        if (schema not in (None, "pg_catalog") or len(names) > 2) or (schema and type_name not in CAST_TYPES):
            raise self.reject(
                f"cast to `{'.'.join(names)}` is not allowed",
                body["typeName"],
                "cast to a built-in type or a project enum, without a schema",
            )
        if type_name not in CAST_TYPES:
            if type_name.startswith(("reg", "pg_")) or type_name in {"oid", "name", "xid", "tid"}:
                raise self.reject(
                    f"cast to `{type_name}` is not allowed (system catalog access)",
                    body["typeName"],
                    "cast only to column types such as `text`, `integer` or `timestamptz`",
                )
            self.casts.append(type_name)  # a project enum, checked by the resolver
        self.visit(body.get("arg"), scope)

    def _operator(self, name: list[Any] | None, body: dict[str, Any]) -> None:
        """Every operator a fragment names, wherever the grammar puts it, is one of OPERATORS."""
        if name is None:
            return
        names = _strings(name)
        if len(names) != 1 or names[0] not in OPERATORS:
            shown = "OPERATOR(" + ".".join(names) + ")" if len(names) > 1 else "".join(names)
            raise self.reject(f"operator `{shown}` is not allowed", body, "use a standard operator")

    def visit_A_Expr(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        self._operator(body.get("name", []), body)
        if body.get("kind") == "AEXPR_SIMILAR":
            escape = _node(body.get("rexpr"))
            self._pattern((escape[1].get("args") or [None])[0] if escape else None, body, "SIMILAR TO")
        elif _strings(body.get("name", [])) in (["~"], ["~*"], ["!~"], ["!~*"]) and body.get("lexpr") is not None:
            self._pattern(body.get("rexpr"), body, "a regular expression")
        self.visit(body.get("lexpr"), scope)
        self.visit(body.get("rexpr"), scope)

    def visit_A_Indirection(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        for item in body.get("indirection", []):
            if "A_Indices" not in item:
                raise self.reject("field selection is not allowed", body, "use `->` or `->>` on jsonb")
        self.visit(body.get("arg"), scope)
        self.visit(body.get("indirection"), scope)

    def _pattern(self, value: Any, body: dict[str, Any], what: str) -> None:
        """A pattern is text written out, without back-references: with them Postgres' regular
        expressions take time polynomial of high degree (8 groups on 161 characters: forever),
        and a pattern from a column would be an app user's to choose."""
        found = _node(value)
        if found and found[0] == "TypeCast":
            found = _node(found[1].get("arg"))
        text = found[1].get("sval", {}).get("sval") if found and found[0] == "A_Const" else None
        if not isinstance(text, str):
            raise self.reject(f"the pattern of {what} must be text written out", body, "e.g. `code ~ '^[A-Z]{3}$'`")
        if len(text) > MAX_PATTERN:
            raise self.reject(f"the pattern of {what} is {len(text)} characters long; at most {MAX_PATTERN}", body)
        if _BACK_REFERENCE.search(text):
            raise self.reject(
                f"the pattern of {what} uses a back-reference (`\\1`...), which can make matching run for hours",
                body,
                "match without back-references",
            )

    def visit_SortBy(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        self._operator(body.get("useOp"), body)  # `ORDER BY x USING op`
        self.visit(body.get("node"), scope)

    def visit_SQLValueFunction(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        self.reads_caller = self.reads_caller or body["op"] in ("SVFOP_CURRENT_ROLE", "SVFOP_CURRENT_USER",
                                                                "SVFOP_USER", "SVFOP_SESSION_USER")  # fmt: skip
        volatility = _SQL_VALUE_FUNCTIONS.get(body["op"])
        if volatility is None:
            raise self.reject(f"`{body['op'][6:].lower()}` is not allowed", body)
        self._check_volatility(body["op"][6:].lower(), volatility, body)

    def visit_FuncCall(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        names = _strings(body["funcname"])
        shown = ".".join(names) + "()"
        name = names[-1]
        schema = names[0] if len(names) == 2 else None
        if len(names) > 2:
            raise self.reject(f"function `{shown}` is not allowed", body)
        if schema == "auth":
            self.reads_caller = True
            volatility = AUTH_FUNCTIONS.get(name)
            if volatility is None:
                raise self.reject(
                    f"function `{shown}` does not exist",
                    body,
                    "use `auth.uid()`, `auth.role()` or `auth.jwt()`",
                )
            if self.context in ("check", "index", "generated"):
                raise self.reject(
                    f"`{shown}` cannot be used in {_CONTEXT_NAMES[self.context]}",
                    body,
                    "restrict who may write rows with a TablePolicy `withCheck` instead",
                )
        else:
            volatility = FUNCTIONS.get(name) if schema in (None, "pg_catalog") else None
            if volatility is None and self._project_call(name, schema, body, scope):
                return
            if volatility is None:
                hint = _FUNCTION_HINTS.get(name) or _function_hint(name, schema)
                raise self.reject(f"function `{shown}` is not allowed", body, hint)
        for flag in ("agg_star", "agg_distinct", "func_variadic"):
            if body.get(flag):
                raise self.reject(f"`{shown}`: aggregate or variadic calls are not allowed", body)
        if body.get("over") or body.get("agg_filter") or body.get("agg_order"):
            raise self.reject(f"`{shown}`: window and aggregate clauses are not allowed", body)
        self._check_volatility(shown, volatility, body)
        if name in _PATTERN_FUNCTIONS and schema != "auth":
            args = body.get("args") or []
            self._pattern(args[1] if len(args) > 1 else None, body, f"{name}()")
        self.visit(body.get("args"), scope)

    def _project_call(self, name: str, schema: str | None, body: dict[str, Any], scope: int) -> bool:
        """A policy may call the project's own DatabaseFunctions, unqualified: recorded for the resolver
        (names no DatabaseFunction may take are rejected here, with their hints)."""
        if self.context != "policy" or schema not in (None, "public") or name in _FUNCTION_HINTS or name in DENIED:
            return False
        if name.startswith(RESERVED_PREFIXES):
            return False
        if any(body.get(clause) for clause in CALL_CLAUSES):
            return False
        self.reads_caller = True  # what a function returns may depend on anything
        self.calls.append((name, len(body.get("args") or []), self._offset(body.get("location")) or 0))
        self.visit(body.get("args"), scope)
        return True

    def _check_volatility(self, shown: str, volatility: str, body: dict[str, Any]) -> None:
        if self.context in ("index", "generated") and volatility != "i":
            plural = {"index": "index predicates", "generated": "generated columns"}[self.context]
            raise self.reject(
                f"`{shown}` is not immutable, so it cannot be used in {_CONTEXT_NAMES[self.context]}",
                body,
                f"{plural} may only use columns, constants and immutable functions",
            )

    def visit_SubLink(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        if self.context != "policy":
            raise self.reject(
                f"sub-queries are not allowed in {_CONTEXT_NAMES[self.context]}",
                body,
                "only policy expressions may use `EXISTS (SELECT ...)`",
            )
        if body["subLinkType"] == "EXPR_SUBLINK" and self._scalar_call(body, scope):
            return  # as caller-dependent as the expression inside it
        self.reads_caller = True  # what it finds depends on the rows (and on RLS for the caller)
        if body["subLinkType"] not in ("EXISTS_SUBLINK", "ANY_SUBLINK"):
            hint = ""
            if body["subLinkType"] == "EXPR_SUBLINK":
                hint = "a scalar sub-select may only call one function, without FROM: `(select auth.uid())`"
            raise self.reject(
                "only `EXISTS (SELECT ...)`, `IN (SELECT ...)` and `(select <function>(...))` sub-queries are allowed",
                body,
                hint,
            )
        self._operator(body.get("operName"), body)  # `x op ANY (SELECT ...)`
        self.visit(body.get("testexpr"), scope)
        found = _node(body["subselect"])
        if found is None or found[0] != "SelectStmt":
            raise self.reject("the sub-query must be a SELECT", body)
        self._subquery(found[1], scope, body)

    def _scalar_call(self, link: dict[str, Any], scope: int) -> bool:
        """Supabase's recommended ``(select auth.uid())`` (and ``(select auth.jwt() ->> 'aal')``): a
        sub-select of one expression without FROM, kept as written (Postgres then evaluates it once per
        statement, as an init plan); the expression is checked as any other."""
        found = _node(link["subselect"])
        select = found[1] if found and found[0] == "SelectStmt" else {}
        targets = select.get("targetList", [])
        if set(select) - {"targetList", "limitOption", "op"} or select.get("op") != "SETOP_NONE" or len(targets) != 1:
            return False
        target = targets[0]["ResTarget"]
        if "name" in target or _node(target.get("val")) is None:
            return False
        self.visit(target.get("val"), scope)
        return True

    def _subquery(self, select: dict[str, Any], scope: int, link: dict[str, Any]) -> None:
        extra = sorted(set(select) - _SUBQUERY_KEYS)
        if extra or select.get("op") != "SETOP_NONE":
            what = ", ".join(extra) or "set operation"
            raise self.reject(
                f"the sub-query uses {what}, which is not allowed",
                link,
                "write `EXISTS (SELECT 1 FROM table WHERE ...)`",
            )
        if not select.get("fromClause"):
            raise self.reject("the sub-query has no FROM clause", link)
        inner = len(self.scopes)
        tables: list[tuple[str, str]] = []
        self.scopes.append(Scope((), scope))
        for item in select["fromClause"]:
            self._from_item(item, inner, tables)
        if len(tables) > MAX_FROM_ITEMS:
            raise self.reject(
                f"the sub-query reads {len(tables)} tables; at most {MAX_FROM_ITEMS}",
                link,
                "split the condition into several `EXISTS (...)` over fewer tables",
            )
        self.scopes[inner] = Scope(tuple(tables), scope)
        read = sum(len(s.tables) for s in self.scopes)
        if read > MAX_TABLES:
            raise self.reject(
                f"the expression reads {read} tables in its sub-queries; at most {MAX_TABLES}",
                link,
                "a policy runs on every query of the table: keep its sub-queries small",
            )
        for target in select.get("targetList", []):
            value = target["ResTarget"].get("val")
            ref = _node(value)
            if ref and ref[0] == "ColumnRef" and _strings(ref[1]["fields"])[-1] == "*":
                continue
            self.visit(value, inner)
        self.visit(select.get("whereClause"), inner)
        self.visit(select.get("sortClause"), inner)
        self.visit(select.get("limitCount"), inner)
        self.visit(select.get("limitOffset"), inner)

    def _from_item(self, item: Any, scope: int, tables: list[tuple[str, str]]) -> None:
        found = _node(item)
        kind, body = found if found else ("?", {})
        if kind == "RangeVar":
            relation = body["relname"]
            if body.get("schemaname") or body.get("catalogname"):
                schema = body.get("schemaname") or body.get("catalogname")
                raise self.reject(
                    f"`{schema}.{relation}`: tables in other schemas are not allowed",
                    body,
                    "reference the project's own tables by their plain name",
                )
            if relation.startswith("pg_") or relation in {"information_schema"}:
                raise self.reject(f"system catalog `{relation}` is not allowed", body)
            alias = body.get("alias", {}).get("aliasname", relation)
            tables.append((alias, relation))
        elif kind == "JoinExpr":
            self._from_item(body.get("larg"), scope, tables)
            self._from_item(body.get("rarg"), scope, tables)
            if body.get("usingClause"):
                raise self.reject("`JOIN ... USING` is not allowed", body, "write `JOIN ... ON a.x = b.x`")
            self.scopes[scope] = Scope(tuple(tables), self.scopes[scope].parent)
            self.visit(body.get("quals"), scope)
        else:
            raise self.reject(
                f"`{kind}` is not allowed in a sub-query's FROM clause",
                body,
                "select from the project's own tables by name",
            )


def _require_condition(value: Any, checker: _Checker) -> None:
    """Checks, predicates and policies are conditions: a bare number or string never is."""
    found = _node(value)
    if found and found[0] == "A_Const" and not ({"boolval", "isnull"} & set(found[1])):
        raise checker.reject(
            "the expression is a constant, not a condition",
            found[1],
            "write a condition such as `price > 0`, or `true`",
        )


def _function_hint(name: str, schema: str | None) -> str:
    if schema not in (None, "pg_catalog"):
        return "functions from other schemas are not allowed; only `auth.uid()`, `auth.role()`, `auth.jwt()`"
    match = closest(name, FUNCTIONS, cutoff=0.75)
    if match:
        return f"did you mean `{match}()`?"
    return "allowed functions include now(), gen_random_uuid(), lower(), length(), coalesce(), auth.uid()"


def _is_constant_false(value: Any) -> bool:
    """``false`` or ``null`` as written: a condition that lets nothing through."""
    found = _node(value)
    if found is None or found[0] != "A_Const":
        return False
    return found[1].get("isnull") is True or found[1].get("boolval", {}).get("boolval") is not True


def _is_constant_true(value: Any) -> bool:
    """True for ``true``, ``'t'::boolean``, ``1 = 1`` and ORs containing one of them."""
    found = _node(value)
    if found is None:
        return False
    kind, body = found
    if kind == "A_Const":
        return body.get("boolval", {}).get("boolval") is True
    if kind == "TypeCast":
        arg = _node(body.get("arg"))
        text = arg[1].get("sval", {}).get("sval", "") if arg and arg[0] == "A_Const" else ""
        return _is_constant_true(body.get("arg")) or str(text).lower() in {"t", "true", "yes", "on", "1"}
    if kind == "BoolExpr" and body.get("boolop") == "OR_EXPR":
        return any(_is_constant_true(arg) for arg in body.get("args", []))
    if kind == "A_Expr" and body.get("kind") == "AEXPR_OP" and _strings(body.get("name", [])) == ["="]:
        left, right = _node(body.get("lexpr")), _node(body.get("rexpr"))
        return bool(
            left
            and right
            and left[0] == right[0] == "A_Const"
            and _without_locations(left[1]) == _without_locations(right[1])
        )
    return False
