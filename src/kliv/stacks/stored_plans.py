"""Plans stored in the control database and applied later by id, from any process or replica.

Used by ``kliv plan --save`` / ``kliv apply --plan ID`` and, next, by the agent
interface (``plan`` returns a ``plan_id``, ``apply`` takes only that) and the admin
UI. A stored plan is bound to the specs' content (the documents are stored with
it, so applying uses exactly what was planned) and to reality at plan time (the
digest of the plan reality gave): applying plans again from the stored
documents, and refuses when that plan differs, or when the id is unknown,
expired (after :data:`VALID_FOR`) or used already (each id is applied once). Engine-neutral: any
engine's :class:`~kliv.stacks.engines.Prepared` can be stored. Plans and specs
never hold a secret value, so neither does this table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any

import psycopg

from kliv.specs import ProjectSpecs
from kliv.stacks.engines import Prepared
from kliv.stacks.errors import StoredPlanError

VALID_FOR = timedelta(hours=1)
_REPLAN = "run `kliv plan --save` again and apply the new plan id"


def digest(data: Any) -> str:
    """A stable hash of JSON data."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def documents_of(group: ProjectSpecs) -> list[dict[str, Any]]:
    """The project's specs as documents (validated models, dumped back: what was planned)."""
    return [spec.resource.model_dump(mode="json", by_alias=True, exclude_none=True) for spec in group]


def plan_digest(prepared: Prepared) -> str:
    """What binds a plan to reality: each change as data (resource, action, risk, steps and the
    provider's data, which holds a secret's keyed fingerprint, never its value) and which specs
    changed; not the summary lines, whose wording may say a check could not run in time."""
    changes = [
        {"resource": c.resource, "action": c.action, "risk": c.risk, "detail": c.detail,
         "steps": [dataclasses.asdict(step) for step in c.steps]}
        for c in prepared.plan.changes
        if c.action != "noop"
    ]  # fmt: skip
    bound: dict[str, Any] = {"changes": changes, "notSupported": prepared.plan.not_supported,
                             "changedSpecs": sorted(prepared.changed_specs)}  # fmt: skip
    if prepared.engine != "native":  # another engine's plan is another plan (and the native digests stay)
        bound["engine"] = prepared.engine
        bound["steps"] = getattr(prepared, "steps", [])
    return digest(bound)


@dataclasses.dataclass(frozen=True)
class StoredPlan:
    id: str
    namespace: str
    project: str
    documents: list[dict[str, Any]]
    plan: dict[str, Any]
    plan_digest: str
    expires_at: str


def store(control: psycopg.Connection[Any], group: ProjectSpecs, prepared: Prepared, actor: str) -> str:
    """Keep ``prepared`` (planned from ``group``) for :data:`VALID_FOR`; its id."""
    plan_id = str(uuid.uuid4())
    documents = documents_of(group)
    control.execute(
        "INSERT INTO inventory.plans (id, namespace, project, specs_digest, plan_digest, documents, plan, created_by, "
        "expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + %s)",
        [plan_id, prepared.namespace, prepared.project, digest(documents), plan_digest(prepared),
         json.dumps(documents), json.dumps(prepared.plan.to_json()), actor, VALID_FOR],
    )  # fmt: skip
    # Expired plans are of no use to anyone: each new one clears them.
    control.execute("DELETE FROM inventory.plans WHERE expires_at < now() - interval '1 day'")
    return plan_id


def load(control: psycopg.Connection[Any], plan_id: str) -> StoredPlan:
    """The stored plan ``plan_id``; StoredPlanError when it is unknown, expired or applied."""
    try:
        parsed = str(uuid.UUID(plan_id))
    except ValueError:
        raise StoredPlanError("plan-unknown", f"`{plan_id[:64]}` is not a plan id", _REPLAN) from None
    row = control.execute(
        "SELECT namespace, project, documents, plan, plan_digest, specs_digest, expires_at::text, "
        "expires_at < now(), applied_at IS NOT NULL FROM inventory.plans WHERE id = %s",
        [parsed],
    ).fetchone()
    if row is None:
        raise StoredPlanError("plan-unknown", f"no stored plan has the id {parsed}", _REPLAN)
    namespace, project, documents, plan, stored_digest, specs_digest, expires, expired, applied = row
    if applied:
        raise StoredPlanError("plan-applied", f"plan {parsed} was applied already; nothing was applied", _REPLAN)
    if expired:
        raise StoredPlanError("plan-expired", f"plan {parsed} expired at {expires}; nothing was applied", _REPLAN)
    if digest(documents) != specs_digest:  # a damaged row (not a signature: the table is the platform's)
        raise StoredPlanError("plan-moved", f"the specs stored with plan {parsed} were altered", _REPLAN)
    return StoredPlan(parsed, namespace, project, documents, plan, stored_digest, expires)


def check(stored: StoredPlan, prepared: Prepared) -> None:
    """Refuse (``plan-moved``) when planning the stored specs now gives another plan than then."""
    if plan_digest(prepared) != stored.plan_digest:
        raise StoredPlanError(
            "plan-moved",
            f"reality changed since plan {stored.id} was made (Project {stored.namespace}/{stored.project} now "
            "plans differently); nothing was applied",
            _REPLAN,
        )


def claim(control: psycopg.Connection[Any], plan_id: str) -> bool:
    """Use up ``plan_id`` before applying it (a plan is applied once, even when two processes try
    at the same moment); False when another did first."""
    row = control.execute(
        "UPDATE inventory.plans SET applied_at = now() WHERE id = %s AND applied_at IS NULL AND expires_at > now() "
        "RETURNING id",
        [plan_id],
    ).fetchone()
    return row is not None


def release(control: psycopg.Connection[Any], plan_id: str) -> None:
    """Give a claimed plan back: its apply failed having changed nothing."""
    control.execute("UPDATE inventory.plans SET applied_at = NULL WHERE id = %s", [plan_id])
