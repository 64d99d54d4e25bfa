"""DatabaseFunction bodies, parsed with pglast and checked against an allow-list: untrusted code.

Called by the DatabaseFunction model (:mod:`kliv.specs.database_function`) for every body; the
resolver (:mod:`kliv.specs.function_references`) then checks that the tables, enums and functions a body
names exist in the project, from the :class:`Body` returned here.

A ``sql`` body is statements; a ``plpgsql`` body is its whole ``declare … begin … end;`` block,
parsed by ``parse_plpgsql`` and walked statement by statement. Allowed are the statements
SELECT, INSERT, UPDATE, DELETE, RETURN (and RETURN QUERY/NEXT), IF, assignment, RAISE and
PERFORM over the project's tables (unqualified or ``public.``) and ``auth.users``, calling the
fragments' allowed functions, aggregates, ``auth.uid()/role()/jwt()`` and the project's own
DatabaseFunctions. Everything else
is rejected naming the statement, the node and the line inside the body: dynamic SQL
(``EXECUTE``), DDL, ``COPY``, ``SET`` (``set role``, ``set search_path``), loops (unbounded work),
exception blocks, CTEs, other schemas (``pg_temp``, ``pg_catalog`` tables), system catalogs and
functions outside the allow-list (``set_config``, ``current_setting``, ``pg_sleep``...).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Literal

from pglast import parser as pg_parser

from kliv.specs import sizes
from kliv.specs.errors import SpecValueError
from kliv.specs.expressions import CALL_CLAUSES, DENIED, FUNCTIONS, ExpressionError, _Checker, _node, _strings

MAX_BODY = 16_384
MAX_STATEMENTS = 200
DOLLAR_TAG = "$kliv_body$"
AGGREGATES = frozenset({"count", "sum", "min", "max", "avg", "array_agg", "string_agg", "bool_and", "bool_or",
                        "jsonb_agg", "jsonb_object_agg"})  # fmt: skip

_STATEMENT_NAMES = {  # plpgsql statement -> (what it is, how a message names it)
    "PLpgSQL_stmt_dynexecute": ("EXECUTE", "`EXECUTE` (dynamic SQL)"),
    "PLpgSQL_stmt_dynfors": ("FOR ... IN EXECUTE", "`FOR ... IN EXECUTE` (dynamic SQL)"),
    "PLpgSQL_stmt_loop": ("LOOP", "`LOOP` (unbounded work)"),
    "PLpgSQL_stmt_while": ("WHILE", "`WHILE` (unbounded work)"),
    "PLpgSQL_stmt_fori": ("FOR", "`FOR` loops"),
    "PLpgSQL_stmt_fors": ("FOR", "`FOR ... IN query` loops"),
    "PLpgSQL_stmt_forc": ("FOR", "`FOR ... IN cursor` loops"),
    "PLpgSQL_stmt_foreach_a": ("FOREACH", "`FOREACH` loops"),
    "PLpgSQL_stmt_open": ("OPEN", "cursors"),
    "PLpgSQL_stmt_fetch": ("FETCH", "cursors"),
    "PLpgSQL_stmt_close": ("CLOSE", "cursors"),
    "PLpgSQL_stmt_getdiag": ("GET DIAGNOSTICS", "`GET DIAGNOSTICS`"),
    "PLpgSQL_stmt_call": ("CALL", "`CALL`"),
    "PLpgSQL_stmt_commit": ("COMMIT", "transaction control"),
    "PLpgSQL_stmt_rollback": ("ROLLBACK", "transaction control"),
    "PLpgSQL_stmt_case": ("CASE", "the `CASE` statement"),
    "PLpgSQL_stmt_assert": ("ASSERT", "`ASSERT`"),
    "PLpgSQL_stmt_exit": ("EXIT", "`EXIT`/`CONTINUE`"),
}
_SQL_NAMES = {"VariableSetStmt": "SET", "VariableShowStmt": "SHOW", "TransactionStmt": "transaction control",
              "DoStmt": "DO", "GrantRoleStmt": "GRANT role", "CopyStmt": "COPY", "NotifyStmt": "NOTIFY"}  # fmt: skip
_SQL_STATEMENTS = {"SelectStmt": "SELECT", "InsertStmt": "INSERT", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE"}
_SELECT_KEYS = {"targetList", "fromClause", "whereClause", "groupClause", "havingClause", "sortClause",
                "limitCount", "limitOffset", "limitOption", "op", "valuesLists", "distinctClause"}  # fmt: skip
# Declared variable types that reach the catalogs or hold cursors (internal spellings).
_VARIABLE_TYPES = ("reg", "pg_")
_DENIED_VARIABLE_TYPES = frozenset({"oid", "name", "xid", "tid", "refcursor", "cid", "aclitem"})


def sql_name(kind: str) -> str:
    """How a message names a statement node: `CreateFunctionStmt` is `CREATE FUNCTION`."""
    if kind in _SQL_NAMES:
        return _SQL_NAMES[kind]
    return re.sub(r"(?<!^)(?=[A-Z])", " ", kind.removesuffix("Stmt")).upper()


class BodyError(SpecValueError):
    """A rejected body; ``line`` counts from 1 at the body's first line."""

    def __init__(self, message: str, hint: str, line: int, statement: str) -> None:
        super().__init__(f"body line {line} ({statement}): {message}", hint)
        self.line = line
        self.start = line  # the line the statement starts on
        self.statement = statement


