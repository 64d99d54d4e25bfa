"""The one provider contract: observe returns data, the change is data, ``apply(ref, change)``.

Implemented by every kind an engine does not plan itself (email templates, buckets,
secrets; functions next), modelled on Crossplane's external client. ``observe``
reads reality and changes nothing: per resource, an :class:`Observation` (whether it
exists, the planned :class:`~kliv.stacks.plans.Change` with its risk, the outputs it
shows, the inventory :class:`Record` it leaves once applied). The change carries, in
``Change.detail``, the plain data its provider needs to make it, so a plan can be
stored, shown later and applied by id, and a Pulumi dynamic provider (stateless,
imported by module path) can make the same change. ``apply`` is idempotent, and
deleting what is absent succeeds.

Called by the native engine (:mod:`kliv.stacks.postgres.engine`), which puts every
observed change into the project's plan, so the data-loss gate, ``kliv plan`` and the
audit events treat a bucket like a table. Providers are built from the kind registry
(:mod:`kliv.stacks.registry`) with their dependencies passed to their constructors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import psycopg

from kliv.specs import ProjectSpecs
from kliv.stacks.errors import EngineError
from kliv.stacks.plans import Change, Step

Outputs = dict[str, dict[str, str]]  # resource ref (Kind/namespace/name) -> outputs
ControlSession = Callable[[], "psycopg.Connection[Any]"]
DatabaseSession = Callable[[str], "psycopg.Connection[Any] | None"]  # a project database's; None: absent


@dataclasses.dataclass(frozen=True)
class Record:
    """What the inventory keeps of one applied resource: enough to plan its removal."""

    kind: str
    name: str
    physical: str  # the name it has in reality: a table, a bucket, `namespace/project/secret`
    spec_hash: str
    retain: bool  # deletionPolicy Retain: removing the spec forgets it, never drops it

    def ref(self, namespace: str) -> str:
        """``Kind/namespace/name``."""
        return f"{self.kind}/{namespace}/{self.name}"

    def row(self) -> tuple[str, str, bool]:
        """The stored columns that say whether it changed."""
        return (self.spec_hash, self.physical, self.retain)

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: a pending record holds one per resource (3,001 at 1,000 tables).
        return {"kind": self.kind, "name": self.name, "physical": self.physical, "spec_hash": self.spec_hash,
                "retain": self.retain}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        return cls(str(data["kind"]), str(data["name"]), str(data["physical"]), str(data["spec_hash"]),
                   bool(data.get("retain", True)))  # fmt: skip


def call(text: str) -> Step:
    """A plan step that is an API call, not SQL: made by its provider after the database phases."""
    return Step(text, phase="external", transactional=False)


@dataclasses.dataclass
class Observation:
    """One resource as observed: its planned change (noop: up to date), outputs and record."""

    change: Change
    outputs: dict[str, str]
    record: Record | None  # the inventory record once applied; None: the resource is forgotten
    exists: bool = True
    problem: EngineError | None = None  # why it cannot be planned (the rest of the project still is)

    @classmethod
    def unchanged(cls, ref: str, outputs: dict[str, str], record: Record) -> Observation:
        """A resource that matches its spec."""
        return cls(Change(ref, "noop", "safe", [], []), outputs, record)

    @classmethod
    def unplannable(cls, ref: str, problem: EngineError) -> Observation:
        """A resource left out of the plan, and why (reported on its object only)."""
        return cls(Change(ref, "noop", "safe", [], []), {}, None, exists=False, problem=problem)

    @property
    def up_to_date(self) -> bool:
        return self.change.action == "noop"

    @property
    def pending(self) -> bool:
        """Whether applying the plan must call the provider for it."""
        return self.problem is None and not self.up_to_date


class Provider(Protocol):
    """Observes and changes the resources of one kind for a project."""

    kind: str
    # True: the change's steps are SQL for the project database, run by the engine inside the
    # project's one transaction and recorded with it. False: API calls, made by ``apply`` after
    # the database phases, each recorded (with its audit event) as it succeeds.
    in_database: bool

    def observe(self, group: ProjectSpecs, applied: dict[str, Record]) -> list[Observation]:
        """Every resource of this kind in ``group`` and in ``applied`` (this kind's inventory
        records for the project, by ref): those in ``applied`` alone are to be removed."""
        ...

    def apply(self, ref: str, change: Change) -> dict[str, str]:
        """Make ``change`` (as observed, from its data alone); returns the resource's outputs.

        Called inside the engine's control-database transaction, which records the resource
        and its audit event: a provider whose reality is in that database (the postgres secret
        store) commits with them. A change whose reality moved since it was observed in a way
        that matters (a secret's value) is refused, not made.
        """
        ...
