"""One reconcile of one project: custom resources in, a status for each of them out.

Called by the kopf handlers (:mod:`kliv.operator.handlers`) through the
debouncer, once per burst of changes to a project. The same core as the CLI:
spec validation and guardrails, then the engine's plan and apply (blocking, so
in a thread). Whatever happens, every object of the project gets conditions:
invalid specs and missing dependencies are reported on the objects they concern,
and the rest of the project is still reconciled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import defaultdict
from typing import Any

from kliv import policies
from kliv.operator import conditions
from kliv.operator.conditions import Condition
from kliv.operator.outcomes import classify
from kliv.operator.recording import StatusRecorder
from kliv.specs import Document, ProjectSpecs, Source, validate_documents
from kliv.specs.base import ANNOTATION_PREFIX
from kliv.specs.errors import DANGLING_REFERENCE
from kliv.stacks import Engine, Prepared, registry
from kliv.stacks.errors import ExternalFailedError
from kliv.stacks.statuses import ObjectState

ALLOW_DATA_LOSS = ANNOTATION_PREFIX + "allow-data-loss"
PAUSED = ANNOTATION_PREFIX + "paused"
MANAGEMENT_POLICY = ANNOTATION_PREFIX + "management-policy"
REQUESTED_BY = ANNOTATION_PREFIX + "requested-by"
ObjectKey = tuple[str, str]  # (kind, name)


@dataclasses.dataclass(frozen=True)
class ObjectStatus:
    """What one object's status should say, and whether its handler should come back."""

    ready: Condition
    synced: Condition
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    retry_in: float | None = None  # seconds: waiting for a dependency or a temporary failure


@dataclasses.dataclass
class ProjectResult:
    statuses: dict[ObjectKey, ObjectStatus]
    fallback: ObjectStatus

    def status_of(self, kind: str, name: str) -> ObjectStatus:
        return self.statuses.get((kind, name), self.fallback)


def _waiting(message: str, retry_in: float = 2.0) -> ObjectStatus:
    return ObjectStatus(
        conditions.ready(False, conditions.WAITING_FOR_DEPENDENCY, message),
        conditions.synced(False, conditions.WAITING_FOR_DEPENDENCY, message),
        retry_in=retry_in,
    )


def _key(body: dict[str, Any]) -> ObjectKey:
    return str(body.get("kind")), str(body.get("metadata", {}).get("name"))


