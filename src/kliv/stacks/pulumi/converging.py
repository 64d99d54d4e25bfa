"""One kliv resource made to match its spec by the native machinery, for a dynamic provider.

Called by :mod:`.dynamic` (inside the Pulumi engine's dynamic-provider process, or the
tests') with a resource's inputs: its documents (what it needs of its Project, then its
own) and the connection; the keys come from the process's environment. Nothing is kept between calls: each one
builds a native engine from the connection, plans the resource against reality and runs
exactly that resource's change, so a create after a crash, an update to what already
matches and a delete of what is gone all succeed (idempotent).

Database kinds (Project, Table, TablePolicy, DatabaseFunction, Trigger) are planned by the native differ over the
resource's own documents, with the removal of the resource itself (``remove``) planned
from its last record; the change's steps run in their phases: server steps on the admin
connection, the rest in one transaction. Provider kinds (templates, buckets, secrets,
functions) go through their provider's ``observe`` and ``apply``, as the native engine does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kliv.specs import ProjectSpecs
from kliv.specs.documents import Document
from kliv.specs.errors import DANGLING_REFERENCE, Source
from kliv.specs.loading import validate_documents
from kliv.stacks.contract import Record
from kliv.stacks.errors import EngineError
from kliv.stacks.plans import Change

DATABASE_KINDS = frozenset({"Project", "Table", "TablePolicy", "DatabaseFunction", "Trigger"})


@dataclasses.dataclass(frozen=True)
class Made:
    """What a dynamic resource's outputs keep: the resource's outputs and its inventory record."""

    outputs: dict[str, str]
    record: Record | None
    change: Change
    # The spec's text (digest) and Postgres' spelling of each expression as applied: what the
    # differ compares the next time, as the native inventory's fingerprints (database kinds).
    fingerprints: dict[str, list[str | None]] = dataclasses.field(default_factory=dict)

    def outs(self) -> dict[str, Any]:
        return {"outputs": self.outputs, "record": self.record.to_json() if self.record else None,
                "fingerprints": self.fingerprints, "action": self.change.action,
                "risk": self.change.risk}  # fmt: skip


def group_of(documents: list[Mapping[str, Any]]) -> ProjectSpecs:
    """The project the documents describe, validated as the engine validates specs, except that
    what they reference need not be among them (the engine validated the whole project before it
    planned; a resource's inputs hold only its own documents); an EngineError names the first problem."""
    validation = validate_documents(Document(Source("<pulumi>", i), dict(d)) for i, d in enumerate(documents))
    errors = [p for p in validation.errors if p.code != DANGLING_REFERENCE or p.kind == "Project"]
    if errors:
        first = errors[0]
        raise EngineError(f"{first.path}: {first.message}", first.hint)
    groups = [g for g in validation.specs.projects.values() if g.project is not None]
    if len(groups) != 1 or len(validation.specs.projects) != 1:
        raise EngineError("the documents of a dynamic resource name one Project", "declare the program again")
    return groups[0]


def options_of(connection: Mapping[str, Any], value: str | None = None) -> Any:
    """The native engine's ProviderOptions from a dynamic resource's connection input.

    ``value``: a ProjectSecret's value, resolved by the engine from its own source (the CLI's
    environment, or Kubernetes Secrets in the operator) and given as a secret input. This
    process never reads a secret's value from its own environment: in the operator that is
    the operator's, which specs must never reach. The keys come through the environment the
    engine gave the CLI (never through inputs, which the state keeps).
    """
    from kliv.stacks.providers import ProviderOptions

    raw: dict[str, Any] = dict(connection.get("options") or {})
    raw["secret_key"] = os.environ.get("KLIV_SECRET_KEY") or None
    previous = os.environ.get("KLIV_SECRET_PREVIOUS_KEYS", "")
    raw["previous_secret_keys"] = [k for k in previous.split(",") if k]
    plain: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k != "buckets_dir"}
    return ProviderOptions(
        buckets_dir=Path(raw.get("buckets_dir") or "/nonexistent"), secret_values=lambda secret: value, **plain
    )


@contextlib.contextmanager
def native_engine(connection: Mapping[str, Any], value: str | None = None) -> Iterator[Any]:
    """A native engine built from a dynamic resource's connection input (:func:`options_of`), closed afterwards."""
    from kliv.stacks import PostgresEngine

    engine = PostgresEngine(str(connection["url"]), application_name="kliv pulumi",
                            options=options_of(connection, value))  # fmt: skip
    try:
        yield engine
    finally:
        engine.close()


def make(
    kind: str, inputs: Mapping[str, Any], last: Mapping[str, Any] | None, remove: bool = False, dry_run: bool = False
) -> Made:
    """Make the resource of ``inputs`` match its spec (``remove``: delete it); ``last``: its outputs
    as last made (None: never made); ``dry_run``: only say what the change would be (a refresh)."""
    documents = list(inputs["documents"])
    ref = str(inputs["ref"])
    if remove and kind == "Project":
        # The bootstrap lives in the project database, which goes with its Database resource (or stays).
        return Made({}, None, Change(ref, "noop", "safe", [], []))
    if remove:
        documents = documents[:-1]  # the resource's own document is last
    connection = inputs["connection"]
    connection = json.loads(connection) if isinstance(connection, str) else connection
    record = Record.from_json(last["record"]) if last and last.get("record") else None
    with native_engine(connection, inputs.get("value")) as engine:
        group = group_of(documents)
        _check_identity(engine, group, kind, ref, documents, remove)
        if kind in DATABASE_KINDS:
            fingerprints = dict((last or {}).get("fingerprints") or {})
            return _make_in_database(engine, group, ref, record, fingerprints, remove, dry_run)
        return _make_with_provider(engine, kind, group, ref, record, dry_run)


