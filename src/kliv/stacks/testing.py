"""Fakes and checks for code that uses engines and providers: no Postgres, no S3.

For kliv's own tests and for anyone writing a provider or driving an engine (as
``kopf.testing`` is for kopf's users). :class:`FakeEngine` is an
:class:`~kliv.stacks.engines.Engine` whose plans are scripted per resource and
which records what it was asked, so the operator's decisions (refused,
observe-only, partial failure, waiting) are tested in milliseconds.
:class:`FakeProvider` keeps its reality in a dict and follows the contract of
:mod:`kliv.stacks.contract`; :func:`check_provider` asserts that contract of any
provider: observe changes nothing, apply converges, applying twice is harmless,
deleting what is absent succeeds.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pydantic import BaseModel

from kliv.specs import ProjectSpecs, Resource
from kliv.stacks.contract import Observation, Record
from kliv.stacks.engines import Prepared
from kliv.stacks.errors import EngineError, ExternalFailedError, RefusedError
from kliv.stacks.hashing import spec_hash
from kliv.stacks.plans import Change, Plan, Risk
from kliv.stacks.statuses import ObjectState


def _hash(resource: Resource) -> str:
    spec: BaseModel = getattr(resource, "spec", resource)  # every kind has a spec
    return spec_hash(spec)


def noop(ref: str) -> Change:
    return Change(ref, "noop", "safe", [], [])


@dataclasses.dataclass
class FakePrepared(Prepared):
    hashes: dict[str, str] = dataclasses.field(default_factory=dict)  # ref -> spec hash planned


@dataclasses.dataclass
class FakeDeletion:
    namespace: str
    project: str
    database: str
    drop: bool
    plan: Plan


class FakeEngine:
    """Plans what it is told, applies by forgetting the change, and records every call.

    Script it per resource ref (``Kind/namespace/name``): ``changes`` (what the next plans
    show until applied), ``problems`` (the resource cannot be planned), ``failures``
    (applying it fails after the rest applied), ``outputs``; ``plan_error`` /
    ``apply_error`` make the whole call fail. ``events`` lists ``(outcome, ref, actor)``
    as the native engine would queue them.
    """

    def __init__(self) -> None:
        self.changes: dict[str, Change] = {}
        self.problems: dict[str, EngineError] = {}
        self.failures: dict[str, ExternalFailedError] = {}
        self.outputs: dict[str, dict[str, str]] = {}
        self.plan_error: Exception | None = None
        self.apply_error: Exception | None = None
        self.hashes: dict[str, str] = {}  # ref -> spec hash applied last
        self.plans: list[str] = []  # projects planned
        self.applies: list[tuple[str, bool, str]] = []  # (project, allow_data_loss, actor)
        self.events: list[tuple[str, str, str]] = []
        self.deleted: list[str] = []
        self.statuses: dict[str, list[ObjectState]] = {}  # "namespace/project" -> the last recorded

    def change(self, ref: str, risk: Risk = "safe", action: Any = "update", summary: str = "change it") -> Change:
        """Script a change of ``ref`` for the next plans (until applied)."""
        self.changes[ref] = Change(ref, action, risk, [summary], [])
        return self.changes[ref]

    def plan(self, group: ProjectSpecs, split: bool = False) -> FakePrepared:
        self.plans.append(f"{group.namespace}/{group.name}")
        if self.plan_error is not None:
            raise self.plan_error
        plan = Plan(f"Project/{group.namespace}/{group.name}")
        hashes = {spec.resource.ref: _hash(spec.resource) for spec in group}
        externals = [Observation.unplannable(ref, problem) for ref, problem in self.problems.items() if ref in hashes]
        plan.changes = [self.changes.get(ref, noop(ref)) for ref in hashes if ref not in self.problems]
        changed = [ref for ref, digest in hashes.items() if self.hashes.get(ref) != digest]
        outputs = {ref: self.outputs.get(ref, {"name": ref.rsplit("/", 1)[1]}) for ref in hashes}
        return FakePrepared(group.namespace, group.name, plan, changed, outputs, [], externals, hashes=hashes)

    def apply(self, prepared: FakePrepared, allow_data_loss: bool = False, actor: str = "kliv") -> Plan:
        plan = prepared.plan
        refused = plan.refused(allow_data_loss)
        if refused:
            self.events += [("refused", c.resource, actor) for c in refused]
            raise RefusedError(refused)
        self.applies.append((prepared.project, allow_data_loss, actor))
        if self.apply_error is not None:
            raise self.apply_error
        for change in plan.changes:
            ref = change.resource
            if ref in self.failures:
                prepared.failures[ref] = self.failures[ref]
                self.events.append(("failed", ref, actor))
                continue
            if change.action != "noop" or ref in prepared.changed_specs:
                self.events.append(("applied", ref, actor))
            self.changes.pop(ref, None)
            self.hashes[ref] = prepared.hashes[ref]
        if prepared.failures:
            first = next(iter(prepared.failures.values()))
            raise ExternalFailedError(first.resource, first.reason, first.hint, first.temporary)
        return plan

    def report_drift(self, prepared: FakePrepared, actor: str) -> list[str]:
        if prepared.changed_specs:
            return []
        drifted = [c.resource for c in prepared.plan.changes if c.action != "noop"]
        self.events += [("drifted", ref, actor) for ref in drifted]
        return drifted

    def plan_deletion(self, namespace: str, project: str, database: str, drop: bool) -> FakeDeletion:
        ref = f"Project/{namespace}/{project}"
        risk: Risk = "data-loss" if drop else "safe"
        change = Change(ref, "delete", risk, ["drop" if drop else "forget"], [])
        return FakeDeletion(namespace, project, database, drop, Plan(ref, [change]))

    def apply_deletion(self, deletion: FakeDeletion, allow_data_loss: bool, actor: str) -> Plan:
        refused = deletion.plan.refused(allow_data_loss)
        if refused:
            self.events += [("refused", c.resource, actor) for c in refused]
            raise RefusedError(refused)
        self.deleted.append(f"{deletion.namespace}/{deletion.project}")
        self.events += [("applied", c.resource, actor) for c in deletion.plan.changes]
        return deletion.plan

    def record_statuses(self, namespace: str, project: str, states: list[ObjectState], by: str) -> int:
        self.statuses[f"{namespace}/{project}"] = states
        return len(states)

    def close(self) -> None:
        pass


class FakeProvider:
    """A provider of ``kind`` whose reality is :attr:`reality` (ref -> spec hash)."""

    in_database = False

    def __init__(self, kind: str, lossy: bool = True) -> None:
        """``lossy``: whether deleting one loses data (then the gate refuses it)."""
        self.kind = kind
        self.lossy = lossy
        self.reality: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []  # (action, ref) of every apply

    def observe(self, group: ProjectSpecs, applied: dict[str, Record]) -> list[Observation]:
        found = []
        present = set()
        for spec in group:
            resource = spec.resource
            if self.kind != resource.KIND:
                continue
            ref, digest = resource.ref, _hash(resource)
            present.add(ref)
            record = Record(self.kind, resource.name, resource.name, digest, False)
            outputs = {"name": resource.name, "hash": digest}
            current = self.reality.get(ref)
            if current == digest:
                found.append(Observation.unchanged(ref, outputs, record))
                continue
            action: Any = "create" if current is None else "update"
            detail = {"hash": digest, "outputs": outputs}
            change = Change(ref, action, "safe", [f"{action} {resource.name}"], [], detail)
            found.append(Observation(change, outputs, record, exists=current is not None))
        for ref in applied:
            if ref not in present:
                risk: Risk = "data-loss" if self.lossy and ref in self.reality else "safe"
                change = Change(ref, "delete", risk, [f"delete {ref}"], [], {})
                found.append(Observation(change, {}, None, exists=ref in self.reality))
        return found

    def apply(self, ref: str, change: Change) -> dict[str, str]:
        self.calls.append((change.action, ref))
        if change.action == "delete":
            self.reality.pop(ref, None)
            return {}
        self.reality[ref] = str(change.detail["hash"])
        return dict(change.detail["outputs"])


def check_provider(provider: Any, group: ProjectSpecs, applied: dict[str, Record] | None = None) -> None:
    """Assert the contract of :mod:`kliv.stacks.contract` on ``provider`` for ``group``.

    Observing twice gives the same plan (observe changes nothing); every change is JSON
    data; applying every pending change converges (the next observation is all noop)
    and applying each once more is harmless; removing the resources plans deletes, which
    applied twice succeed (deleting what is absent). Raises AssertionError naming the rule.
    """
    applied = dict(applied or {})
    first = provider.observe(group, applied)
    second = provider.observe(group, applied)
    assert [o.change.to_json() for o in first] == [o.change.to_json() for o in second], "observe changed reality"
    for observation in first:
        json.dumps(observation.change.detail)  # a change is data: storable, never a closure
        assert observation.problem is None, f"{observation.change.resource}: {observation.problem}"
    pending = [o for o in first if o.pending]
    for observation in pending:
        provider.apply(observation.change.resource, observation.change)
    for observation in pending:
        provider.apply(observation.change.resource, observation.change)  # idempotent
    records = {o.change.resource: o.record for o in first if o.record is not None}
    converged = provider.observe(group, records)
    moving = [o.change.resource for o in converged if not o.up_to_date]
    assert not moving, f"not converged after apply: {moving}"
    empty = ProjectSpecs(group.namespace, group.name, group.project)
    removals = [o for o in provider.observe(empty, records) if o.pending]
    assert {o.change.resource for o in removals} == set(records), "removing the specs must plan every delete"
    assert all(o.change.action == "delete" for o in removals), "a removal is a delete"
    for observation in removals:
        provider.apply(observation.change.resource, observation.change)
        provider.apply(observation.change.resource, observation.change)  # deleting what is absent succeeds
