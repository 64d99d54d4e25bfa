"""The desired state of a project's DatabaseFunctions and Triggers, and their DDL (pure).

Called by :func:`kliv.stacks.postgres.desired.desired_state`; the differ
(:mod:`kliv.stacks.postgres.routine_diffing`) compares these with the catalog's functions and
triggers.

Every function lives in schema ``public`` and belongs to the project's owner role (NOLOGIN,
not a superuser, BYPASSRLS): a definer function runs as that role, never as the admin. A definer
function pins ``search_path = pg_catalog, public, pg_temp``: pg_catalog first, so no name of the
project can shadow a built-in; ``public`` (where only the admin may create objects) for the
project's unqualified tables and functions, as the spec language writes them; ``pg_temp``
explicitly last, since Postgres searches it *first* for tables and types when it is left out.
EXECUTE is revoked from PUBLIC and granted to service_role and the roles a function exposes.
"""

from __future__ import annotations

import dataclasses

from kliv.specs import DatabaseFunction, Trigger
from kliv.specs.column_types import parse_column_type
from kliv.specs.function_bodies import DOLLAR_TAG
from kliv.specs.table import AUTH_USERS
from kliv.stacks.hashing import spec_hash
from kliv.stacks.postgres.naming import quote

DEFINER_PATH = "pg_catalog, public, pg_temp"


def _type(text: str) -> tuple[str, str]:
    """(DDL spelling, format_type spelling) of a column type."""
    from kliv.stacks.postgres.desired import format_type, sql_type

    parsed = parse_column_type(text)
    return sql_type(parsed), format_type(parsed)


@dataclasses.dataclass(frozen=True)
class FunctionState:
    name: str
    resource: str
    spec_hash: str
    identity: str  # as pg_get_function_identity_arguments() prints it: `user_id uuid, n integer`
    arguments: str  # the DDL argument types, for ALTER/GRANT/DROP: `uuid, integer`
    result: str  # as pg_get_function_result() prints it
    defaults: int
    statements: tuple[str, ...]  # CREATE OR REPLACE, owner, EXECUTE grants
    calls: tuple[str, ...] = ()  # the project functions its body calls: made before it

    @property
    def signature(self) -> tuple[str, str, int]:
        """What CREATE OR REPLACE cannot change: names and types of the arguments, the result, defaults."""
        return (self.identity, self.result, self.defaults)

    @property
    def text(self) -> str:
        return "\n".join(self.statements)

    @property
    def qualified(self) -> str:
        return f"public.{quote(self.name)}({self.arguments})"


@dataclasses.dataclass(frozen=True)
class TriggerState:
    name: str
    resource: str
    spec_hash: str
    table: str  # a project table, or `auth.users`
    function: str
    create: str

    @property
    def text(self) -> str:
        return self.create

    @property
    def target(self) -> str:
        return AUTH_USERS if self.table == AUTH_USERS else quote(self.table)

    def drop(self) -> str:
        return f"DROP TRIGGER IF EXISTS {quote(self.name)} ON {self.target}"


def function_state(spec: DatabaseFunction, roles: dict[str, str], owner: str) -> FunctionState:
    function = spec.spec
    name = spec.function_name
    declared, identity, ddl_types = [], [], []
    for argument in function.arguments:
        ddl, formatted = _type(argument.type)
        default = f" DEFAULT ({argument.default}\n)" if argument.default is not None else ""
        declared.append(f"{quote(argument.name)} {ddl}{default}")
        identity.append(f"{argument.name} {formatted}")
        ddl_types.append(ddl)
    returns, result = _returns(function.returns)
    security = " SECURITY DEFINER" if function.security == "definer" else ""
    # An invoker function keeps the caller's path and stays inlinable (a SET clause prevents it).
    path = f" SET search_path = {DEFINER_PATH}" if function.security == "definer" else ""
    qualified = f"public.{quote(name)}({', '.join(ddl_types)})"
    granted = [roles["service_role"], *(roles[r] for r in sorted(function.expose))]
    statements = (
        f"CREATE OR REPLACE FUNCTION public.{quote(name)}({', '.join(declared)}) RETURNS {returns} "
        f"LANGUAGE {function.language} {function.volatility.upper()}{security}{path} "
        f"AS {DOLLAR_TAG}{function.body}{DOLLAR_TAG}",
        f"ALTER FUNCTION {qualified} OWNER TO {quote(owner)}",
        f"REVOKE ALL ON FUNCTION {qualified} FROM PUBLIC, {', '.join(quote(r) for r in roles.values())}",
        f"GRANT EXECUTE ON FUNCTION {qualified} TO {', '.join(quote(r) for r in granted)}",
    )
    return FunctionState(
        name=name,
        resource=spec.ref,
        spec_hash=spec_hash(function),
        identity=", ".join(identity),
        arguments=", ".join(ddl_types),
        result=result,
        defaults=sum(1 for a in function.arguments if a.default is not None),
        statements=statements,
        calls=tuple(sorted({use.name for use in spec.body.functions} - {name})),
    )


def in_call_order(functions: dict[str, FunctionState]) -> list[FunctionState]:
    """Callees before callers: Postgres checks a sql body's calls when it creates the function (the
    resolver refuses call cycles)."""
    ordered: list[FunctionState] = []
    done: set[str] = set()

    def add(name: str, seen: frozenset[str]) -> None:
        if name in done or name in seen or name not in functions:
            return
        for callee in functions[name].calls:
            add(callee, seen | {name})
        done.add(name)
        ordered.append(functions[name])

    for name in sorted(functions):
        add(name, frozenset())
    return ordered


def _returns(returns: str) -> tuple[str, str]:
    if returns in ("trigger", "void"):
        return returns, returns
    if returns.startswith("setof "):
        table = returns.split()[-1]
        return f"SETOF public.{quote(table)}", f"SETOF {table}"
    return _type(returns)


_TIMING = {"before": "BEFORE", "after": "AFTER"}


def trigger_state(spec: Trigger) -> TriggerState:
    trigger = spec.spec
    name = spec.trigger_name
    target = AUTH_USERS if trigger.table == AUTH_USERS else quote(trigger.table)
    events = " OR ".join(event.upper() for event in sorted(trigger.events, key=["insert", "update", "delete"].index))
    when = f" WHEN (({trigger.when}\n))" if trigger.when is not None else ""
    create = (
        f"CREATE OR REPLACE TRIGGER {quote(name)} {_TIMING[trigger.timing]} {events} ON {target} "
        f"FOR EACH {trigger.for_each.upper()}{when} EXECUTE FUNCTION public.{quote(trigger.function)}()"
    )
    return TriggerState(name, spec.ref, spec_hash(trigger), trigger.table, trigger.function, create)
