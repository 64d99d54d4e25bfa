"""The native engine's plan, the parts that need no engine state: the prepared plan itself, the
server's state and the claims on its names, the preconditions a plan checks, what a plan leaves
in the inventory, and the fingerprints read back once it is applied.

Called by :meth:`kliv.stacks.postgres.engine.PostgresEngine.plan` and ``apply``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg

from kliv.specs import ProjectSpecs
from kliv.stacks.contract import Record
from kliv.stacks.engines import Prepared
from kliv.stacks.errors import AlreadyExistsError, PlanRefusedError
from kliv.stacks.hashing import spec_hash
from kliv.stacks.plans import Plan, Precondition
from kliv.stacks.postgres import locks, watching
from kliv.stacks.postgres.catalog import ObservedDatabase, observe
from kliv.stacks.postgres.desired import DatabaseState, text_digest
from kliv.stacks.postgres.diffing import ServerState

PRECONDITION_TIMEOUT = "60s"


@dataclasses.dataclass
class PostgresPrepared(Prepared):
    """A plan of the native engine: the neutral one, plus the desired database and records."""

    desired: DatabaseState = dataclasses.field(kw_only=True)
    resources: list[Record] = dataclasses.field(kw_only=True)  # the inventory's records once applied
    stamp: str | None = None  # the inventory's record of the last apply, as this plan saw it
    lock_table: locks.LockTable | None = None  # the server's, when planned
    lock_budget: int | None = None  # --split: locks per transaction; None: one transaction
    observed: ObservedDatabase | None = None  # the catalog as this plan read it
    # The inventory's rows as this plan read them; None when they came from a pending record.
    stored_rows: dict[str, Record] | None = None
    # The inventory's fingerprints column as this plan read it (None with a pending record): a
    # record then writes only what differs from it.
    stored_fingerprints: dict[str, list[str]] | None = None
    # The tables this plan's changes reach (read again after applying, the rest reused from
    # ``observed``); None: every table (a change that may reach any, such as the bootstrap).
    touched: frozenset[str] | None = None
    reading: watching.Reading | None = None  # which catalog reading ``observed`` is


def read_server(control: psycopg.Connection[Any], desired: DatabaseState) -> tuple[ServerState, locks.LockTable]:
    """Whether the database and roles exist, their settings, and the server's lock table."""
    # pg_database and pg_roles are shared catalogs: readable from the control database too.
    row = control.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %s), "
        "ARRAY(SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)), "
        "(SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        " WHERE d.datname = %s AND s.setrole = 0), "
        "(SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
        " WHERE r.rolname = %s AND s.setdatabase = 0), "
        f"{locks.SETTINGS}, "
        # Built-ins are the same in every database of a server: the control database's will do.
        "ARRAY(SELECT DISTINCT proname::text FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace "
        " AND proname = ANY(%s))",
        [desired.name, desired.all_roles, desired.name, desired.authenticator, sorted(desired.functions)],
    ).fetchone()
    assert row is not None
    settings = dict(item.split("=", 1) for item in row[2] or [] if "=" in item)
    role_settings = dict(item.split("=", 1) for item in row[3] or [] if "=" in item)
    server = ServerState(bool(row[0]), set(row[1]), settings, role_settings, set(row[5]))
    return server, locks.LockTable.from_settings(tuple(row[4]))


def check_claims(
    owner: tuple[str, str] | None, server: ServerState, desired: DatabaseState, group: ProjectSpecs
) -> None:
    """AlreadyExistsError unless the database and roles are this Project's, or nobody's and absent."""
    if owner not in (None, (group.namespace, group.name)):
        raise AlreadyExistsError(
            f"database `{desired.name}` is already claimed by Project {owner[0]}/{owner[1]}",
            "give this Project another `spec.database.name`",
        )
    if owner is None and server.existing_roles:
        raise AlreadyExistsError(
            f"roles {', '.join(sorted(server.existing_roles))} exist but no kliv Project claims them; "
            "kliv never takes roles over",
            "choose another `spec.database.name`, or drop the roles",
        )
    if owner is None and server.database_exists:
        raise AlreadyExistsError(
            f"database `{desired.name}` exists but no kliv Project manages it; kliv never takes one over",
            "choose another `spec.database.name`, or drop or rename the existing database",
        )


