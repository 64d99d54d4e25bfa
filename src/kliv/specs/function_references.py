"""Project-level checks of DatabaseFunctions, Triggers and the policies that call functions.

A mixin of :class:`kliv.specs.resolving._Project`: a body's tables, functions and enums exist;
argument and return types resolve; a trigger's table exists (or is ``auth.users``), its function
returns ``trigger`` and its ``when`` reads existing columns of ``old``/``new``; a policy's calls
are the project's functions with a fitting number of arguments, exposed to the policy's roles.
Dropping a function a policy or a trigger uses is therefore caught here, at validate.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from kliv.specs.base import Resource, checked_expression
from kliv.specs.column_types import BUILTIN_TYPES, ColumnType, parse_column_type
from kliv.specs.database_function import DatabaseFunction, own_function_name
from kliv.specs.errors import DANGLING_REFERENCE, Problem, SpecValueError
from kliv.specs.expressions import _FUNCTION_HINTS, Expression, _function_hint
from kliv.specs.function_bodies import Use
from kliv.specs.projects import ProjectSpecs, Spec
from kliv.specs.suggestions import closest, did_you_mean
from kliv.specs.table import AUTH_USERS, AUTH_USERS_COLUMNS
from kliv.specs.table_policy import TablePolicy
from kliv.specs.trigger import Trigger

if TYPE_CHECKING:
    from kliv.specs.rechecking import Lookups


class FunctionReferences:
    """The resolver's function and trigger methods, over the state ``_Project`` keeps."""

    group: ProjectSpecs
    tables: Lookups
    enums: set[str]
    problems: list[Problem]

    def error(self, spec: Spec[Resource], path: str, message: str, hint: str = "", code: str = "") -> None:
        raise NotImplementedError

    def broken(self, kind: str, name: str) -> bool:
        raise NotImplementedError

    @functools.cached_property
    def database_functions(self) -> dict[str, DatabaseFunction]:
        return {spec.resource.function_name: spec.resource for spec in self.group.database_functions}

    @functools.cached_property
    def call_graph(self) -> dict[str, set[str]]:
        """Which project functions each project function's body calls."""
        known = self.database_functions
        return {name: {u.name for u in f.body.functions if u.name in known} for name, f in known.items()}

    # -- functions -----------------------------------------------------------------------------

    def _database_function(self, spec: Spec[DatabaseFunction]) -> None:
        function = spec.resource
        if function.spec.name is None:
            try:
                own_function_name(function.function_name)
            except SpecValueError as exc:
                self.error(spec, "/metadata/name", f"the function name derived from metadata.name: {exc.message}",
                           "set `spec.name` explicitly")  # fmt: skip
        for index, argument in enumerate(function.spec.arguments):
            self._type(spec, f"/spec/arguments/{index}/type", parse_column_type(argument.type))
        returns = function.spec.returns
        if returns.startswith("setof "):
            table = returns.split()[-1]
            if table not in self.tables and not self.broken("Table", table):
                self.error(spec, "/spec/returns", f"table `{table}` does not exist in the project",
                           did_you_mean(table, self.tables, "tables"), DANGLING_REFERENCE)  # fmt: skip
        elif returns not in ("trigger", "void"):
            self._type(spec, "/spec/returns", parse_column_type(returns))
        body = function.body
        for use in body.tables:
            if use.name not in self.tables and not self.broken("Table", use.name):
                self._body_error(spec, use, f"table `{use.name}` does not exist in the project",
                                 did_you_mean(use.name, self.tables, "tables"))  # fmt: skip
        known = self.database_functions
        for use in body.functions:
            callee = known.get(use.name)
            if callee is None:
                if not self.broken("DatabaseFunction", use.name):
                    self._body_error(spec, use, f"function `{use.name}()` is not allowed", _call_hint(use.name, known))
                continue
            problem = _arity(callee, use.arguments)
            if problem:
                self._body_error(spec, use, problem[0], problem[1])
        for use in body.columns:
            table, _, column = use.name.rpartition(".")
            columns = self._columns_of(table)
            if columns is not None and column not in columns:
                self._body_error(spec, use, f"column `{column}` does not exist on `{table}`",
                                 did_you_mean(column, columns, "columns"))  # fmt: skip
        for trigger in self.group.triggers:
            if trigger.resource.spec.function == function.function_name:
                columns = self._columns_of(trigger.resource.spec.table)
                if columns is None:
                    continue
                for use in body.row_fields:
                    if use.name.split(".", 1)[1] not in columns:
                        self._body_error(spec, use, f"`{use.name}`: `{trigger.resource.spec.table}` (the table of "
                                         f"Trigger `{trigger.resource.name}`) has no such column",
                                         did_you_mean(use.name.split(".", 1)[1], columns, "columns"))  # fmt: skip
        if function.spec.volatility != "volatile" and body.writes:
            self._body_error(spec, body.writes[0], f"a {function.spec.volatility} function may not write tables",
                             "set `volatility: volatile` (the default), or only read")  # fmt: skip
        if not body.returns and function.spec.returns != "void":
            self.error(spec, "/spec/body", "the body never returns a value: Postgres fails when it reaches `end`",
                       "end with `return new;` (a trigger function) or `return <value>;`")  # fmt: skip
        cycle = _cycle(function.function_name, self.call_graph)
        if cycle:
            self.error(spec, "/spec/body",
                       f"`{function.function_name}()` calls itself" + (f" through {cycle}" if cycle != "itself" else "")
                       + ": recursion is unbounded work",
                       "compute the result without calling back into the function")  # fmt: skip
        for use in body.casts:
            if use.name not in self.enums:
                self._body_error(spec, use, f"cast to unknown type `{use.name}`",
                                 did_you_mean(use.name, sorted(BUILTIN_TYPES | self.enums), "types"))  # fmt: skip

    def _columns_of(self, table: str) -> list[str] | None:
        """A project table's columns, or auth.users'; None when the table is unknown (reported apart)."""
        if table == AUTH_USERS:
            return list(AUTH_USERS_COLUMNS)
        found = self.tables.get(table)
        return [c.name for c in found.spec.columns] if found is not None else None

    def _body_error(self, spec: Spec[DatabaseFunction], use: Use, message: str, hint: str) -> None:
        self.error(spec, "/spec/body", f"body line {use.line}: {message}", hint, DANGLING_REFERENCE)

    def _type(self, spec: Spec[Resource], path: str, parsed: ColumnType) -> None:
        if not parsed.is_builtin and parsed.base not in self.enums:
            self.error(spec, path, f"type `{parsed.base}` is neither a built-in type nor an enum of the project",
                       did_you_mean(parsed.base, sorted(BUILTIN_TYPES | self.enums), "types"))  # fmt: skip

    # -- triggers ------------------------------------------------------------------------------

    def _trigger(self, spec: Spec[Trigger]) -> None:
        trigger = spec.resource.spec
        columns: list[str] | None
        if trigger.table == AUTH_USERS:
            columns = list(AUTH_USERS_COLUMNS)
        else:
            table = self.tables.get(trigger.table)
            columns = [c.name for c in table.spec.columns] if table is not None else None
            if table is None and not self.broken("Table", trigger.table):
                self.error(spec, "/spec/table", f"table `{trigger.table}` does not exist in the project",
                           did_you_mean(trigger.table, self.tables, "tables"), DANGLING_REFERENCE)  # fmt: skip
        function = self.database_functions.get(trigger.function)
        if function is None:
            if not self.broken("DatabaseFunction", trigger.function):
                self.error(spec, "/spec/function", f"DatabaseFunction `{trigger.function}` does not exist",
                           did_you_mean(trigger.function, self.database_functions, "functions")
                           or "add a DatabaseFunction with `returns: trigger`", DANGLING_REFERENCE)  # fmt: skip
        elif function.spec.returns != "trigger":
            self.error(spec, "/spec/function",
                       f"DatabaseFunction `{trigger.function}` returns `{function.spec.returns}`, not `trigger`",
                       "give the Trigger a function with `returns: trigger`")  # fmt: skip
        elif trigger.table == AUTH_USERS and function.spec.security != "definer":
            self.error(spec, "/spec/function",
                       f"a trigger on auth.users runs `{trigger.function}()` as whoever writes auth.users: the "
                       "platform, a superuser",
                       f"set `security: definer` on DatabaseFunction `{trigger.function}`: it then runs as the "
                       "project's owner role")  # fmt: skip
        if trigger.when is not None and columns is not None:
            self._trigger_condition(spec, checked_expression(trigger.when, "check"), columns)

    def _trigger_condition(self, spec: Spec[Trigger], expression: Expression, columns: list[str]) -> None:
        events = set(spec.resource.spec.events)
        for use in expression.columns:
            if use.qualifier not in ("new", "old"):
                self.error(spec, "/spec/when", f"`{use.column}`: write `new.{use.column}` or `old.{use.column}`",
                           "a trigger's condition reads the row as `new` (after) and `old` (before)")  # fmt: skip
            elif use.column not in columns:
                self.error(spec, "/spec/when", f"column `{use.column}` does not exist on `{spec.resource.spec.table}`",
                           did_you_mean(use.column, columns, "columns"))  # fmt: skip
            elif (use.qualifier == "old" and events == {"insert"}) or (use.qualifier == "new" and events == {"delete"}):
                self.error(spec, "/spec/when", f"`{use.qualifier}` has no row on {' and '.join(sorted(events))}",
                           "insert triggers read `new`, delete triggers read `old`")  # fmt: skip

    # -- policies ------------------------------------------------------------------------------

    def _policy_calls(self, spec: Spec[TablePolicy], path: str, expression: Expression) -> None:
        if not expression.calls:
            return
        self.tables.everything = True  # it depends on the project's functions, which rechecking does not follow
        known = self.database_functions
        roles = set(spec.resource.spec.roles) - {"service_role"}
        for name, count, _ in expression.calls:
            function = known.get(name)
            if function is None:
                if not self.broken("DatabaseFunction", name):
                    self.error(spec, path, f"function `{name}()` is not allowed", _call_hint(name, known),
                               DANGLING_REFERENCE)  # fmt: skip
                continue
            problem = _arity(function, count)
            if problem:
                self.error(spec, path, problem[0], problem[1])
            missing = sorted(roles - set(function.spec.expose))
            if missing:
                self.error(spec, path,
                           f"`{name}()` is not exposed to {', '.join(missing)}, which this policy applies to: "
                           "their queries would fail with `permission denied for function`",
                           f"apply the policy to `roles: [{', '.join(sorted(function.spec.expose))}]`, or add "
                           f"`expose: [{', '.join(sorted(roles))}]` to DatabaseFunction `{name}`"
                           if function.spec.expose else
                           f"add `expose: [{', '.join(sorted(roles))}]` to DatabaseFunction `{name}`")  # fmt: skip


