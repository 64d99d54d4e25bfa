"""Deleting a Project: a plan with one ``delete`` change per resource it holds, gated and audited
like every other plan.

Called by the operator's delete handler of a Project (:mod:`kliv.operator.handlers`) through
:meth:`PostgresEngine.plan_deletion` and :meth:`PostgresEngine.apply_deletion`. ``deletionPolicy:
Delete`` drops the database and its roles (data loss: gated, the policy itself being the operator's
consent); ``Retain``, a database another Project claims, or ``management-policy: observe`` forget
the project and touch nothing. Either way each resource gets its ``deleted`` event, written in the
control transaction that removes the project's inventory, so a crash never leaves one without the
other. :func:`forget` and :func:`drop` carry it out (the engine calls them under its locks).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg

from kliv.stacks import registry
from kliv.stacks.contract import Record
from kliv.stacks.events import AuditEvent
from kliv.stacks.plans import Change, Plan, Risk
from kliv.stacks.postgres import inventory, naming


@dataclasses.dataclass
class Deletion:
    """What deleting one Project will do: drop (``drop``) or forget, and the plan that says so."""

    namespace: str
    project: str
    database: str
    drop: bool
    plan: Plan


def plan_deletion(
    namespace: str,
    project: str,
    database: str,
    resources: dict[str, Record],
    owner: tuple[str, str] | None,
    drop_requested: bool,
) -> Deletion:
    """The plan, from the project's inventory (``resources``: ref -> record) and the database's owner."""
    ref = f"Project/{namespace}/{project}"
    ours = owner == (namespace, project)
    drop = drop_requested and ours
    changes: list[Change] = []
    for resource, row in sorted(resources.items()):
        if resource == ref:
            continue  # the Project's own change comes last, below
        kind, physical = row.kind, row.physical or resource.rsplit("/", 1)[-1]
        registered = registry.BY_NAME.get(kind)
        fate = registered.on_project_drop if registered is not None else "dropped"
        risk: Risk = "safe"
        if not drop:
            summary = f"forget {kind} {physical}: it stays, unmanaged"
        elif fate == "outlives":
            noun = kind.lower()
            summary = f"forget {noun} {physical}: a {noun} outlives its Project (delete its {kind} object to delete it)"
        elif fate == "lost" and registered is not None:
            summary, risk = f"drop {kind} {physical} with database {database}: {registered.lost}", "data-loss"
        else:
            summary = f"drop {kind} {physical} with database {database}"
        changes.append(Change(resource, "delete", risk, [summary], []))
    if drop:
        summary = f"drop database {database} and its roles (deletionPolicy Delete)"
        changes.append(Change(ref, "delete", "data-loss", [summary], []))
    elif not ours and owner is not None:
        summary = f"forget: database {database} belongs to Project {owner[0]}/{owner[1]}, left untouched"
        changes.append(Change(ref, "delete", "safe", [summary], []))
    else:
        summary = f"forget: database {database} stays, unclaimed and untouched"
        changes.append(Change(ref, "delete", "safe", [summary], []))
    return Deletion(namespace, project, database, drop, Plan(ref, changes))


def forget(control: psycopg.Connection[Any], namespace: str, project: str, audit: list[AuditEvent]) -> None:
    """Remove a project's inventory (its database stays, unclaimed); ``audit`` queued with it."""
    with control.transaction():
        control.execute("DELETE FROM inventory.resources WHERE namespace = %s AND project = %s", [namespace, project])
        control.execute("DELETE FROM inventory.projects WHERE namespace = %s AND name = %s", [namespace, project])
        inventory.enqueue(control, namespace, project, audit)


def drop(
    admin: psycopg.Connection[Any], control: psycopg.Connection[Any], database: str, audit: list[AuditEvent]
) -> None:
    """Drop a database, its roles and its inventory; ``audit`` queued in the control transaction."""
    # Idempotent: after a crash past this point the next deletion finds nothing to drop and
    # still removes the inventory and queues the events below.
    admin.execute(f"DROP DATABASE IF EXISTS {naming.quote(database)} WITH (FORCE)")
    for suffix in naming.ALL_ROLE_SUFFIXES:
        admin.execute(f"DROP ROLE IF EXISTS {naming.quote(naming.role(database, suffix))}")
    owners = "(SELECT namespace, name FROM inventory.projects WHERE database = %s)"
    with control.transaction():
        owner = inventory.owner_of(control, database)
        control.execute(f"DELETE FROM inventory.resources WHERE (namespace, project) IN {owners}", [database])
        if owner is not None:
            for kind in registry.KINDS:
                if kind.cleanup:  # what a dropped project's resources leave in the control database
                    control.execute(kind.cleanup, list(owner))
        control.execute("DELETE FROM inventory.projects WHERE database = %s", [database])
        if owner is not None and audit:
            inventory.enqueue(control, owner[0], owner[1], audit)
