"""The one place that decides what a failed reconcile means: retry soon, or wait for a new spec.

Called by the operator's reconcile with whatever the engine raised. Temporary
failures (the database or broker is away, a lock timed out) are retried with
exponential backoff; permanent ones (an invalid or refused spec, a name owned by
someone else, a statement Postgres rejects) are reported in the conditions and
not retried until the spec, or the allow-data-loss annotation, changes: no retry
storm against a spec that cannot work.
"""

from __future__ import annotations

import dataclasses

import psycopg

from kliv.operator import conditions
from kliv.operator.conditions import Condition
from kliv.stacks.errors import (
    AlreadyExistsError,
    ApplyFailedError,
    EngineError,
    ExternalFailedError,
    InvalidSourceError,
    MissingValueError,
    RefusedError,
    UnavailableError,
)

MAX_DELAY = 300.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How to report a failure, and whether (and when) to try again."""

    temporary: bool
    delay: float
    ready: Condition
    synced: Condition
    event_reason: str


def backoff(attempt: int) -> float:
    """1, 2, 4 ... seconds, capped at five minutes."""
    return float(min(2 ** max(attempt, 0), MAX_DELAY))


def classify(error: BaseException, attempt: int = 0) -> Outcome:
    """What ``error`` means for the objects of a project."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    if isinstance(error, RefusedError):
        return _permanent(
            conditions.ready(
                False,
                conditions.DATA_LOSS_REFUSED,
                f'{message} Annotate with cloud.kliv.dev/allow-data-loss: "<generation>" to allow it.',
            ),
            "CannotUpdateExternalResource",
        )
    if isinstance(error, AlreadyExistsError):
        return _permanent(conditions.ready(False, conditions.ALREADY_EXISTS, message), "CannotCreateExternalResource")
    if isinstance(error, InvalidSourceError):  # the module Deno refused: the spec must change
        return _permanent(conditions.ready(False, conditions.INVALID_SPEC, message), "CannotCreateExternalResource")
    if isinstance(error, MissingValueError):
        delay = min(backoff(attempt + 2), 60.0)
        return Outcome(
            True,
            delay,
            conditions.ready(False, conditions.WAITING_FOR_DEPENDENCY, message),
            conditions.synced(False, conditions.WAITING_FOR_DEPENDENCY, message),
            "CannotCreateExternalResource",
        )
    if isinstance(error, ExternalFailedError):
        # An S3 or Secrets Manager refusal is often fixed outside the spec (a permission, a
        # quota): retried, slowly unless the endpoint was merely unreachable.
        delay = backoff(attempt if error.temporary else attempt + 3)
        return Outcome(
            True,
            delay,
            conditions.ready(False, "CannotApply", f"{message} Retrying in {delay:.0f} s."),
            conditions.synced(False, conditions.RECONCILE_ERROR, message),
            "CannotUpdateExternalResource",
        )
    # A lock held elsewhere, a lost connection (08xxx) or a server shutting down (57Pxx).
    lost = isinstance(error, ApplyFailedError) and (
        "lock timeout" in error.reason or error.sqlstate.startswith(("08", "57", "55P03"))
    )
    temporary = isinstance(error, UnavailableError | psycopg.OperationalError | OSError | TimeoutError) or lost
    if temporary:
        delay = backoff(attempt)
        return Outcome(
            True,
            delay,
            conditions.ready(False, "Unavailable", f"{message} Retrying in {delay:.0f} s."),
            conditions.synced(False, conditions.RECONCILE_ERROR, message),
            "CannotObserveExternalResource",
        )
    if isinstance(error, EngineError):
        return _permanent(conditions.ready(False, "CannotApply", message), "CannotUpdateExternalResource")
    # Anything unforeseen is a bug or a glitch: retry, slowly.
    delay = backoff(attempt + 3)
    return Outcome(
        True,
        delay,
        conditions.ready(False, conditions.RECONCILE_ERROR, f"unexpected {type(error).__name__}: {message}"),
        conditions.synced(False, conditions.RECONCILE_ERROR, f"unexpected {type(error).__name__}: {message}"),
        "ReconcileError",
    )


def _permanent(ready: Condition, event_reason: str) -> Outcome:
    return Outcome(False, 0.0, ready, conditions.synced(False, conditions.RECONCILE_ERROR, ready.message), event_reason)
