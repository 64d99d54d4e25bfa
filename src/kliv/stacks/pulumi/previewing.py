"""Pulumi's preview, as engine events, translated into kliv's :class:`~kliv.stacks.plans.Plan` (pure).

Called by the Pulumi engine (:mod:`.engine`) with the events of ``stack.preview()`` in the
engine's JSON format (as ``--event-log`` writes them), and by the tests on streams written
by hand or implied by a program (:func:`.testing.implied_events`). The result passes the
same data-loss gate and is shown and audited like the native engine's plan.

What decides a change's risk: Pulumi's operation on the resources of one kliv resource (a
replace or a delete of a stateful resource not retained loses data: ``data-loss``; a
delete of a retained one forgets it: ``safe``), and the native plan of the same specs for
what only the native machinery can tell, since kliv's dynamic providers make exactly the
native change (dropping a column is an ``update`` to Pulumi and ``data-loss`` to kliv).
Steps and summaries are the native plan's where it has the change, else one line per
Pulumi step. Nothing is dropped: an operation kliv does not know (the Python SDK drops
those events), or a change the summary counts but no event showed, becomes a
``destructive`` change the gate refuses (fail closed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from kliv.stacks.contract import call
from kliv.stacks.plans import RISK_ORDER, Action, Change, Plan, Risk
from kliv.stacks.pulumi.declaring import Declared, Program, ref_of

_CREATES = frozenset({"create", "import"})
_REPLACES = frozenset({"replace", "create-replacement", "delete-replaced", "import-replacement"})
_UPDATES = frozenset({"update"})
_DELETES = frozenset({"delete", "discard"})
_NOTHING = frozenset({"same", "read", "refresh", "read-replacement", "discard-replaced", "remove-pending-replace"})
KNOWN_OPS = _CREATES | _REPLACES | _UPDATES | _DELETES | _NOTHING
UNATTRIBUTED = "unattributed"  # Change.detail key of the change no Pulumi step explains


@dataclasses.dataclass(frozen=True)
class Step:
    """One Pulumi step on one resource, from a ``resourcePreEvent``."""

    op: str
    urn: str
    type: str
    name: str
    protect: bool
    retain_on_delete: bool
    keys: tuple[str, ...] = ()


def steps_of(events: Iterable[Mapping[str, Any]]) -> tuple[list[Step], dict[str, int]]:
    """The steps of a preview's events, and the summary's counts by op (empty without one)."""
    steps: list[Step] = []
    summary: dict[str, int] = {}
    for event in events:
        if "summaryEvent" in event:
            summary = {str(k): int(v) for k, v in (event["summaryEvent"].get("resourceChanges") or {}).items()}
        pre = event.get("resourcePreEvent")
        if pre is None:
            continue
        metadata = pre.get("metadata") or {}
        urn = str(metadata.get("urn", ""))
        state = metadata.get("old") or metadata.get("new") or {}
        steps.append(Step(
            op=str(metadata.get("op", "")), urn=urn, type=str(metadata.get("type", "")), name=urn.rsplit("::", 1)[-1],
            protect=bool(state.get("protect")), retain_on_delete=bool(state.get("retainOnDelete")),
            keys=tuple(metadata.get("keys") or ()),
        ))  # fmt: skip
    return steps, summary


def translate(events: Iterable[Mapping[str, Any]], program: Program, native: Plan, namespace: str) -> Plan:
    """The plan a preview's ``events`` describe for ``program`` (``native``: the native plan of the same specs)."""
    steps, summary = steps_of(events)
    declared = program.by_name()
    by_ref: dict[str, list[Step]] = {}
    unknown: list[Step] = []
    for step in steps:
        if step.op not in KNOWN_OPS:
            unknown.append(step)
        ref = (declared[step.name].ref if step.name in declared else "") or ref_of(step.name, namespace)
        if ref:
            by_ref.setdefault(ref, []).append(step)
    natives = {c.resource: c for c in native.changes}
    changes = []
    for ref, found in by_ref.items():
        change = _change(ref, found, declared, natives.get(ref))
        if change is not None:
            changes.append(change)
    seen: dict[str, int] = {}
    for step in steps:
        seen[step.op] = seen.get(step.op, 0) + 1
    unseen = {op: n - seen.get(op, 0) for op, n in summary.items() if op not in _NOTHING and n > seen.get(op, 0)}
    if unseen or unknown:
        reasons = [f"Pulumi step `{s.op}` on {s.name} ({s.type}) is not one kliv knows" for s in unknown]
        reasons += [f"the preview's summary counts {n} `{op}` step(s) no event showed" for op, n in unseen.items()]
        # Refused even with --allow-data-loss (the engine's apply checks UNATTRIBUTED): kliv cannot say what it is.
        changes.append(Change(native.project, "update", "destructive", reasons,
                              [call(f"pulumi: {r}") for r in reasons], {UNATTRIBUTED: True}))  # fmt: skip
    order = {ref: i for i, ref in enumerate(program.refs())}
    changes.sort(key=lambda c: (order.get(c.resource, len(order)), c.resource))
    return Plan(native.project, changes, [], dict(native.not_supported))