@dataclasses.dataclass(frozen=True)
class Use:
    """A name a body refers to, for the resolver, with the line it is on."""

    name: str
    line: int
    arguments: int = -1  # of a call


@dataclasses.dataclass(frozen=True)
class Body:
    """A checked body and what it refers to in the project."""

    tables: tuple[Use, ...]  # project tables read or written (not auth.users)
    writes: tuple[Use, ...]  # project tables or `auth.users` inserted, updated or deleted
    functions: tuple[Use, ...]  # unqualified calls that are not built-ins: project functions
    casts: tuple[Use, ...]  # casts to types that are not built-ins: project enums
    returns: bool = True  # a plpgsql body has a RETURN statement (Postgres fails at run time without one)
    columns: tuple[Use, ...] = ()  # `table.column` inserted or set by name (`auth.users.email` too)
    row_fields: tuple[Use, ...] = ()  # `new.x` / `old.x`: the trigger's table must have column x


def check_body(body: str, language: Literal["sql", "plpgsql"], header: str) -> Body:
    """Parse and check a body; ``header`` is ``name(arguments) RETURNS type`` as DDL spells it."""
    if not body.strip():
        raise SpecValueError("the body is empty", "write the function's statements")
    if len(body) > MAX_BODY:
        raise SpecValueError(f"the body is {len(body)} characters long; at most {MAX_BODY}", "split the function")
    head = body.lstrip()[:40].lower()
    if head.startswith("$") or re.match(r"create\s+(or\s+replace\s+)?function\b", head):
        raise SpecValueError(
            "the body is the text between the dollar quotes, not the quotes or the CREATE FUNCTION around it",
            "keep only what is inside `$$ ... $$`; name, arguments, returns, language and security are fields",
        )
    if DOLLAR_TAG in body:
        raise SpecValueError(f"the body contains `{DOLLAR_TAG}`", "remove it (kliv quotes the body with it)")
    bad = next((i for i, ch in enumerate(body) if ord(ch) < 32 and ch not in "\t\n\r"), None)
    if bad is not None:
        raise SpecValueError(f"the body contains a control character at line {body[:bad].count(chr(10)) + 1}")
    walker = _Walker()
    try:
        if language == "sql":
            walker.sql_text(body, 1, None)
        else:
            walker.plpgsql(body, header)
    except RecursionError:
        raise SpecValueError("the body is nested too deeply", "simplify it") from None
    return Body(tuple(walker.tables), tuple(walker.writes), tuple(walker.functions), tuple(walker.casts),
                language == "sql" or walker.returned, tuple(walker.columns), tuple(walker.row_fields))  # fmt: skip


