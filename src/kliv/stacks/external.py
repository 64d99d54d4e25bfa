"""Resources that live outside the project database (buckets, secrets), planned beside it.

Called by the native engine (:mod:`kliv.stacks.postgres.engine`): each provider
observes its resources while the engine plans and returns one :class:`External`
per resource, whose :class:`~kliv.stacks.plans.Change` joins the project's plan
(so the data-loss gate, ``kliv plan`` and the audit events treat it like a
table). After the database transaction commits, the engine runs the pending
ones and records each in the inventory, with its audit event, as it succeeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import psycopg

from kliv.specs import ProjectSpecs
from kliv.stacks.errors import EngineError
from kliv.stacks.plans import Change, Step

ControlSession = Callable[[], "psycopg.Connection[Any]"]


def call(text: str) -> Step:
    """A plan step that is an API call, not SQL: run by its provider after the database phase."""
    return Step(text, phase="external", transactional=False)


@dataclasses.dataclass
class External:
    """One resource's change, how to make it, and what to record once it is made."""

    change: Change
    outputs: dict[str, str]
    row: dict[str, Any] | None  # the inventory row once applied; None: forget the resource
    run: Callable[[], dict[str, str]] | None = None  # makes the change; returns the outputs
    problem: EngineError | None = None  # why this resource cannot be planned (the others still are)

    @classmethod
    def unchanged(cls, ref: str, outputs: dict[str, str], row: dict[str, Any]) -> External:
        """A resource that matches its spec."""
        return cls(Change(ref, "noop", "safe", [], []), outputs, row)

    @classmethod
    def unplannable(cls, ref: str, problem: EngineError) -> External:
        """A resource left out of the plan, and why (reported on its object only)."""
        return cls(Change(ref, "noop", "safe", [], []), {}, None, problem=problem)

    @property
    def pending(self) -> bool:
        return self.run is not None and self.change.action != "noop"


class Provider(Protocol):
    """Plans the resources of one kind for a project (observing reality, changing nothing)."""

    kind: str

    def plan(self, group: ProjectSpecs, applied: dict[str, dict[str, Any]]) -> list[External]:
        """``applied``: the inventory records of this kind for the project (ref -> record)."""
        ...