def _arity(function: DatabaseFunction, count: int) -> tuple[str, str] | None:
    """(message, hint) when a call passes a number of arguments the function does not take."""
    arguments = function.spec.arguments
    required = sum(1 for a in arguments if a.default is None)
    if count < 0 or required <= count <= len(arguments):
        return None
    expected = str(len(arguments)) if required == len(arguments) else f"{required} to {len(arguments)}"
    noun = "argument" if expected == "1" else "arguments"
    name = function.function_name
    return (
        f"`{name}()` takes {expected} {noun}, not {count}",
        f"call it as `{name}({', '.join(a.name for a in arguments)})`",
    )


def _cycle(start: str, calls: dict[str, set[str]]) -> str:
    """How ``start`` calls itself back ("itself", or "`a()`, `b()`"), or "" (depth-first over bodies)."""
    if start in calls.get(start, set()):
        return "itself"
    path: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> bool:
        for callee in sorted(calls.get(name, ())):
            if callee == start:
                return True
            if callee not in seen:
                seen.add(callee)
                path.append(callee)
                if visit(callee):
                    return True
                path.pop()
        return False

    return ", ".join(f"`{n}()`" for n in path) if visit(start) else ""


def _call_hint(name: str, known: dict[str, DatabaseFunction]) -> str:
    match = closest(name, known, cutoff=0.75)
    return (
        _FUNCTION_HINTS.get(name)
        or (f"did you mean `{match}()`?" if match else "")
        or f"{_function_hint(name, None)}, or a DatabaseFunction of the project"
    )
