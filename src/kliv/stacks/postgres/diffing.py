"""Desired versus observed: the plan that makes a project database match its specs (pure).

Called by the engine with the desired state (:mod:`.desired`), what exists
(:mod:`.catalog`) and what was applied last time (:mod:`.inventory`). Postgres
rewrites expressions in its own spelling, so expression-bearing objects
(defaults, constraints, indexes, policies) are unchanged when both the spec's
text and Postgres' spelling equal what the inventory recorded at the last
apply; structure (types, nullability, RLS, triggers) is compared directly.
"""

from __future__ import annotations

import dataclasses

from kliv.specs.base import checked_expression
from kliv.stacks.contract import Record
from kliv.stacks.errors import PlanRefusedError
from kliv.stacks.plans import Plan, Precondition
from kliv.stacks.postgres import bootstrap
from kliv.stacks.postgres.catalog import ObservedDatabase
from kliv.stacks.postgres.changing import BOOTSTRAP, DROP_POLICIES, ENUMS, POLICIES, _milliseconds, _Resource, widening
from kliv.stacks.postgres.desired import (
    DatabaseState,
    PolicyState,
    expression,
)
from kliv.stacks.postgres.naming import literal, quote
from kliv.stacks.postgres.routine_diffing import RoutineDiffing
from kliv.stacks.postgres.table_diffing import TableDiffing

__all__ = ["Applied", "ServerState", "diff", "widening"]


@dataclasses.dataclass
class ServerState:
    """Cluster-wide facts read on the admin connection."""

    database_exists: bool
    existing_roles: set[str]
    settings: dict[str, str] = dataclasses.field(default_factory=dict)  # ALTER DATABASE ... SET, by name
    authenticator_settings: dict[str, str] = dataclasses.field(default_factory=dict)  # ALTER ROLE ... SET
    builtin_functions: set[str] = dataclasses.field(default_factory=set)  # pg_catalog's, among the project's names


@dataclasses.dataclass
class Applied:
    """What the inventory recorded at the last apply of a project."""

    fingerprints: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # key -> [desired, observed]
    resources: dict[str, Record] = dataclasses.field(default_factory=dict)  # ref -> record
    # When the last apply was recorded (None: never; a database that exists was then made by an
    # apply that stopped before its transaction committed). Also what a later apply checks to
    # know that no other apply ran since this plan.
    stamp: str | None = None
    committed_unrecorded: bool = False  # the first apply committed but stopped before recording itself
    # Whether ``resources`` are the table's rows (False: a committed pending record's, which the
    # rows do not hold yet).
    rows_recorded: bool = True
    # Whether ``fingerprints`` are the buckets' (False: the column an older kliv wrote holds some).
    fingerprints_bucketed: bool = True


def diff(desired: DatabaseState, observed: ObservedDatabase, server: ServerState, applied: Applied) -> Plan:
    """The plan from ``observed`` to ``desired``.

    ``observed`` and ``applied`` are re-keyed in place to follow renames: pass ones
    read for this plan only.
    """
    return _Differ(desired, observed, server, applied).plan()


