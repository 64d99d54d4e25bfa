"""Plans: what an engine will do, as data, before any of it is done.

Built by the engines (:mod:`kliv.stacks.postgres`), shown by ``kliv plan`` and
``kliv apply`` (text or JSON), gated by :meth:`Plan.refused`, and kept in the
inventory. A plan never holds a secret: steps are SQL over identifiers and
validated expressions only, and API calls name a secret, never its value.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

Action = Literal["create", "update", "delete", "noop"]
Risk = Literal["safe", "rename", "destructive", "data-loss"]
Phase = Literal["server", "prepare", "database", "online", "external"]

_PHASES = {"server": 0, "prepare": 1, "database": 2, "online": 3, "external": 4}
RISK_ORDER: dict[str, int] = {"safe": 0, "rename": 1, "destructive": 2, "data-loss": 3}
GATED_RISKS = frozenset({"destructive", "data-loss"})


@dataclasses.dataclass(frozen=True)
class Step:
    """One statement.

    ``phase`` says where it runs: ``server`` on the admin connection (CREATE
    DATABASE, roles), ``prepare`` on the project database before its transaction,
    each committed alone (new enum values, which the transaction may then use),
    ``database`` inside the project's single transaction, ``online`` after that
    transaction (CREATE INDEX CONCURRENTLY), each alone; ``external`` steps are API
    calls (S3, Secrets Manager) that their provider makes after the database phases.
    """

    sql: str
    phase: Phase = "database"
    transactional: bool = True
    # Order within the phase: the differ emits per resource, execution sorts by stage.
    stage: int = 50


@dataclasses.dataclass
class Change:
    """A change to one resource: what, how risky, why, and the concrete steps."""

    resource: str
    action: Action
    risk: Risk
    summary: list[str]
    steps: list[Step]
    # What the resource's provider needs to make the change (plain JSON data, never a secret
    # value): the change alone is enough to apply it (Provider.apply), now or from a stored plan.
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "action": self.action,
            "risk": self.risk,
            "summary": self.summary,
            "steps": [dataclasses.asdict(step) for step in self.steps],
        }


@dataclasses.dataclass(frozen=True)
class Precondition:
    """A read-only query the engine runs at plan time: true means the change would fail half-way."""

    resource: str
    sql: str
    message: str
    hint: str
    summary: str  # the change's summary line that says it was checked
    unchecked: str  # what that line says instead when the check could not run in time


@dataclasses.dataclass
class Plan:
    """Ordered changes for one project; empty when reality matches the specs."""

    project: str
    changes: list[Change] = dataclasses.field(default_factory=list)
    # Checked before anything is applied, for steps that run outside the project's transaction.
    preconditions: list[Precondition] = dataclasses.field(default_factory=list)
    # Resources of the specs this engine cannot apply yet (ref -> why): shown, never silently dropped.
    not_supported: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(c.action != "noop" for c in self.changes)

    @property
    def steps(self) -> list[Step]:
        """Every step in execution order: server, then database (by stage), then online."""
        return [step for step, _ in self.owned_steps()]

    def owned_steps(self) -> list[tuple[Step, str]]:
        """Every step in execution order, with the ref of the change it belongs to."""
        ordered = [(step, change.resource) for change in self.changes for step in change.steps]
        return sorted(ordered, key=lambda owned: (_PHASES[owned[0].phase], owned[0].stage))

    def refused(self, allow_data_loss: bool) -> list[Change]:
        """Changes the safety gate refuses without ``--allow-data-loss``."""
        return [] if allow_data_loss else [c for c in self.changes if c.risk in GATED_RISKS]

    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0}
        for change in self.changes:
            if change.action in counts:
                counts[change.action] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "summary": self.summary(),
            "changes": [c.to_json() for c in self.changes if c.action != "noop"],
            "notSupported": [{"resource": ref, "message": why} for ref, why in self.not_supported.items()],
        }
