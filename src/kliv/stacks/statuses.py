"""Each object's status in the control database: conditions, outputs, observed generation.

Written after every run, by ``kliv apply`` and by the operator's reconcile (which
also writes the Kubernetes status), so a project applied from the CLI has a status
too; read by ``kliv serve`` (admin UI, agent interface) and by :func:`load`. A run
covers a whole project: objects it no longer holds lose their row. Only rows that
changed are written, and a condition keeps its ``lastTransitionTime`` while its
status stays the same (as Kubernetes does). Statuses hold outputs, never a secret.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import psycopg


@dataclasses.dataclass(frozen=True)
class ObjectState:
    """One object's status as a run found it; ``conditions``: ``{type, status, reason, message}``."""

    kind: str
    name: str
    generation: int | None
    conditions: list[dict[str, str]]
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)


def record(control: psycopg.Connection[Any], namespace: str, project: str, states: list[ObjectState], by: str) -> int:
    """Make the project's statuses ``states``; returns how many rows were written or removed."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with control.transaction():
        stored = {
            (kind, name): (generation, conditions, outputs)
            for kind, name, generation, conditions, outputs in control.execute(
                "SELECT kind, name, generation, conditions, outputs FROM inventory.statuses "
                "WHERE namespace = %s AND project = %s",
                [namespace, project],
            )
        }
        changed = []
        for state in states:
            before = stored.get((state.kind, state.name))
            times = {c.get("type"): c for c in (before[1] if before else [])}
            conditions = []
            for condition in state.conditions:
                previous = times.get(condition["type"])
                same = previous is not None and previous.get("status") == condition["status"]
                stamp = previous.get("lastTransitionTime", now) if same and previous else now
                conditions.append({**condition, "lastTransitionTime": stamp})
            if before is None or before != (state.generation, conditions, state.outputs):
                changed.append((state, conditions))
        if changed:
            with control.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO inventory.statuses (namespace, project, kind, name, generation, conditions, outputs, "
                    "updated_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (namespace, project, kind, name) DO UPDATE SET generation = EXCLUDED.generation, "
                    "conditions = EXCLUDED.conditions, outputs = EXCLUDED.outputs, updated_by = EXCLUDED.updated_by, "
                    "updated_at = now()",
                    [[namespace, project, s.kind, s.name, s.generation, json.dumps(c), json.dumps(s.outputs), by]
                     for s, c in changed],
                )  # fmt: skip
        present = {(s.kind, s.name) for s in states}
        gone = [key for key in stored if key not in present]
        if gone:
            control.execute(
                "DELETE FROM inventory.statuses WHERE namespace = %s AND project = %s "
                "AND (kind, name) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                [namespace, project, [k for k, _ in gone], [n for _, n in gone]],
            )
    return len(changed) + len(gone)


def load(control: psycopg.Connection[Any], namespace: str, project: str) -> list[dict[str, Any]]:
    """The project's statuses, by kind and name: ``{kind, name, observedGeneration, conditions, outputs, ...}``."""
    rows = control.execute(
        "SELECT kind, name, generation, conditions, outputs, updated_by, updated_at::text FROM inventory.statuses "
        "WHERE namespace = %s AND project = %s ORDER BY kind, name",
        [namespace, project],
    ).fetchall()
    keys = ("kind", "name", "observedGeneration", "conditions", "outputs", "updatedBy", "updatedAt")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def ready(kind: str, name: str, generation: int | None, outputs: dict[str, str]) -> ObjectState:
    """An object a run applied, or found matching its spec."""
    return ObjectState(
        kind,
        name,
        generation,
        [
            {"type": "Ready", "status": "True", "reason": "Available", "message": f"{kind} {name} is ready."},
            {"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "message": "Reality matches the spec."},
        ],
        outputs,
    )


def failed(kind: str, name: str, generation: int | None, reason: str, message: str) -> ObjectState:
    """An object a run could not bring to its spec (refused, failed, waiting)."""
    return ObjectState(
        kind,
        name,
        generation,
        [
            {"type": "Ready", "status": "False", "reason": reason, "message": message},
            {"type": "Synced", "status": "False", "reason": reason, "message": message},
        ],
    )