def _change(ref: str, steps: list[Step], declared: Mapping[str, Declared], native: Change | None) -> Change | None:
    acting = [s for s in steps if s.op not in _NOTHING]
    if not acting:
        return None
    ops = {s.op for s in acting}
    action: Action = "update"
    if all(s.op in _CREATES for s in steps):
        action = "create"
    elif all(s.op in _DELETES for s in steps):
        action = "delete"
    risk: Risk = "safe"
    for step in acting:
        known = declared.get(step.name)
        stateful = known.stateful if known is not None else step.type in _STATEFUL_TYPES
        retained = step.retain_on_delete or (known is not None and known.retain_on_delete)
        if (step.op in _REPLACES and stateful) or (step.op in _DELETES and stateful and not retained):
            risk = _higher(risk, "data-loss")
        elif step.op not in KNOWN_OPS:
            risk = _higher(risk, "destructive")
    summary = [f"pulumi {s.op} {s.type} {s.name}" for s in acting if s.op not in ("create-replacement",
                                                                                   "delete-replaced")]  # fmt: skip
    made = [call(line) for line in summary]
    if native is not None and native.action == "delete" and not native.steps and ops <= _DELETES:
        # The native engine forgets it (Retain, or another spec declares it now): so does the
        # engine, in the stack's state only (`pulumi state delete`, forgotten() below).
        return Change(ref, "delete", native.risk, [*native.summary, *(f"pulumi: forget {s.name} in the "
                      "stack's state (it stays)" for s in acting)], [], native.detail)  # fmt: skip
    if native is not None and native.action != "noop":
        risk = _higher(risk, native.risk)
        return Change(ref, action if ops - _UPDATES else native.action, risk, native.summary, native.steps,
                      native.detail)  # fmt: skip
    return Change(ref, action, risk, summary, made)


# Types whose delete or replace loses data, for resources no longer in the program.
_STATEFUL_TYPES = frozenset({
    "postgresql:index/database:Database", "pulumi-python:dynamic/kliv:Table", "pulumi-python:dynamic/kliv:Bucket",
    "pulumi-python:dynamic/kliv:ProjectSecret", "aws:s3/bucketV2:BucketV2", "aws:secretsmanager/secret:Secret",
})  # fmt: skip


def _higher(a: Risk, b: Risk) -> Risk:
    return a if RISK_ORDER[a] >= RISK_ORDER[b] else b


def protected(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """The URNs whose ``protect`` an up of this preview must lift first (``pulumi state unprotect``):
    protected resources it deletes or replaces. Called once the gate has allowed the plan."""
    steps, _ = steps_of(events)
    return list(dict.fromkeys(s.urn for s in steps if s.protect and (s.op in _DELETES or s.op in _REPLACES)))


def forgotten(events: Iterable[Mapping[str, Any]], native: Plan, namespace: str) -> list[str]:
    """The URNs an up must not delete but forget (``pulumi state delete``): those of refs the
    native plan forgets (a delete without steps: a table another spec declares now) that Pulumi
    would delete for real. A retained one needs nothing: Pulumi's delete of it only forgets it."""
    forgets = {c.resource for c in native.changes if c.action == "delete" and not c.steps}
    steps, _ = steps_of(events)
    return [s.urn for s in steps if s.op in _DELETES and not s.retain_on_delete
            and ref_of(s.name, namespace) in forgets]  # fmt: skip


def acting_steps(events: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """What a preview would do, as (URN, op) pairs: what an up must still do for its plan to stand."""
    steps, _ = steps_of(events)
    return sorted((s.urn, s.op) for s in steps if s.op not in _NOTHING)


def held_deletes(state: Iterable[Mapping[str, Any]], program: Program) -> tuple[list[str], list[dict[str, Any]]]:
    """Protected resources of the stack's ``state`` that ``program`` no longer declares.

    Pulumi refuses to preview the delete of a protected resource, so the engine previews with
    them excluded and adds their delete steps itself (as the engine's JSON events, from the
    state's flags): their URNs, and those events.
    """
    names = {d.name for d in program.resources}
    urns: list[str] = []
    events: list[dict[str, Any]] = []
    for resource in state:
        urn = str(resource.get("urn", ""))
        kind = str(resource.get("type", ""))
        if kind == "pulumi:pulumi:Stack" or not resource.get("protect") or urn.rsplit("::", 1)[-1] in names:
            continue
        urns.append(urn)
        old = {"protect": True, "retainOnDelete": bool(resource.get("retainOnDelete"))}
        events.append({"resourcePreEvent": {"metadata": {"op": "delete", "urn": urn, "type": kind, "old": old}}})
    return urns, events