def _check_identity(engine: Any, group: ProjectSpecs, kind: str, ref: str, documents: list[Any], remove: bool) -> None:
    """The inputs are one resource of ``kind`` (its document last, unless removed) of a Project
    whose database is that Project's or nobody's: state and inputs are not trusted blindly."""
    from kliv.stacks.postgres import inventory

    if not remove:
        own = documents[-1] if documents else {}
        name = (own.get("metadata") or {}).get("name")
        if own.get("kind") != kind or ref != f"{kind}/{group.namespace}/{name}":
            raise EngineError(f"the inputs of {ref} are not a {kind} of that name", "declare the program again")
    assert group.project is not None
    database = group.project.resource.database_name
    owner = inventory.owner_of(engine.control_session(), database)
    if owner is not None and owner != (group.namespace, group.name):
        raise EngineError(f"database {database} belongs to Project {owner[0]}/{owner[1]}; nothing was changed",
                          "give this Project another `spec.database.name`")  # fmt: skip


def _make_in_database(
    engine: Any,
    group: ProjectSpecs,
    ref: str,
    last: Record | None,
    fingerprints: dict[str, Any],
    remove: bool,
    dry_run: bool,
) -> Made:
    from kliv.stacks.postgres import applying, catalog, inventory, planning
    from kliv.stacks.postgres.catalog import ObservedDatabase
    from kliv.stacks.postgres.desired import desired_state, outputs, text_digest
    from kliv.stacks.postgres.diffing import Applied, diff
    from kliv.stacks.runs import Progress

    desired = desired_state(group)
    control = engine.sessions.get(inventory.CONTROL_DATABASE)
    server, _ = planning.read_server(control, desired)
    observed = catalog.observe(engine.sessions.get(desired.name)) if server.database_exists else ObservedDatabase(False)
    # A table's policies are resources of their own: the table's change leaves them alone (the native
    # differ drops policies it does not know on a table it manages).
    observed.policies = {key: value for key, value in observed.policies.items() if key in desired.policies}
    applied = Applied(fingerprints, resources={ref: last} if last else {}, stamp="pulumi")
    plan = diff(desired, observed, server, applied)
    change = next((c for c in plan.changes if c.resource == ref), Change(ref, "noop", "safe", [], []))
    if dry_run:
        return Made(outputs(desired).get(ref, {}), last, change, fingerprints)
    owned = [(step, ref) for step in sorted(change.steps, key=lambda s: s.stage)]
    if ref == desired.resource and not remove:
        # pulumi-postgresql made the database and the roles before this bootstrap, so the native
        # differ sees them and would not revoke PUBLIC's CONNECT: assert who may connect, every time.
        owned += [(step, ref) for step in _who_connects(desired)]
    progress = Progress()
    server_steps = [o for o in owned if o[0].phase == "server"]
    if server_steps:
        applying.server_phase(engine.sessions.get(), server_steps, progress)
    connection = engine.sessions.get(desired.name)
    applying.single_steps(connection, [o for o in owned if o[0].phase == "prepare"], progress)
    applying.in_transaction(connection, [s.sql for s, _ in owned if s.phase == "database"])
    applying.single_steps(connection, [o for o in owned if o[0].phase == "online"], progress)
    if remove:
        return Made({}, None, change)
    record = next((r for r in planning.records(group, desired) if r.ref(group.namespace) == ref), None)
    spelled = catalog.observe(connection).fingerprints()
    applied_now = {key: [text_digest(text), spelled.get(key)] for key, text in desired.fingerprints().items()}
    return Made(outputs(desired).get(ref, {}), record, change, applied_now)


def _who_connects(desired: Any) -> list[Any]:
    from kliv.stacks.plans import Step
    from kliv.stacks.postgres.naming import quote

    connecting = ", ".join(quote(r) for r in [*desired.roles.values(), desired.authenticator])
    database = quote(desired.name)
    return [Step(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC", phase="server"),
            Step(f"GRANT CONNECT ON DATABASE {database} TO {connecting}", phase="server")]  # fmt: skip


def _make_with_provider(
    engine: Any, kind: str, group: ProjectSpecs, ref: str, last: Record | None, dry_run: bool
) -> Made:
    provider = next((p for p in engine.providers if p.kind == kind), None)
    if provider is None:
        raise EngineError(f"no provider for {kind} is configured here", "configure its backend for kliv")
    observations = provider.observe(group, {ref: last} if last else {})
    observation = next((o for o in observations if o.change.resource == ref), None)
    if observation is None:
        return Made({}, None, Change(ref, "noop", "safe", [], []))
    if observation.problem is not None:
        raise observation.problem
    found = observation.outputs
    if observation.pending and not dry_run:
        with engine.control_session().transaction():
            found = provider.apply(ref, observation.change) or found
    return Made(dict(found), observation.record, observation.change)