class _Differ(TableDiffing, RoutineDiffing):
    def __init__(self, desired: DatabaseState, observed: ObservedDatabase, server: ServerState, applied: Applied):
        self.desired = desired
        self.observed = observed
        self.server = server
        self.applied = applied
        self.fingerprints = observed.fingerprints()
        self.resources: dict[str, _Resource] = {}
        self.retyped: set[tuple[str, str]] = set()  # (table, column) whose type changes
        self.preconditions: list[Precondition] = []
        self.rebuilt: set[str] = set()
        self.grantees = ", ".join(quote(r) for r in desired.roles.values())

    def plan(self) -> Plan:
        self._project()
        for table in self.desired.tables.values():
            self._table(table)
        self._functions()
        self._policies()
        self._triggers()
        self._removed_tables()
        changes = [r.change() for r in self.resources.values()]
        return Plan(self.desired.resource, changes, self.preconditions)

    # -- project -------------------------------------------------------------------------------

    def _project(self) -> None:
        desired, server = self.desired, self.server
        finishing = server.database_exists and self.applied.stamp is None and not self.applied.committed_unrecorded
        project = self.resource(desired.resource, server.database_exists and not finishing)
        if finishing:
            # Audited as created: the apply that made the database stopped before recording (or auditing) it.
            project.summary.append(f"finish creating the project: database {desired.name} exists from an earlier "
                                   "apply that stopped before it committed")  # fmt: skip
        missing_roles = {r for r in desired.all_roles if r not in server.existing_roles}
        steps = bootstrap.server_steps(
            desired.name, desired.roles, desired.auditor, server.database_exists, missing_roles, desired.authenticator,
            desired.owner,
        )  # fmt: skip
        for step in steps:
            stage = 0 if not step.transactional else (1 if step.sql.startswith("CREATE ROLE") else 2)
            if _describe(step.sql) not in project.summary:
                project.summary.append(_describe(step.sql))
            project.steps.append(dataclasses.replace(step, stage=stage))
        timeout = f"{desired.statement_timeout_ms}ms"
        if _milliseconds(server.settings.get("statement_timeout")) != desired.statement_timeout_ms:
            project.add(
                f"set the database's statement_timeout to {timeout}",
                f"ALTER DATABASE {quote(desired.name)} SET statement_timeout = {literal(timeout)}",
                2,
                phase="server",
            )
        # A role's own settings apply at its login (never on SET ROLE): the application's login carries it.
        authenticator_timeout = server.authenticator_settings.get("statement_timeout")
        if desired.authenticator and _milliseconds(authenticator_timeout) != desired.statement_timeout_ms:
            project.add(
                f"set the authenticator login's statement_timeout to {timeout}",
                f"ALTER ROLE {quote(desired.authenticator)} SET statement_timeout = {literal(timeout)}",
                2,
                phase="server",
            )
        if self.observed.bootstrap != bootstrap.BOOTSTRAP_VERSION:
            for step in bootstrap.database_steps(desired.name, desired.roles, desired.auditor, desired.owner):
                project.add("bootstrap schemas auth, audit and email", step.sql, BOOTSTRAP)
        for name, labels in desired.enums.items():
            existing = self.observed.enums.get(name)
            if existing is None:
                values = ", ".join(literal(v) for v in labels)
                project.add(f"create enum {name}", f"CREATE TYPE {quote(name)} AS ENUM ({values})", ENUMS)
                continue
            kept = [label for label in existing if label in labels]
            if len(kept) != len(existing) or kept != [label for label in labels if label in existing]:
                # Postgres can only add enum values: removing or reordering one means
                # rewriting every column of the type, which no plan does silently.
                raise PlanRefusedError(
                    f"enum {name}: values can only be added (it has {', '.join(existing)}; "
                    f"the spec says {', '.join(labels)})",
                    "keep the existing values in their order and add new ones, or migrate by hand",
                )
            previous = None
            for label in labels:
                if label not in existing:
                    where = f" AFTER {literal(previous)}" if previous else f" BEFORE {literal(existing[0])}"
                    # Committed before the transaction: Postgres refuses to use a value added in it.
                    project.add(
                        f"add value {label!r} to enum {name}",
                        f"ALTER TYPE {quote(name)} ADD VALUE IF NOT EXISTS {literal(label)}{where}",
                        ENUMS,
                        phase="prepare",
                    )
                previous = label

    # -- tables --------------------------------------------------------------------------------

    def _uses_retyped(self, table: str, policy: PolicyState) -> bool:
        """Whether the policy may use a column whose type this plan changes (then it is rebuilt)."""
        for text in (policy.using, policy.with_check):
            if text is None:
                continue
            expression = checked_expression(text, "policy")
            tables = expression.tables | {table}
            columns = {use.column for use in expression.columns}
            if any(t in tables and c in columns for t, c in self.retyped):
                return True
        return False

    def _policies(self) -> None:
        managed_tables = set(self.desired.tables)
        known = {r.physical: ref for ref, r in self.applied.resources.items() if r.kind == "TablePolicy"}
        desired_refs = {policy.resource for policy in self.desired.policies.values()}
        # A policy moved to another table (same object, new `table`): an update, not a delete.
        moved = {ref: physical for physical, ref in known.items() if ref in desired_refs}
        for (table, name), policy in self.desired.policies.items():
            current = self.observed.policies.get((table, name))
            previous = moved.get(policy.resource)
            resource = self.resource(policy.resource, current is not None or previous is not None)
            if current is not None:
                rebuilt = self._uses_retyped(table, policy) or self.calls_rebuilt(policy)
                if not rebuilt and self.unchanged(f"policy:{table}.{name}", policy.text):
                    continue
                resource.add(
                    f"replace policy {name} on {table}", f"DROP POLICY {quote(name)} ON {quote(table)}", DROP_POLICIES
                )
            elif previous is not None and previous != f"{table}.{name}":
                resource.summary.append(f"move policy from {previous} to {table}.{name}")
            resource.add(
                f"create {'restrictive ' * policy.restrictive}{policy.command.lower()} policy {name} on {table}",
                _create_policy(table, policy),
                POLICIES,
            )
        for table, name in sorted(set(self.observed.policies) - set(self.desired.policies)):
            ref = known.get(f"{table}.{name}")
            if ref is None and table not in managed_tables:
                continue  # not ours
            resource = self.resource(ref or self.desired.tables[table].resource, True)
            if ref is not None and ref not in desired_refs:
                resource.action = "delete"
            resource.add(
                f"drop policy {name} on {table}", f"DROP POLICY {quote(name)} ON {quote(table)}", DROP_POLICIES
            )


def _create_policy(table: str, policy: PolicyState) -> str:
    roles = ", ".join(quote(r) for r in policy.roles)
    mode = "RESTRICTIVE" if policy.restrictive else "PERMISSIVE"
    sql = f"CREATE POLICY {quote(policy.name)} ON {quote(table)} AS {mode} FOR {policy.command} TO {roles}"
    if policy.using is not None:
        sql += f" USING {expression(policy.using)}"
    if policy.with_check is not None:
        sql += f" WITH CHECK {expression(policy.with_check)}"
    return sql


def _describe(sql: str) -> str:
    if sql.startswith(("REVOKE ALL ON DATABASE", "GRANT CONNECT")):
        return "only the project roles may connect to the database"
    if sql.startswith("CREATE ROLE") and " LOGIN " in sql:
        return f"create login role {sql.split()[2].strip(chr(34))} for applications (NOINHERIT: SET ROLE to act)"
    if sql.startswith("GRANT ") and " ON " not in sql:
        return (
            f"{sql.split(' TO ')[-1].strip(chr(34))} may SET ROLE to the project's anon, authenticated and service_role"
        )
    return sql.replace('"', "").lower()
