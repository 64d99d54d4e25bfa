"""The contracts every engine and provider implements, modelled on Crossplane's external client.

- An :class:`ExternalClient` manages one unit of reality: ``observe`` returns a
  value (exists, up to date, the changes it would make, outputs) and never
  changes anything; ``create``, ``update`` and ``delete`` are idempotent, and
  deleting what is absent succeeds. Its methods are coroutines: blocking work
  (psycopg, boto3, Pulumi) runs in ``asyncio.to_thread`` so that the operator's
  event loop never stalls.
- An :class:`Engine` plans a whole project (``plan``) and applies that plan
  (``apply``): the native engine does it directly, a Pulumi engine will do it
  through a preview and ``up``, returning the same :class:`~kliv.stacks.Plan`.

Called by the operator (clients, per reconcile) and the CLI (engines).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, TypeVar

from kliv.specs import ProjectSpecs
from kliv.stacks.plans import Change, Plan

Desired = TypeVar("Desired", contravariant=True)
PreparedT = TypeVar("PreparedT")

Outputs = dict[str, dict[str, str]]  # resource ref (Kind/namespace/name) -> outputs


@dataclasses.dataclass(frozen=True)
class Observation:
    """What ``observe`` found: never a secret, always structured."""

    exists: bool
    up_to_date: bool
    changes: list[Change]
    outputs: Outputs


class ExternalClient(Protocol[Desired]):
    """Observe and converge one unit of reality."""

    async def observe(self, desired: Desired) -> Observation: ...

    async def create(self, desired: Desired) -> Outputs: ...

    async def update(self, desired: Desired) -> Outputs: ...

    async def delete(self, desired: Desired) -> None: ...


class Engine(Protocol[PreparedT]):
    """Plan and apply a whole project."""

    def plan(self, group: ProjectSpecs) -> PreparedT: ...

    def apply(self, prepared: PreparedT, allow_data_loss: bool = False) -> Plan: ...
