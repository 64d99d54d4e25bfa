"""What every engine's apply does the same way: the gate, drift, and the providers' changes.

Called by the native engine (:mod:`kliv.stacks.postgres.engine`) and meant for the Pulumi
engine next; both keep their records and audit events in the one control database
(``control``: a function giving this thread's autocommit connection to it). An engine
makes the project's own changes its way (the native one in one Postgres transaction),
and leaves to these functions:

- :func:`refuse`: a gated change without consent queues a `refused` event per change and
  raises RefusedError, changing nothing;
- :func:`spec_only_events`: a spec change reality did not need (a deletionPolicy) is
  still audited;
- :func:`apply_externals`: each pending provider change (buckets, secrets), made by its
  provider from the change's data and recorded with its `applied` event in one
  control-database transaction, or audited as `failed`; one failure does not stop the
  others, and the first is raised at the end;
- :func:`report_drift`: a `drifted` event per resource whose reality moved while its spec
  did not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from kliv.stacks import events
from kliv.stacks.contract import ControlSession, Provider
from kliv.stacks.engines import Prepared
from kliv.stacks.errors import ApplyFailedError, ExternalFailedError, RefusedError
from kliv.stacks.plans import Change
from kliv.stacks.postgres import inventory

Reconnecting = Callable[[], Any]  # a context manager turning a lost server into UnavailableError


def refuse(control: ControlSession, namespace: str, project: str, refused: list[Change], actor: str) -> None:
    """Queue a `refused` event per gated change and raise RefusedError (nothing is applied)."""
    connection = control()
    with connection.transaction():
        inventory.enqueue(connection, namespace, project, [events.build(c, namespace, project, "refused", actor)
                                                           for c in refused])  # fmt: skip
    raise RefusedError(refused)


def spec_only_events(prepared: Prepared, changed: Iterable[str], actor: str) -> list[events.AuditEvent]:
    """`applied` events for specs that changed where reality needed no change (not in ``changed``)."""
    done = set(changed)
    change = ["spec changed; reality needed no change"]
    return [
        events.build(Change(ref, "update", "safe", change, []), prepared.namespace, prepared.project, "applied", actor)
        for ref in prepared.changed_specs
        if ref not in done
    ]


@dataclasses.dataclass
class Progress:
    """What an apply has committed so far: refs of whole changes, and single steps outside the transaction."""

    committed: list[str] = dataclasses.field(default_factory=list)

    def add(self, item: str) -> None:
        if item not in self.committed:
            self.committed.append(item)

    def failure(self, error: ApplyFailedError) -> ApplyFailedError:
        """``error``, telling what had already changed when it happened."""
        return error.after(tuple(self.committed)) if self.committed else error


def apply_externals(
    prepared: Prepared,
    providers: dict[str, Provider],
    control: ControlSession,
    reconnecting: Reconnecting,
    actor: str,
    progress: Progress,
) -> None:
    """Make each pending provider change after the engine's own, each recorded as it succeeds.

    For the postgres secret store the new version, its inventory row and its audit event are
    one commit. For an API call (S3, Secrets Manager) a crash between the call and the commit
    is caught up by the next apply: the inventory still holds the old spec hash, so the
    resource is planned again (every change is idempotent) and audited then. Failures are
    kept in ``prepared.failures``; the error raised lists everything ``progress`` committed.
    """
    namespace, project = prepared.namespace, prepared.project
    failures: list[ExternalFailedError] = []
    for external in (e for e in prepared.externals if e.pending):
        change = external.change
        provider = providers[change.resource.split("/", 1)[0]]
        try:
            with reconnecting():
                connection = control()
                with connection.transaction():
                    external.outputs = provider.apply(change.resource, change)
                    event = events.build(change, namespace, project, "applied", actor)
                    inventory.put_resource(connection, namespace, project, change.resource, external.record, [event])
            progress.add(change.resource)
        except Exception as exc:
            failure = ExternalFailedError.wrap(change.resource, exc)
            failures.append(failure)
            prepared.failures[change.resource] = failure
            event = events.build(change, namespace, project, "failed", actor, error=failure.public)
            with reconnecting():
                connection = control()
                with connection.transaction():
                    inventory.enqueue(connection, namespace, project, [event])
    if failures:
        first = failures[0]
        raise ExternalFailedError(first.resource, first.reason, first.hint, first.temporary, tuple(progress.committed))


def report_drift(control: ControlSession, prepared: Prepared, applied_before: bool, actor: str) -> list[str]:
    """Queue a `drifted` event for every change of a plan whose specs did not change; their refs.

    ``applied_before``: whether the project was ever applied (else nothing can have drifted).
    """
    if prepared.changed_specs or not applied_before:
        return []
    drifted = [c for c in prepared.plan.changes if c.action != "noop"]
    if not drifted:
        return []
    found = [events.build(c, prepared.namespace, prepared.project, "drifted", actor) for c in drifted]
    connection = control()
    with connection.transaction():
        inventory.enqueue(connection, prepared.namespace, prepared.project, found)
    return [c.resource for c in drifted]
