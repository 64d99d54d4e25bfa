"""Audit events: CloudEvents 1.0 built from what an engine did (pure: no I/O).

Called by the engines when they record an apply, a refusal or a failure; the
events go into the outbox in the same transaction as the inventory change
(:mod:`kliv.stacks.postgres.inventory`) and reach RabbitMQ through the relay
(:mod:`kliv.operator.relay`). An event never carries a secret: every string in
``data`` passes through :func:`mask`.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from kliv.stacks.plans import Change, Plan

EXCHANGE = "kliv.audit"
CONTENT_TYPE = "application/cloudevents+json"
Outcome = Literal["applied", "refused", "failed", "drifted"]

_ACTIONS = {"create": "created", "update": "updated", "delete": "deleted"}
_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@", re.IGNORECASE)
_PASSWORD_KEYWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def mask(text: str) -> str:
    """``text`` with credentials in URLs and ``password=`` keywords replaced by ``***``."""
    text = _CREDENTIALS.sub(lambda m: m["scheme"] + "***@", text)
    return _PASSWORD_KEYWORD.sub(lambda m: m["key"] + "***", text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class AuditEvent:
    """An event ready for the outbox: its stable id, routing key and CloudEvents JSON body."""

    id: str
    routing_key: str
    body: bytes
    subject: str = ""  # the resource (`Kind/namespace/name`) the event is about


def _segment(value: str) -> str:
    # AMQP topic words are separated by dots: a name may not add words of its own.
    return value.replace(".", "_").lower()


def build(
    change: Change,
    namespace: str,
    project: str,
    outcome: Outcome,
    actor: str,
    generation: int | None = None,
    error: str | None = None,
) -> AuditEvent:
    """The audit event for one change of one resource."""
    kind, _, name = change.resource.split("/", 2)
    action = {
        "applied": _ACTIONS.get(change.action, "updated"),
        "refused": "refused",
        "failed": "failed",
        "drifted": "drifted",
    }[outcome]
    event_id = str(uuid.uuid4())
    data: dict[str, Any] = {
        "actor": actor,
        "namespace": namespace,
        "project": project,
        "kind": kind,
        "name": name,
        "generation": generation,
        "action": action,
        "outcome": outcome,
        "plan": {
            "change": change.action,
            "risk": change.risk,
            "summary": change.summary,
            "steps": len(change.steps),
        },
    }
    if error is not None:
        data["error"] = error
    from cloudevents.core.formats.json import JSONFormat  # on use: a plan builds no event
    from cloudevents.core.v1.event import CloudEvent

    event = CloudEvent(
        {
            "id": event_id,
            "source": f"/kliv/namespaces/{namespace}/projects/{project}",
            "type": f"dev.kliv.cloud.{kind.lower()}.{action}",
            "subject": change.resource,
            "time": datetime.now(UTC),
            "datacontenttype": "application/json",
        },
        _masked(data),
    )
    routing_key = ".".join(_segment(p) for p in (namespace, project, kind, action))
    return AuditEvent(event_id, routing_key, JSONFormat().write(event), change.resource)


def for_plan(
    plan: Plan, namespace: str, project: str, outcome: Outcome, actor: str, error: str | None = None
) -> list[AuditEvent]:
    """One event per resource the plan changes (or would have changed), in plan order."""
    return [build(c, namespace, project, outcome, actor, error=error) for c in plan.changes if c.action != "noop"]