def check_preconditions(connection: psycopg.Connection[Any], plan: Plan) -> None:
    """Run the plan's read-only checks: PlanRefusedError when a change would fail half-way."""
    for check in plan.preconditions:
        try:
            with connection.transaction():
                # A plan reads a table's rows at most this long: it may run on an untrusted change.
                connection.execute(f"SET LOCAL statement_timeout = '{PRECONDITION_TIMEOUT}'")
                row = connection.execute(check.sql).fetchone()
        except psycopg.OperationalError as exc:
            if not isinstance(exc, psycopg.errors.QueryCanceled):
                raise
            _unchecked(plan, check)  # too many rows to check in time: the plan says so, the apply will tell
            continue
        except psycopg.Error:
            _unchecked(plan, check)  # a predicate over a column this plan adds
            continue
        if row and row[0]:
            raise PlanRefusedError(f"{check.resource}: {check.message}", check.hint)


def touched(plan: Plan, desired: DatabaseState, applied: dict[str, Record]) -> frozenset[str] | None:
    """The tables a plan's changes reach, or None when one may reach any table: a change of the
    Project (bootstrap, enums, grants) or a dropped table (CASCADE reaches its referrers)."""
    tables = {state.resource: name for name, state in desired.tables.items()}
    policies = {state.resource: table for (table, _), state in desired.policies.items()}
    found: set[str] = set()
    for change in plan.changes:
        if change.action == "noop" or not change.steps:
            continue
        kind = change.resource.split("/", 1)[0]
        before = applied.get(change.resource)
        if kind == "Table" and change.action != "delete" and change.resource in tables:
            found.add(tables[change.resource])
            if before is not None:
                found.add(before.physical)  # a renamed table
            renamed = desired.tables[tables[change.resource]].renamed_from
            if renamed and f"rename table {renamed} to {tables[change.resource]}" in change.summary:
                found.add(renamed)  # renamed now, under a Table name that has no record yet
        elif kind == "TablePolicy" and change.resource in policies:
            found.add(policies[change.resource])
            if before is not None:
                found.add(before.physical.split(".", 1)[0])  # a policy moved from another table
        elif kind == "TablePolicy" and before is not None:
            found.add(before.physical.split(".", 1)[0])  # a removed policy
        elif kind != "EmailTemplate":  # templates live outside the public schema
            return None
    return frozenset(found)


def _unchecked(plan: Plan, check: Precondition) -> None:
    """The plan no longer claims a check it could not make."""
    for change in plan.changes:
        if change.resource == check.resource:
            change.summary = [check.unchecked if line == check.summary else line for line in change.summary]


def records(group: ProjectSpecs, desired: DatabaseState) -> list[Record]:
    """Inventory records for every resource of the project this engine plans itself."""
    records: list[Record] = []
    if group.project is not None:
        project = group.project.resource
        retain = project.spec.deletion_policy == "Retain"
        records.append(Record("Project", project.name, desired.name, spec_hash(project.spec), retain))
    for table in group.tables:
        state = desired.tables[table.resource.table_name]
        records.append(Record("Table", table.resource.name, state.name, state.spec_hash, state.retain))
    for policy in group.policies:
        resource = policy.resource
        physical = f"{resource.spec.table}.{resource.policy_name}"
        records.append(Record("TablePolicy", resource.name, physical, desired.policy_resources[resource.ref], False))
    for routine in group.database_functions:
        made = desired.functions[routine.resource.function_name]
        records.append(Record("DatabaseFunction", routine.resource.name, made.name, made.spec_hash, False))
    for trigger in group.triggers:
        found = desired.triggers[(trigger.resource.spec.table, trigger.resource.trigger_name)]
        records.append(Record("Trigger", trigger.resource.name, f"{found.table}.{found.name}", found.spec_hash, False))
    return records


def applied_fingerprints(
    connection: psycopg.Connection[Any], prepared: PostgresPrepared
) -> tuple[dict[str, list[str | None]], ObservedDatabase]:
    """The spec's text and Postgres' stored form of every expression, as applied, and the catalog
    they were read from: only the tables the plan reached are read again (at 1,000 tables one
    added column reads one)."""
    touched, before = prepared.touched, prepared.observed
    if touched is None or before is None:
        found = observe(connection)
    else:
        found = before.refreshed(observe(connection, touched), touched)
    observed = found.fingerprints()
    texts = prepared.desired.fingerprints()
    return {key: [text_digest(text), observed.get(key)] for key, text in texts.items()}, found