class Reconciler:
    """Reconciles projects with an engine; remembers failures to back off."""

    def __init__(self, engine: Engine[Any, Any]) -> None:
        self.engine = engine
        self.attempts: dict[tuple[str, str], int] = defaultdict(int)
        self.drifted: dict[tuple[str, str], list[str]] = {}  # project -> refs drifted at the last reconcile
        self.recorder = StatusRecorder(engine)

    async def reconcile(self, namespace: str, project: str, bodies: list[dict[str, Any]]) -> ProjectResult:
        """Statuses for ``bodies`` (every object of the project, deleting ones included), also kept
        in the control database for readers outside the cluster (the admin UI, agents)."""
        result = await self._decide(namespace, project, bodies)
        live = [b for b in bodies if not b.get("metadata", {}).get("deletionTimestamp")]
        states = []
        for body in live:
            kind, name = _key(body)
            status = result.status_of(kind, name)
            found = [dataclasses.asdict(status.ready), dataclasses.asdict(status.synced)]
            states.append(ObjectState(kind, name, body.get("metadata", {}).get("generation"), found, status.outputs))
        self.recorder.record(namespace, project, states)  # in the background: see kliv.operator.recording
        return result

    async def _decide(self, namespace: str, project: str, bodies: list[dict[str, Any]]) -> ProjectResult:
        live = [b for b in bodies if not b.get("metadata", {}).get("deletionTimestamp")]
        documents = [Document(Source(f"{_key(b)[0]}/{namespace}/{_key(b)[1]}", 0), b) for b in live]
        validation = validate_documents(documents)
        validation.problems += policies.evaluate(validation.specs)
        statuses: dict[ObjectKey, ObjectStatus] = {}
        problems: dict[ObjectKey, list[str]] = defaultdict(list)
        dangling: dict[ObjectKey, list[str]] = defaultdict(list)
        for problem in validation.errors:
            key = (problem.kind, problem.name)
            text = f"{problem.path}: {problem.message}" + (f" ({problem.hint})" if problem.hint else "")
            (dangling if problem.code == DANGLING_REFERENCE else problems)[key].append(text)
        for key, texts in dangling.items():
            statuses[key] = _waiting("; ".join(texts))
        for key, texts in problems.items():
            message = "; ".join(texts)
            statuses[key] = ObjectStatus(
                conditions.ready(False, conditions.INVALID_SPEC, message),
                conditions.synced(False, conditions.INVALID_SPEC, message),
            )
        for body in live:
            kind, name = _key(body)
            if kind not in registry.SUPPORTED and (kind, name) not in statuses:
                registered = registry.BY_NAME.get(kind)
                why = registered.not_supported if registered is not None else None
                message = f"{kind} is not supported by this operator yet: {why or 'no provider is registered for it'}."
                statuses[(kind, name)] = ObjectStatus(
                    conditions.ready(False, conditions.NOT_SUPPORTED, message),
                    conditions.synced(False, conditions.NOT_SUPPORTED, message),
                )
        project_body = next((b for b in live if _key(b) == ("Project", project)), None)
        if project_body is None:
            return ProjectResult(statuses, _waiting(f"Project {namespace}/{project} does not exist (yet)."))
        # Reconcile what is valid: the invalid and the waiting are left out of this plan.
        if statuses:
            keep = [d for d in documents if _key(d.data) not in statuses]
            validation = validate_documents(keep)
        group = validation.specs.projects.get((namespace, project))
        if group is None or group.project is None:
            return ProjectResult(statuses, _waiting(f"Project {namespace}/{project} is not valid."))
        return await self._engine(group, project_body, bodies, statuses)

    async def _engine(
        self,
        group: ProjectSpecs,
        project_body: dict[str, Any],
        bodies: list[dict[str, Any]],
        statuses: dict[ObjectKey, ObjectStatus],
    ) -> ProjectResult:
        annotations = project_body.get("metadata", {}).get("annotations") or {}
        key = (group.namespace, group.name)
        if annotations.get(PAUSED) == "true":
            paused = "Reconciliation is paused by the annotation cloud.kliv.dev/paused."
            return ProjectResult(
                statuses,
                ObjectStatus(
                    conditions.ready(False, conditions.PAUSED, paused),
                    conditions.synced(False, conditions.PAUSED, paused),
                ),
            )
        actor = annotations.get(REQUESTED_BY) or "kliv-operator"
        observe_only = annotations.get(MANAGEMENT_POLICY) == "observe"
        prepared: Prepared | None = None
        try:
            planned: Prepared = await asyncio.to_thread(self.engine.plan, group)
            prepared = planned
            plan = planned.plan
            drifted = await asyncio.to_thread(self.engine.report_drift, prepared, actor)
            self.drifted[key] = drifted
            allowed = _allowed(plan.refused(allow_data_loss=False), bodies)
            refused = [c for c in plan.refused(allow_data_loss=False) if c.resource not in allowed]
            if refused and not observe_only:
                await asyncio.to_thread(self._refuse, prepared, actor)
                return self._refused(group, refused, statuses)
            if observe_only:
                return self._observed(group, prepared, statuses)
            # A bucket or secret that failed leaves the database and the others applied: the
            # failures (prepared.failures) are reported on their own objects below.
            with contextlib.suppress(ExternalFailedError):
                await asyncio.to_thread(self.engine.apply, prepared, bool(allowed), actor)
        except Exception as exc:
            self._problems(group, prepared, statuses)
            outcome = classify(exc, self.attempts[key])
            self.attempts[key] += 1
            fallback = ObjectStatus(
                outcome.ready, outcome.synced, retry_in=outcome.delay if outcome.temporary else None
            )
            return ProjectResult(statuses, fallback)
        if planned.failures:
            self.attempts[key] += 1
        else:
            self.attempts.pop(key, None)
        found = planned.outputs
        self._problems(group, planned, statuses)
        for spec in group:
            resource = spec.resource
            statuses.setdefault(
                (resource.KIND, resource.name),
                ObjectStatus(
                    conditions.ready(True, conditions.AVAILABLE, f"{resource.KIND} {resource.name} is ready."),
                    conditions.synced(True, conditions.RECONCILE_SUCCESS, "Reality matches the spec."),
                    outputs=found.get(resource.ref, {}),
                ),
            )
        return ProjectResult(statuses, _waiting("Not part of the last reconcile."))

    def _problems(
        self, group: ProjectSpecs, prepared: Prepared | None, statuses: dict[ObjectKey, ObjectStatus]
    ) -> None:
        """Objects the engine could not plan (a bucket someone else owns, a secret without a value)."""
        problems: dict[str, Exception] = {}
        if prepared is not None:
            problems.update(prepared.problems)
            problems.update(prepared.failures)
        attempt = self.attempts.get((group.namespace, group.name), 1) - 1
        for spec in group:
            problem = problems.get(spec.resource.ref)
            if problem is None:
                continue
            outcome = classify(problem, attempt)
            retry = outcome.delay if outcome.temporary else None
            statuses[(spec.resource.KIND, spec.resource.name)] = ObjectStatus(
                outcome.ready, outcome.synced, retry_in=retry
            )

    def _refuse(self, prepared: Any, actor: str) -> None:
        from kliv.stacks import RefusedError

        with contextlib.suppress(RefusedError):  # it queues the `refused` audit events, applies nothing
            self.engine.apply(prepared, False, actor)

    @staticmethod
    def _refused(group: ProjectSpecs, refused: list[Any], statuses: dict[ObjectKey, ObjectStatus]) -> ProjectResult:
        names = {c.resource: c for c in refused}
        for spec in group:
            resource = spec.resource
            change = names.get(resource.ref)
            if change is not None:
                message = (
                    f"Refused: {'; '.join(change.summary)} ({change.risk}). To allow it, annotate this object "
                    f'with cloud.kliv.dev/allow-data-loss: "{resource.metadata.generation}".'
                )
                statuses[(resource.KIND, resource.name)] = ObjectStatus(
                    conditions.ready(False, conditions.DATA_LOSS_REFUSED, message),
                    conditions.synced(False, conditions.DATA_LOSS_REFUSED, message),
                )
        blocked = f"Waiting: the project has refused changes on {', '.join(sorted(names))}."
        return ProjectResult(
            statuses,
            ObjectStatus(
                conditions.ready(False, conditions.WAITING_FOR_DEPENDENCY, blocked),
                conditions.synced(False, conditions.DATA_LOSS_REFUSED, blocked),
            ),
        )

    @staticmethod
    def _observed(group: ProjectSpecs, prepared: Any, statuses: dict[ObjectKey, ObjectStatus]) -> ProjectResult:
        drift = {c.resource: c for c in prepared.plan.changes if c.action != "noop"}
        found = prepared.outputs
        for spec in group:
            resource = spec.resource
            change = drift.get(resource.ref)
            synced = (
                conditions.synced(False, conditions.DRIFTED, "Observe only; would change: " + "; ".join(change.summary))
                if change
                else conditions.synced(True, conditions.OBSERVE_ONLY, "Observe only; reality matches the spec.")
            )
            ready = conditions.ready(
                change is None or change.action != "create",
                conditions.OBSERVE_ONLY,
                "Observed, not managed (management-policy: observe).",
            )
            statuses.setdefault(
                (resource.KIND, resource.name), ObjectStatus(ready, synced, found.get(resource.ref, {}))
            )
        return ProjectResult(statuses, _waiting("Not part of the last reconcile."))


def _allowed(refused: list[Any], bodies: list[dict[str, Any]]) -> set[str]:
    """Refs of refused changes that are consented to.

    Consent is the annotation allow-data-loss naming the object's current generation,
    or deleting an object whose deletionPolicy is Delete (the policy is the consent).
    """
    allowed = set()
    for body in bodies:
        metadata = body.get("metadata", {})
        kind, name = _key(body)
        ref = f"{kind}/{metadata.get('namespace', 'default')}/{name}"
        if (metadata.get("annotations") or {}).get(ALLOW_DATA_LOSS) == str(metadata.get("generation")):
            allowed.add(ref)
        if metadata.get("deletionTimestamp") and (body.get("spec") or {}).get("deletionPolicy") == "Delete":
            allowed.add(ref)
    refused_refs = {c.resource for c in refused}
    # Allowed only when every refused change is: one plan, one transaction.
    return refused_refs if refused_refs and refused_refs <= allowed else set()
