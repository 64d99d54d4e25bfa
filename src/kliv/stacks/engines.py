"""What callers use of an engine: the :class:`Engine` protocol and the plan it prepares.

Used by the CLI and the operator's reconcile, which never need to know which engine
runs: the native one (:class:`~kliv.stacks.postgres.engine.PostgresEngine`), the fake
of :mod:`kliv.stacks.testing`, and the Pulumi engine next. Every method blocks: the
operator calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, TypeVar

import psycopg

from kliv.specs import ProjectSpecs
from kliv.stacks.contract import Observation, Outputs
from kliv.stacks.errors import EngineError, ExternalFailedError
from kliv.stacks.plans import Plan
from kliv.stacks.statuses import ObjectState


@dataclasses.dataclass
class Prepared:
    """A project's plan and what applying it needs, as any engine prepares it."""

    namespace: str
    project: str
    plan: Plan
    changed_specs: list[str]  # refs whose spec hash differs from the last apply
    # What the engine plans itself shows (a table's qualified name), by ref.
    engine_outputs: Outputs
    # What the providers observed: inside the project transaction (templates), after it (buckets, secrets).
    in_database: list[Observation] = dataclasses.field(default_factory=list)
    externals: list[Observation] = dataclasses.field(default_factory=list)
    failures: dict[str, ExternalFailedError] = dataclasses.field(default_factory=dict)  # set by apply
    engine: ClassVar[str] = "native"  # which engine made it (a stored plan is applied by the same)

    @property
    def spec_hashes_changed(self) -> bool:
        return bool(self.changed_specs)

    @property
    def problems(self) -> dict[str, EngineError]:
        """Resources that could not be planned (left out of the plan), by ref."""
        observed = self.in_database + self.externals
        return {o.change.resource: o.problem for o in observed if o.problem is not None}

    @property
    def outputs(self) -> Outputs:
        """What each resource's status shows (after ``apply``: as applied)."""
        found = {ref: dict(values) for ref, values in self.engine_outputs.items()}
        for observation in self.in_database + self.externals:
            if observation.problem is None and observation.outputs:
                found[observation.change.resource] = observation.outputs
        return found


PreparedT = TypeVar("PreparedT", bound=Prepared)


class Deletion(Protocol):
    """What deleting one Project will do (an engine's own type), with the plan that says so."""

    namespace: str
    project: str
    plan: Plan


DeletionT = TypeVar("DeletionT", bound=Deletion)


class Engine(Protocol[PreparedT, DeletionT]):
    """Plans and applies projects; what the CLI and the operator call."""

    def plan(self, group: ProjectSpecs, split: bool = False) -> PreparedT:
        """Observe reality and plan ``group`` (changing nothing). ``split``: consent to several
        transactions when one would not fit the server (else such a plan is refused)."""
        ...

    def apply(self, prepared: PreparedT, allow_data_loss: bool = False, actor: str = "kliv") -> Plan:
        """Apply a prepared plan and queue its audit events. A plan the gate refuses queues
        `refused` events and raises RefusedError, changing nothing; a resource that failed
        after the database phase is in ``prepared.failures`` (and raised as ExternalFailedError)."""
        ...

    def report_drift(self, prepared: PreparedT, actor: str) -> list[str]:
        """Queue a `drifted` event per resource whose reality moved while its spec did not; their refs."""
        ...

    def plan_deletion(self, namespace: str, project: str, database: str, drop: bool) -> DeletionT:
        """What deleting the Project would do: drop (``drop``, only what is the Project's) or forget."""
        ...

    def apply_deletion(self, deletion: DeletionT, allow_data_loss: bool, actor: str) -> Plan:
        """Carry out a deletion plan (gated like any plan)."""
        ...

    def record_statuses(self, namespace: str, project: str, states: list[ObjectState], by: str) -> int:
        """Keep each object's status where every reader finds it (the control database)."""
        ...

    def close(self) -> None:
        """Release what the engine keeps (connections)."""
        ...


class Planner(Engine[Any, Any], Protocol):
    """An engine as the CLI uses it: the protocol, its server and the control database.

    A prepared plan goes back to the engine that made it (each engine checks its own type)."""

    admin_url: str

    def control_session(self) -> psycopg.Connection[Any]:
        """This thread's connection to the control database."""
        ...

    def admin_session(self) -> psycopg.Connection[Any]:
        """This thread's admin connection to the server."""
        ...
