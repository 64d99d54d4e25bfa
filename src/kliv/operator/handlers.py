"""The kopf handlers: thin adapters from custom-resource events to per-project reconciles.

Built by :func:`make_registry` for ``kliv operator`` and for the tests. Every
event of any of the seven kinds updates an in-memory store of the project's
bodies and asks the project's debouncer for a reconcile; the create, update
and resume handlers await that reconcile's result and write their object's
status (conditions, observedGeneration, outputs) and a Kubernetes Event. A
burst of 500 objects of one project thus becomes one or two plans.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import time
from collections import defaultdict
from typing import Any

import kopf

from kliv.operator import conditions
from kliv.operator.admission import admission_problems, rejection
from kliv.operator.cluster_secrets import ClusterSecrets
from kliv.operator.debouncing import Debouncer
from kliv.operator.metrics import Metrics
from kliv.operator.reconciling import MANAGEMENT_POLICY, REQUESTED_BY, ProjectResult, Reconciler
from kliv.operator.relay import Relay
from kliv.specs import GROUP, KINDS, VERSION
from kliv.stacks import Engine

ProjectKey = tuple[str, str]  # (namespace, project)
DRIFT_INTERVAL = 300.0
FINALIZER = f"{GROUP}/finalizer"


@dataclasses.dataclass
class OperatorState:
    """What the handlers share: bodies per project, the reconciler and its debouncer."""

    reconciler: Reconciler
    bodies: dict[ProjectKey, dict[tuple[str, str], dict[str, Any]]] = dataclasses.field(
        default_factory=lambda: defaultdict(dict)
    )
    debouncer: Debouncer[ProjectKey, ProjectResult] | None = None
    metrics: Metrics | None = None
    # The Kubernetes Secrets the engine's secret provider reads (valueFrom.secretKeyRef).
    secrets: ClusterSecrets = dataclasses.field(default_factory=ClusterSecrets)

    def referencing(self, namespace: str, secret: str) -> list[ProjectKey]:
        """Projects with a ProjectSecret that reads the Kubernetes Secret ``namespace/secret``."""
        found = []
        for key, bodies in self.bodies.items():
            if key[0] != namespace:
                continue
            for (kind, _), body in bodies.items():
                ref = ((body.get("spec") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
                if kind == "ProjectSecret" and ref.get("name") == secret:
                    found.append(key)
                    break
        return found

    def queue_depth(self) -> float:
        return float(self.debouncer.queue_depth) if self.debouncer is not None else 0.0

    def start(self, quiet: float = 0.3, longest: float = 3.0) -> Debouncer[ProjectKey, ProjectResult]:
        if self.debouncer is None:
            self.debouncer = Debouncer(self._reconcile, quiet=quiet, longest=longest)
        return self.debouncer

    async def _reconcile(self, key: ProjectKey) -> ProjectResult:
        namespace, project = key
        started = time.monotonic()
        try:
            result = await self.reconciler.reconcile(namespace, project, list(self.bodies[key].values()))
        except Exception as exc:
            if self.metrics is not None:
                self.metrics.observe_crash(exc, time.monotonic() - started)
            raise
        if self.metrics is not None:
            self.metrics.observe(result, time.monotonic() - started)
        return result


SUMMARY_LIMIT = 20


def summarize(result: ProjectResult, objects: list[tuple[str, str]]) -> dict[str, Any]:
    """The Project's ``status.summary``: every object of the project as this reconcile left it."""
    not_ready = sorted(
        f"{kind}/{name}: {result.status_of(kind, name).ready.reason}"
        for kind, name in objects
        if result.status_of(kind, name).ready.status != "True"
    )
    return {"objects": len(objects), "ready": len(objects) - len(not_ready), "notReady": not_ready[:SUMMARY_LIMIT]}


def project_of(body: kopf.Body) -> str:
    """The project an object belongs to: its projectRef, or its own name for a Project."""
    if body.get("kind") == "Project":
        return str(body["metadata"]["name"])
    ref = (body.get("spec") or {}).get("projectRef") or {}
    return str(ref.get("name", ""))


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: v for k, v in dict(body["metadata"]).items() if k != "managedFields"},
        "spec": dict(body.get("spec") or {}),
    }