class _StatementChecker(_Checker):
    """The fragment checker, widened to the statements and calls a body may hold."""

    def __init__(self, sql: str, walker: _Walker, line: int, statement: str) -> None:
        super().__init__(sql, "policy")
        self.prefix = 0
        self.walker = walker
        self.line = line
        self.start = line  # the line the statement starts on
        self.statement = statement

    def _offset(self, location: Any) -> int | None:
        if not isinstance(location, int) or location < 0:
            return None
        return len(self.encoded[:location].decode(errors="ignore")) - self.prefix

    def line_of(self, body: dict[str, Any]) -> int:
        offset = self._offset(body.get("location"))
        text = self.sql[self.prefix :]
        return self.line + (text[:offset].count("\n") if offset is not None else 0)

    def reject(self, message: str, body: dict[str, Any], hint: str = "") -> ExpressionError:
        raise BodyError(message.replace(" in a policy expression", " in a function body"), hint,
                        self.line_of(body), self.statement)  # fmt: skip

    def statement_node(self, node: Any) -> None:
        found = _node(node)
        kind, body = found if found else ("?", {})
        if kind not in _SQL_STATEMENTS:
            raise BodyError(
                f"`{sql_name(kind)}` statements are not allowed",
                "a body may only SELECT, INSERT, UPDATE and DELETE (no DDL, COPY, SET or transaction control)",
                self.start,
                self.statement,
            )
        getattr(self, f"visit_{kind}")(body, 0)
        sizes.bound(node, self.reject)

    # -- statements ----------------------------------------------------------------------------

    def _no_with(self, body: dict[str, Any]) -> None:
        if body.get("withClause"):
            raise self.reject("`WITH` (common table expressions) is not allowed", body, "write a sub-query instead")

    def _returning(self, body: dict[str, Any], scope: int) -> None:
        returning = body.get("returningClause") or {}
        self.visit(returning.get("exprs") or body.get("returningList"), scope)

    def visit_SelectStmt(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        self._no_with(body)
        extra = sorted(set(body) - _SELECT_KEYS - {"withClause"})
        if extra or body.get("op") != "SETOP_NONE":
            shown = ", ".join(extra) or "UNION/INTERSECT/EXCEPT"
            hint = (
                "`SELECT ... INTO` creates a table: in plpgsql, `SELECT ... INTO variable`"
                if "intoClause" in extra
                else ""
            )
            raise self.reject(f"the query uses {shown}, which is not allowed", body, hint)
        for key in ("fromClause", "targetList", "whereClause", "groupClause", "havingClause", "sortClause",
                    "limitCount", "limitOffset", "distinctClause"):  # fmt: skip
            self.visit(body.get(key), scope)
        for row in body.get("valuesLists") or []:
            self.visit(row, scope)

    def _named_columns(self, relation: dict[str, Any], targets: list[Any]) -> None:
        schema = None if relation.get("schemaname") == "public" else relation.get("schemaname")
        table = f"{schema}.{relation['relname']}" if schema else relation["relname"]
        for target in targets:
            found = _node(target)
            if found and found[0] == "ResTarget" and found[1].get("name"):
                self.walker.columns.append(Use(f"{table}.{found[1]['name']}", self.line_of(found[1])))

    def visit_InsertStmt(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        self._no_with(body)
        self._relation(body["relation"], write=True)
        self._named_columns(body["relation"], body.get("cols") or [])
        conflict = body.get("onConflictClause") or {}
        if conflict:
            self.visit(conflict.get("targetList"), scope)
            self.visit(conflict.get("whereClause"), scope)
            infer = conflict.get("infer") or {}
            if infer.get("conname"):
                raise self.reject("`ON CONFLICT ON CONSTRAINT` is not allowed", body, "name the columns instead")
            self.visit(infer.get("whereClause"), scope)
        self.visit(body.get("selectStmt"), scope)
        self._returning(body, scope)

    def visit_UpdateStmt(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        self._no_with(body)
        self._relation(body["relation"], write=True)
        self._named_columns(body["relation"], body.get("targetList") or [])
        for item in body.get("fromClause") or []:
            self.visit(item, scope)
        self.visit(body.get("targetList"), scope)
        self.visit(body.get("whereClause"), scope)
        self._returning(body, scope)

    def visit_DeleteStmt(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        self._no_with(body)
        self._relation(body["relation"], write=True)
        for item in body.get("usingClause") or []:
            self.visit(item, scope)
        self.visit(body.get("whereClause"), scope)
        self._returning(body, scope)

    # -- relations -----------------------------------------------------------------------------

    def _relation(self, body: dict[str, Any], write: bool = False) -> None:
        schema, relation = body.get("schemaname"), body["relname"]
        schema = None if schema == "public" else schema  # Supabase's habit: the project's own schema
        line = self.line_of(body)
        if body.get("catalogname") or schema not in (None, "auth") or (schema == "auth" and relation != "users"):
            shown = ".".join(n for n in (body.get("catalogname"), schema, relation) if n)
            raise self.reject(
                f"`{shown}`: only the project's own tables and `auth.users` are allowed",
                body,
                "name a project table without a schema (`profiles`), or `auth.users`",
            )
        if schema is None and (relation.startswith("pg_") or relation == "information_schema"):
            raise self.reject(f"system catalog `{relation}` is not allowed", body, "read the project's own tables")
        if schema is None:
            self.walker.tables.append(Use(relation, line))
        if write:
            self.walker.writes.append(Use(f"{schema}.{relation}" if schema else relation, line))

    def visit_RangeVar(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        self._relation(body)

    def visit_JoinExpr(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        if body.get("usingClause"):
            raise self.reject("`JOIN ... USING` is not allowed", body, "write `JOIN ... ON a.x = b.x`")
        self.visit(body.get("larg"), scope)
        self.visit(body.get("rarg"), scope)
        self.visit(body.get("quals"), scope)

    def visit_RangeSubselect(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        if body.get("lateral"):
            raise self.reject("`LATERAL` is not allowed", body)
        self.visit(body.get("subquery"), scope)

    # -- expressions ---------------------------------------------------------------------------

    def visit_ColumnRef(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        fields = _strings(body["fields"])
        if len(fields) > 2:
            raise self.reject(f"`{'.'.join(fields)}`: schema-qualified columns are not allowed", body,
                              "write `table.column`")  # fmt: skip
        if len(fields) == 2 and fields[0].lower() in ("new", "old") and fields[1] != "*":
            self.walker.row_fields.append(Use(f"{fields[0].lower()}.{fields[1]}", self.line_of(body)))

    def visit_SetToDefault(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        return None

    def visit_ParamRef(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        return None  # `$1`: an argument of the function

    def visit_SubLink(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        self._operator(body.get("operName"), body)
        self.visit(body.get("testexpr"), scope)
        self.visit(body.get("subselect"), scope)

    def visit_TypeCast(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        before = len(self.casts)
        super().visit_TypeCast(body, scope)
        for cast in self.casts[before:]:
            self.walker.casts.append(Use(cast, self.line_of(body)))

    def visit_FuncCall(self, body: dict[str, Any], scope: int) -> None:  # noqa: N802
        names = _strings(body["funcname"])
        if len(names) == 2 and names[0] == "public":
            names = names[1:]
        name = names[-1]
        if len(names) == 1 and name in DENIED:
            raise self.reject(
                f"function `{name}()` is not allowed",
                body,
                "a body may not change settings or reach outside the database",
            )
        if len(names) == 1 and name in AGGREGATES:
            if body.get("over"):
                raise self.reject(f"`{name}()`: window clauses are not allowed", body)
            self.visit(body.get("args"), scope)
            self.visit(body.get("agg_filter"), scope)
            self.visit(body.get("agg_order"), scope)
            return
        if len(names) == 1 and name not in FUNCTIONS:
            # The resolver finds it, or not.
            self.walker.functions.append(Use(name, self.line_of(body), len(body.get("args") or [])))
            if any(body.get(clause) for clause in CALL_CLAUSES):
                raise self.reject(f"`{name}()`: aggregate, window or variadic calls are not allowed", body)
            self.visit(body.get("args"), scope)
            return
        super().visit_FuncCall(body, scope)


def _as_select_list(assignment: str) -> str:
    """``a[i] := x`` as ``a[i] ,  x``: the target's subscripts are expressions too, checked with the
    value (the operator is the first ``:=`` or ``=`` outside brackets, parentheses and quotes)."""
    depth, quote = 0, ""
    for index, char in enumerate(assignment):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif depth == 0 and assignment.startswith(":=", index):
            return f"{assignment[:index]}, {assignment[index + 2 :]}"
        elif depth == 0 and char == "=":
            return f"{assignment[:index]},{assignment[index + 1 :]}"
    return assignment


class _Walker:
    """Walks a body, statement by statement, collecting what it names."""

    def __init__(self) -> None:
        self.tables: list[Use] = []
        self.writes: list[Use] = []
        self.functions: list[Use] = []
        self.casts: list[Use] = []
        self.statements = 0
        self.exception_line: int | None = None
        self.returned = False
        self.columns: list[Use] = []
        self.row_fields: list[Use] = []

    def _count(self, line: int, statement: str) -> None:
        self.statements += 1
        if self.statements > MAX_STATEMENTS:
            raise BodyError(
                f"the body has more than {MAX_STATEMENTS} statements", "split the function", line, statement
            )

    def sql_text(self, text: str, line: int, statement: str | None, prefix: str = "") -> None:
        """Statements (``prefix`` "SELECT ": an expression) starting at body line ``line``."""
        sql = prefix + text
        try:
            parsed = json.loads(pg_parser.parse_sql_json(sql))
        except pg_parser.ParseError as exc:
            location = exc.args[1] if len(exc.args) > 1 else None
            offset = max(location - 1 - len(prefix), 0) if isinstance(location, int) else 0
            raise BodyError(f"invalid SQL: {exc.args[0] if exc.args else 'syntax error'}",
                            "check quotes and parentheses", line + text[:offset].count("\n"),
                            statement or "SQL") from None  # fmt: skip
        for entry in parsed.get("stmts", []):
            node = entry.get("stmt")
            found = _node(node)
            location = entry.get("stmt_location", 0) or 0
            start = line + sql.encode()[:location].decode(errors="ignore").count("\n")
            shown = statement or sql_name(found[0] if found else "?")
            self._count(start, shown)
            checker = _StatementChecker(sql, self, line, shown)
            checker.prefix = len(prefix)
            checker.start = start
            try:
                # An expression is a SELECT too (`n := a FROM t` reads t): checked as one.
                checker.statement_node(node)
            except ExpressionError as exc:
                raise BodyError(exc.message, exc.hint, start, shown) from None

    # -- plpgsql -------------------------------------------------------------------------------

    def plpgsql(self, body: str, header: str) -> None:
        sql = f"CREATE FUNCTION {header} LANGUAGE plpgsql AS {DOLLAR_TAG}{body}{DOLLAR_TAG}"
        try:
            parsed = json.loads(pg_parser.parse_plpgsql_json(sql))
        except pg_parser.ParseError as exc:
            message = str(exc.args[0]) if exc.args else "syntax error"
            location = exc.args[1] if len(exc.args) > 1 else None
            start = sql.index(DOLLAR_TAG) + len(DOLLAR_TAG)
            offset = max(location - 1 - start, 0) if isinstance(location, int) else 0
            near = re.search(r'at or near "(.+)"$', message)  # plpgsql's errors carry no position
            if location is None and near and near.group(1) in body:
                offset = body.index(near.group(1))
            raise BodyError(f"invalid plpgsql: {message}", "check the `begin ... end;` block and its semicolons",
                            body[:offset].count("\n") + 1, "plpgsql") from None  # fmt: skip
        function = parsed[0]["PLpgSQL_function"]
        self.exception_line = next((int(d["PLpgSQL_var"].get("lineno", 1)) for d in function.get("datums", [])
                                    if d.get("PLpgSQL_var", {}).get("refname") == "sqlstate"), None)  # fmt: skip
        for datum in function.get("datums", []):
            self._declaration(datum)
        self._statement(function["action"])

    def _declaration(self, datum: dict[str, Any]) -> None:
        """A DECLAREd variable: its type and its default (an expression, checked as any other)."""
        ((_, variable),) = datum.items()
        line = variable.get("lineno")
        if line is None:
            return  # plpgsql's own (`new`, `tg_op`, `found`...): nothing of the author's
        if "cursor_explicit_expr" in variable:
            raise BodyError("cursors are not allowed", "select into variables instead", int(line), "DECLARE")
        typname = str(variable.get("datatype", {}).get("PLpgSQL_type", {}).get("typname", "")).lstrip("_")
        if typname.startswith(_VARIABLE_TYPES) or typname in _DENIED_VARIABLE_TYPES:
            raise BodyError(f"variables of type `{typname}` are not allowed (system catalog access)",
                            "declare variables of column types such as `text`, `uuid` or `integer`",
                            int(line), "DECLARE")  # fmt: skip
        self._count(int(line), "DECLARE")
        self._expression(variable.get("default_val"), int(line), "DECLARE")

    def _statement(self, node: Any) -> None:
        found = _node(node)
        kind, body = found if found else ("?", {})
        line = int(body.get("lineno", 1))
        if kind == "PLpgSQL_stmt_block":
            if body.get("exceptions"):
                raise BodyError("exception blocks are not allowed", "let the error reach the caller",
                                self.exception_line or line, "EXCEPTION")  # fmt: skip
            for statement in body.get("body") or []:
                self._statement(statement)
        elif kind == "PLpgSQL_stmt_if":
            self._count(line, "IF")
            self._expression(body.get("cond"), line, "IF")
            for statement in body.get("then_body") or []:
                self._statement(statement)
            for branch in body.get("elsif_list") or []:
                elsif = branch["PLpgSQL_if_elsif"]
                self._expression(elsif.get("cond"), int(elsif.get("lineno", line)), "ELSIF")
                for statement in elsif.get("stmts") or []:
                    self._statement(statement)
            for statement in body.get("else_body") or []:
                self._statement(statement)
        elif kind == "PLpgSQL_stmt_assign":
            self._count(line, "assignment")
            self._expression(body.get("expr"), line, "assignment")
        elif kind in ("PLpgSQL_stmt_return", "PLpgSQL_stmt_return_next"):
            self._count(line, "RETURN")
            self.returned = True
            self._expression(body.get("expr"), line, "RETURN")
        elif kind == "PLpgSQL_stmt_return_query":
            self._count(line, "RETURN QUERY")
            self.returned = True
            if body.get("dynquery"):
                raise BodyError(
                    "`RETURN QUERY EXECUTE` (dynamic SQL) is not allowed", "write the query out", line, "RETURN QUERY"
                )
            self._expression(body.get("query"), line, "RETURN QUERY")
        elif kind == "PLpgSQL_stmt_raise":
            self._count(line, "RAISE")
            for param in body.get("params") or []:
                self._expression(param, line, "RAISE")
            for option in body.get("options") or []:
                self._expression(option.get("PLpgSQL_raise_option", {}).get("expr"), line, "RAISE")
        elif kind == "PLpgSQL_stmt_perform":
            self._count(line, "PERFORM")
            self._expression(body.get("expr"), line, "PERFORM")
        elif kind == "PLpgSQL_stmt_execsql":
            self._count(line, "SQL")
            self._expression(body.get("sqlstmt"), line, None)
        else:
            short = kind.removeprefix("PLpgSQL_stmt_").upper()
            statement, what = _STATEMENT_NAMES.get(kind, (short, f"`{short}`"))
            hint = (
                "write the SQL out; a body may not run SQL built at run time"
                if "dynamic" in what
                else ("a body may only SELECT, INSERT, UPDATE, DELETE, RETURN, IF, assign, RAISE and PERFORM")
            )
            raise BodyError(f"{what}: not allowed in a body", hint, line, statement)

    def _expression(self, value: Any, line: int, statement: str | None) -> None:
        expression = (value or {}).get("PLpgSQL_expr")
        if expression is None:
            return
        query = str(expression.get("query", ""))
        mode = expression.get("parseMode", 0)
        if mode == 0:  # a whole statement (PERFORM's is a SELECT)
            self.sql_text(query, line, statement)
            return
        if mode in (3, 4, 5):  # an assignment: `target := expression`, whose target may hold subscripts
            query = _as_select_list(query)
        self.sql_text(query, line, statement or "expression", prefix="SELECT ")
