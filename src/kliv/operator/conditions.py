"""Status conditions in the Kubernetes ``metav1.Condition`` shape: Ready and Synced.

Built by the operator's reconcile for every object of a project (pure: no I/O).
Reasons are CamelCase and messages are full sentences, as crossplane-runtime
does; ``lastTransitionTime`` only moves when a condition's status changes.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]

# Ready: is the external resource usable?
AVAILABLE = "Available"
WAITING_FOR_DEPENDENCY = "WaitingForDependency"
DATA_LOSS_REFUSED = "DataLossRefused"
INVALID_SPEC = "InvalidSpec"
ALREADY_EXISTS = "AlreadyExists"
NOT_SUPPORTED = "NotSupported"
# Synced: did the last reconcile succeed?
RECONCILE_SUCCESS = "ReconcileSuccess"
RECONCILE_ERROR = "ReconcileError"
DRIFTED = "Drifted"
PAUSED = "Paused"
OBSERVE_ONLY = "ObserveOnly"


@dataclasses.dataclass(frozen=True)
class Condition:
    type: Literal["Ready", "Synced"]
    status: Status
    reason: str
    message: str

    def to_json(self, generation: int | None, now: datetime | None = None) -> dict[str, Any]:
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        data: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": stamp,
        }
        if generation is not None:
            data["observedGeneration"] = generation
        return data


def ready(ok: bool, reason: str, message: str) -> Condition:
    return Condition("Ready", "True" if ok else "False", reason, message)


def synced(ok: bool, reason: str, message: str) -> Condition:
    return Condition("Synced", "True" if ok else "False", reason, message)


def merge(
    existing: list[dict[str, Any]] | None, new: list[Condition], generation: int | None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The new conditions, keeping ``lastTransitionTime`` of those whose status did not change."""
    previous = {c.get("type"): c for c in existing or []}
    merged = []
    for condition in new:
        data = condition.to_json(generation, now)
        before = previous.get(condition.type)
        if before is not None and before.get("status") == condition.status and before.get("lastTransitionTime"):
            data["lastTransitionTime"] = before["lastTransitionTime"]
        merged.append(data)
    return merged