def make_registry(
    engine: Engine[Any, Any],
    quiet: float = 0.3,
    drift_interval: float = DRIFT_INTERVAL,
    webhook: kopf.WebhookServer | None = None,
    relay: Relay | None = None,
    secrets: ClusterSecrets | None = None,
) -> tuple[kopf.OperatorRegistry, OperatorState]:
    """Handlers for all seven kinds, sharing one state; a drift check per Project every ``drift_interval``.

    ``webhook``: serve admission there (``POST /validate``, deploy/webhook.yaml), with the same
    validation as ``kliv validate``. ``relay``: publish the outbox from this replica while it holds
    the relay's advisory lock (every replica runs one; one publishes at a time). The state's
    ``metrics`` (set by the caller, e.g. ``kliv operator``) records every reconcile. ``secrets``: the
    Kubernetes Secrets the engine's secret provider was constructed to read (kept current here).
    """
    registry = kopf.OperatorRegistry()
    state = OperatorState(Reconciler(engine), secrets=secrets if secrets is not None else ClusterSecrets())

    @kopf.on.startup(registry=registry, id="configure")
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER  # ours, not kopf's default marker

    if webhook is not None:
        _admission(registry, state, webhook)
    if relay is not None:
        _relaying(registry, relay)

    @kopf.on.event("v1", "secrets", registry=registry, id="track-secrets")
    async def track_secret(type: str, body: kopf.Body, **_: Any) -> None:
        """Keep Secrets' data for valueFrom.secretKeyRef; a change re-reconciles the projects reading it."""
        key = (str(body["metadata"].get("namespace") or "default"), str(body["metadata"]["name"]))
        data = None
        if type != "DELETED":
            data = dict(body.get("data") or {})
            data.update(
                {k: base64.b64encode(str(v).encode()).decode() for k, v in (body.get("stringData") or {}).items()}
            )
        if not state.secrets.update(key, data):
            return
        for project in state.referencing(*key):
            state.start(quiet).trigger(project)

    def remember(body: kopf.Body) -> ProjectKey:
        key = (str(body["metadata"].get("namespace") or "default"), project_of(body))
        state.bodies[key][(str(body["kind"]), str(body["metadata"]["name"]))] = _plain(body)
        return key

    for model in KINDS.values():

        @kopf.on.event(GROUP, VERSION, model.PLURAL, registry=registry, id=f"track-{model.PLURAL}")
        async def track(type: str, body: kopf.Body, **_: Any) -> None:
            if type == "DELETED":
                key = (str(body["metadata"].get("namespace") or "default"), project_of(body))
                state.bodies[key].pop((str(body["kind"]), str(body["metadata"]["name"])), None)
                state.start(quiet).trigger(key)  # nobody awaits: the others' statuses follow

        @kopf.on.resume(GROUP, VERSION, model.PLURAL, registry=registry, id=f"resume-{model.PLURAL}")
        @kopf.on.create(GROUP, VERSION, model.PLURAL, registry=registry, id=f"create-{model.PLURAL}")
        @kopf.on.update(GROUP, VERSION, model.PLURAL, registry=registry, id=f"update-{model.PLURAL}")
        async def reconcile(body: kopf.Body, patch: kopf.Patch, status: kopf.Status, **_: Any) -> None:
            key = remember(body)
            result = await state.start(quiet).request(key)
            outcome = result.status_of(str(body["kind"]), str(body["metadata"]["name"]))
            generation = body["metadata"].get("generation")
            patch.status["observedGeneration"] = generation
            patch.status["conditions"] = conditions.merge(
                list(status.get("conditions") or []), [outcome.ready, outcome.synced], generation
            )
            if outcome.outputs:
                patch.status["outputs"] = outcome.outputs
            if body["kind"] == "Project":
                patch.status["summary"] = summarize(result, list(state.bodies[key]))
            if outcome.ready.status == "True":
                kopf.info(body, reason="Reconciled", message=outcome.ready.message)
            else:
                kopf.warn(body, reason=outcome.ready.reason, message=outcome.ready.message)
            if outcome.retry_in is not None:
                raise kopf.TemporaryError(outcome.ready.message, delay=outcome.retry_in)

        @kopf.on.delete(GROUP, VERSION, model.PLURAL, registry=registry, id=f"delete-{model.PLURAL}")
        async def delete(body: kopf.Body, **_: Any) -> None:
            """deletionPolicy: Retain forgets, Delete drops (through the plan); the finalizer waits for it."""
            key = remember(body)  # kept, marked deleting: the reconcile leaves it out of the desired state
            if body["kind"] == "Project":
                await _delete_project(engine, body, key)
                state.bodies.pop(key, None)
                return
            result = await state.start(quiet).request(key)
            state.bodies[key].pop((str(body["kind"]), str(body["metadata"]["name"])), None)
            failure = result.fallback
            if failure.retry_in is not None and failure.ready.reason != conditions.WAITING_FOR_DEPENDENCY:
                raise kopf.TemporaryError(failure.ready.message, delay=failure.retry_in)

    @kopf.timer(
        GROUP, VERSION, "projects", registry=registry, id="drift", interval=drift_interval, initial_delay=drift_interval
    )
    async def drift(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        """Observe reality with one catalog round; a drift is reported (audit and Kubernetes events)
        and corrected, unless the Project is observe-only. The Project's summary is refreshed."""
        key = remember(body)
        result = await state.start(quiet).request(key)
        patch.status["summary"] = summarize(result, list(state.bodies[key]))
        drifted = state.reconciler.drifted.get(key) or []
        if drifted:
            kopf.warn(body, reason="Drifted", message=f"Reality drifted from the specs of {', '.join(drifted)}.")

    return registry, state


def cluster_login(registry: kopf.OperatorRegistry) -> None:
    """How ``kliv operator`` authenticates: the pod's service account in a cluster, else the kubeconfig.

    A bare ``kopf.OperatorRegistry`` has no login handler (only kopf's implicit default registry
    does), so without this the operator could not talk to any cluster. Tests log in their own way.
    """

    @kopf.on.login(registry=registry, id="cluster-login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


ADMISSION_PATH = "validate"  # kopf serves a webhook handler at /<handler id>


def _admission(registry: kopf.OperatorRegistry, state: OperatorState, webhook: kopf.WebhookServer) -> None:
    @kopf.on.startup(registry=registry, id="admission-server")
    async def serve(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.admission.server = webhook

    @kopf.on.validate(GROUP, VERSION, kopf.EVERYTHING, registry=registry, id=ADMISSION_PATH)
    async def admit(body: kopf.Body, **_: Any) -> None:
        """Refuse an object with spec errors at `kubectl apply` time, each with its JSON pointer."""
        key = (str(body["metadata"].get("namespace") or "default"), project_of(body))
        others = list(state.bodies[key].values()) if key in state.bodies else []
        # Validating a project of thousands of objects takes a while: off the loop that reconciles.
        problems = await asyncio.to_thread(admission_problems, _plain(body), others)
        if problems:
            raise kopf.AdmissionError(rejection(problems), code=422)


def _relaying(registry: kopf.OperatorRegistry, relay: Relay) -> None:
    """The relay as a task of the operator's loop, in every replica: startup handlers run whether or
    not kopf's peering lets this replica reconcile, and the relay's own advisory lock picks the one
    that publishes (a replica that dies releases it with its session)."""
    stop = asyncio.Event()
    running: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry, id="relay-start")
    async def start(**_: Any) -> None:
        stop.clear()
        running.append(asyncio.create_task(relay.run(stop), name="kliv-relay"))

    @kopf.on.cleanup(registry=registry, id="relay-stop")
    async def finish(**_: Any) -> None:
        stop.set()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=10)
        running.clear()


async def _delete_project(engine: Engine[Any, Any], body: kopf.Body, key: ProjectKey) -> None:
    """Through a deletion plan: a `deleted` event per resource; deletionPolicy Delete is the consent
    to its data loss (as for any object deleted with that policy); observe-only never drops."""
    spec = body.get("spec") or {}
    annotations = dict(body["metadata"].get("annotations") or {})
    name = str(body["metadata"]["name"])
    database = (spec.get("database") or {}).get("name") or name.replace("-", "_")
    drop = spec.get("deletionPolicy") == "Delete" and annotations.get(MANAGEMENT_POLICY) != "observe"
    actor = annotations.get(REQUESTED_BY) or "kliv-operator"
    deletion = await asyncio.to_thread(engine.plan_deletion, key[0], name, database, drop)
    plan = await asyncio.to_thread(engine.apply_deletion, deletion, drop, actor)
    project_change = plan.changes[-1]
    kopf.info(body, reason="Deleted", message="; ".join(project_change.summary))
