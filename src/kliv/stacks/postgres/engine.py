"""The native Postgres engine: plan a project against a real server, then apply it.

Called by ``kliv plan``/``kliv apply``/``kliv up`` and by the operator (through
``asyncio.to_thread``: every call here blocks). One round of catalog
queries observes a project; applying runs the server steps, then everything
inside the project database in one transaction, then online index builds, and
records the result in the inventory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from kliv.specs import ProjectSpecs
from kliv.stacks import events, registry, runs, statuses
from kliv.stacks.contract import Observation, Provider, Record
from kliv.stacks.errors import (
    AlreadyExistsError,
    ApplyFailedError,
    ConflictError,
    PlanRefusedError,
)
from kliv.stacks.events import AuditEvent, mask
from kliv.stacks.plans import Plan
from kliv.stacks.postgres import applying, deleting, inventory, locks, planning, sessions, watching
from kliv.stacks.postgres.catalog import ObservedDatabase
from kliv.stacks.postgres.desired import desired_state, outputs
from kliv.stacks.postgres.diffing import Applied, diff
from kliv.stacks.postgres.planning import PostgresPrepared
from kliv.stacks.postgres.pool import SessionPool
from kliv.stacks.statuses import ObjectState

if TYPE_CHECKING:
    from kliv.stacks.providers import ProviderOptions


class PostgresEngine:
    """Plans and applies projects on the Postgres server at ``admin_url``."""

    def __init__(self, admin_url: str, application_name: str = "kliv", options: ProviderOptions | None = None) -> None:
        """``options``: what the bucket and secret providers need; without them only the kinds
        that need none (email templates) are planned beside the database."""
        self.admin_url = admin_url
        self.sessions = SessionPool(admin_url, application_name)
        # The providers of every registered kind, built once from ``options`` (their dependencies).
        wiring = registry.Wiring(options, self.control_session, self.database_session)
        self.providers: list[Provider] = registry.providers(wiring)
        self._registry_lock = threading.Lock()
        # One plan or apply at a time per project; different projects run in parallel.
        self._project_locks: dict[tuple[str, str], threading.RLock] = {}
        # CREATE DATABASE copies template1: one at a time on a server.
        self._server_lock = threading.Lock()
        # Each project connection's last catalog reading, reused while no other session ran DDL.
        self.watches = watching.Watches(
            lambda database: sessions.connect(
                admin_url, database, autocommit=True, application_name=f"{application_name} watch", connect_timeout=10
            )
        )
        # What this engine recorded last per project, reused by the next plan while the record stands.
        self._recorded: dict[tuple[str, str], Applied] = {}

    def _project_lock(self, namespace: str, project: str) -> threading.RLock:
        with self._registry_lock:
            return self._project_locks.setdefault((namespace, project), threading.RLock())

    def close(self) -> None:
        """Close the connections this engine keeps, in every thread."""
        self.watches.close()
        self.sessions.close()

    def __enter__(self) -> PostgresEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def control_session(self) -> psycopg.Connection[Any]:
        """This thread's autocommit connection to the control database (for providers)."""
        return self.sessions.get(inventory.CONTROL_DATABASE)

    def database_session(self, database: str) -> psycopg.Connection[Any] | None:
        """This thread's autocommit connection to a project database; None while it does not exist."""
        found = self.control_session().execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        return self.sessions.get(database) if found else None

    def admin_session(self) -> psycopg.Connection[Any]:
        """This thread's autocommit admin connection to the server (roles are cluster-wide)."""
        return self.sessions.get()

    # -- plan ----------------------------------------------------------------------------------

    def plan(self, group: ProjectSpecs, split: bool = False) -> PostgresPrepared:
        """``split``: consent to apply in several transactions when one would not fit the server's lock
        table (DESIGN.md, "Failures are whole"); without it such a plan is refused (PlanRefusedError)."""
        with self._project_lock(group.namespace, group.name), self.sessions.reconnecting():
            prepared = self._plan(group)
        locks_needed = locks.estimate([s for s in prepared.plan.steps if s.phase == "database"])
        table = prepared.lock_table
        if table is not None and locks_needed > table.usable:
            if not split:
                message = f"{prepared.plan.project}: {table.refusal(locks_needed)}"
                raise PlanRefusedError(message, table.hint(locks_needed))
            prepared.lock_budget = table.usable // 2
        return prepared

    def _plan(self, group: ProjectSpecs) -> PostgresPrepared:
        desired = desired_state(group)
        control = self.sessions.get(inventory.CONTROL_DATABASE)
        server, lock_table = planning.read_server(control, desired)
        planning.check_claims(inventory.owner_of(control, desired.name), server, desired, group)
        key = (group.namespace, group.name)
        applied = inventory.load(control, group.namespace, group.name, self._recorded.get(key))
        stored_fingerprints = (  # a copy: diff() re-keys its own
            dict(applied.fingerprints) if applied.rows_recorded and applied.fingerprints_bucketed else None
        )
        observed, reading = ObservedDatabase(False), None
        if server.database_exists:
            observed, reading = self.watches.observe(self.sessions.get(desired.name))
        before = watching.copy(observed)  # the differ edits ``observed``
        plan = diff(desired, observed, server, applied)
        touched = planning.touched(plan, desired, applied.resources)
        if reading is not None and not self.watches.verify(self.sessions.get(desired.name), reading, before, touched):
            return self._plan(group)  # the reused reading missed a change: again, from a full one
        plan.not_supported = {
            spec.resource.ref: str(kind.not_supported)
            for spec in group
            if (kind := registry.BY_NAME.get(spec.resource.KIND)) is not None and kind.not_supported
        }
        if plan.preconditions:
            planning.check_preconditions(self.sessions.get(desired.name), plan)
        in_database: list[Observation] = []
        externals: list[Observation] = []
        for provider in self.providers:
            of_kind = {ref: r for ref, r in applied.resources.items() if r.kind == provider.kind}
            (in_database if provider.in_database else externals).extend(provider.observe(group, of_kind))
        observations = in_database + externals
        plan.changes += [o.change for o in observations if o.problem is None]
        resources = planning.records(group, desired)
        resources += [o.record for o in observations if o.record is not None and o.problem is None]
        previous = {ref: r.spec_hash for ref, r in applied.resources.items()}
        hashes = {r.ref(group.namespace): r.spec_hash for r in resources}
        changed_specs = [ref for ref, digest in hashes.items() if previous.get(ref) != digest]
        return PostgresPrepared(
            group.namespace,
            group.name,
            plan,
            changed_specs,
            outputs(desired),
            in_database,
            externals,
            desired=desired,
            resources=resources,
            observed=observed if server.database_exists else None,
            reading=reading,
            stored_rows=dict(applied.resources) if applied.rows_recorded else None,
            stored_fingerprints=stored_fingerprints,
            touched=touched,
            stamp=applied.stamp,
            lock_table=lock_table,
        )

    # -- apply ---------------------------------------------------------------------------------

    def apply(self, prepared: PostgresPrepared, allow_data_loss: bool = False, actor: str = "kliv") -> Plan:
        """Apply a prepared plan and queue its audit events.

        Refused plans raise RefusedError before touching anything (their ``refused``
        events are queued). The ``applied`` events are written while the project
        transaction is still open, tagged with its transaction id: the relay publishes
        them only once Postgres reports that transaction committed, so neither a change
        without its event nor an event for a rolled-back change reaches the broker. The
        inventory is recorded after the commit: if that record is lost, the next plan
        recomputes from the catalog, which is safe; a record of changes that never
        committed would not be.
        """
        with self._project_lock(prepared.namespace, prepared.project), self.sessions.reconnecting():
            try:
                return self._apply(prepared, allow_data_loss, actor)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                # Anything psycopg raises that applying did not convert (commit, connection loss).
                raise ApplyFailedError("(apply)", mask(str(exc).strip()), rolled_back=False) from None

    def _apply(self, prepared: PostgresPrepared, allow_data_loss: bool, actor: str) -> Plan:
        """Under the project's apply lock (a session advisory lock: any process, any replica), and only
        if no other apply was recorded since the plan: two `kliv apply` of one project must not both
        run their plan, the second failing half-way and reporting hundreds of false failures."""
        namespace, project = prepared.namespace, prepared.project
        control = self.sessions.get(inventory.CONTROL_DATABASE)
        if not inventory.project_lock(control, namespace, project):
            raise ConflictError(
                f"another apply of Project {namespace}/{project} is running; nothing was applied",
                "run again once it has finished",
            )
        try:
            if inventory.stamp(control, namespace, project) != prepared.stamp:
                raise ConflictError(
                    f"Project {namespace}/{project} was applied by another run since this plan; nothing was applied",
                    "plan again: the plan must start from what exists now",
                )
            return self._apply_locked(prepared, allow_data_loss, actor)
        finally:
            with contextlib.suppress(psycopg.Error):
                inventory.project_unlock(self.sessions.get(inventory.CONTROL_DATABASE), namespace, project)

    def _apply_locked(self, prepared: PostgresPrepared, allow_data_loss: bool, actor: str) -> Plan:
        plan = prepared.plan
        namespace, project = prepared.namespace, prepared.project
        control = self.sessions.get(inventory.CONTROL_DATABASE)
        refused = plan.refused(allow_data_loss)
        if refused:
            runs.refuse(self.control_session, namespace, project, refused, actor)
        if plan.empty and not prepared.spec_hashes_changed:
            return plan
        desired = prepared.desired
        try:
            inventory.claim(control, namespace, project, desired.name)
        except inventory.AlreadyClaimedError as exc:
            raise AlreadyExistsError(str(exc), "give this Project another `spec.database.name`") from None
        later = {e.change.resource for e in prepared.externals if e.pending or e.problem is not None}
        database_plan = Plan(plan.project, [c for c in plan.changes if c.resource not in later])
        # A change with an index built after the transaction is audited once that build succeeded.
        online = Plan(plan.project, [c for c in database_plan.changes if any(s.phase == "online" for s in c.steps)])
        in_transaction = Plan(plan.project, [c for c in database_plan.changes if c not in online.changes])
        applied = events.for_plan(in_transaction, namespace, project, "applied", actor)
        # A spec change the database does not see (a deletionPolicy) is still a change: audit it.
        applied += runs.spec_only_events(prepared, {c.resource for c in plan.changes if c.action != "noop"} | later,
                                         actor)  # fmt: skip

        recorded = [r for r in prepared.resources if r.ref(namespace) not in later]

        owned = plan.owned_steps()
        building = {c.resource for c in online.changes}
        database = [o for o in owned if o[0].phase == "database"]
        # --split: several transactions, each within the lock budget; otherwise one.
        batches = locks.chunks(database, prepared.lock_budget) if prepared.lock_budget else [database]
        batches = batches or [[]]
        last_batch = {ref: index for index, batch in enumerate(batches) for _, ref in batch}
        progress = runs.Progress()
        done: set[str] = set()  # changes whose `applied` event is queued
        last_xact: list[str] = []  # of the last (or only) project transaction
        seen: list[dict[str, list[str | None]]] = []  # the fingerprints the last pending record held
        latest: list[ObservedDatabase] = []  # the catalog as the last pending record read it
        committed = False  # every project transaction
        watched: psycopg.Connection[Any] | None = None  # the connection this apply's DDL runs on

        def pending_record(connection: psycopg.Connection[Any]) -> dict[str, Any]:
            # A change still to be built online is recorded with no spec hash: should the process
            # stop before its build and its event, the next plan sees it as changed and audits it.
            rows = [dataclasses.replace(r, spec_hash="") if r.ref(namespace) in building else r for r in recorded]
            fingerprints, found = planning.applied_fingerprints(connection, prepared)
            latest[:] = [found]
            if not building:
                seen[:] = [fingerprints]  # what the final record holds too, unless an online build follows
            stored, before = prepared.stored_rows, prepared.stored_fingerprints
            if stored is None or before is None:  # the plan read a pending record: the rows are older than it
                return {"fingerprints": fingerprints, "resources": [r.to_json() for r in rows], "keep": sorted(later)}
            # What changed against the rows (at 1,000 tables one added column: one record, not 3,001,
            # and its expressions' fingerprints, not 10,000).
            refs = {r.ref(namespace) for r in rows}
            removed = sorted(ref for ref in stored if ref not in refs and ref not in later)
            changed = [r.to_json() for r in rows if stored.get(r.ref(namespace)) != r]
            return {
                "fingerprintsChanged": inventory.changed_fingerprints(before, fingerprints),
                "fingerprintsRemoved": sorted(before.keys() - fingerprints.keys()),
                "changed": changed, "removed": removed, "keep": sorted(later),
            }  # fmt: skip

        def queue(batch: int) -> Callable[[psycopg.Connection[Any]], None]:
            final = batch == len(batches) - 1
            ending = [e for e in applied if last_batch.get(e.subject, len(batches) - 1) == batch]

            def before_commit(connection: psycopg.Connection[Any]) -> None:
                # The events (and, with the last transaction, a record of this apply) go to the control
                # database before the project transaction commits, tagged with its id: a crash between
                # the commit and the final record leaves the next plan a record it can trust
                # (inventory.load()), and the relay publishes only what committed.
                row = connection.execute("SELECT pg_current_xact_id()::text").fetchone()
                assert row is not None
                with control.transaction():
                    inventory.enqueue(control, namespace, project, ending, row[0])
                    if final:
                        last_xact[:] = [row[0]]
                        inventory.pending(control, namespace, project, row[0], pending_record(connection))

            return before_commit

        try:
            server = [o for o in owned if o[0].phase == "server"]
            if server:
                with self._server_lock:  # CREATE DATABASE copies template1: one at a time on a server
                    applying.server_phase(self.sessions.get(), server, progress)
            connection = watched = self.sessions.get(desired.name)
            self.watches.applying(connection)
            self._recorded.pop((namespace, project), None)
            applying.single_steps(connection, [o for o in owned if o[0].phase == "prepare"], progress)
            for index, batch in enumerate(batches):
                applying.in_transaction(connection, [s.sql for s, _ in batch], queue(index))
                committed = index == len(batches) - 1
                ended = {e.subject for e in applied if last_batch.get(e.subject, len(batches) - 1) == index}
                done |= ended
                for change in in_transaction.changes:
                    if change.resource in ended and change.action != "noop":
                        progress.add(change.resource)
            for change in online.changes:
                steps = [o for o in owned if o[0].phase == "online" and o[1] == change.resource]
                applying.single_steps(connection, steps, progress)
                building.discard(change.resource)
                with control.transaction():
                    event = events.for_plan(Plan(plan.project, [change]), namespace, project, "applied", actor)
                    inventory.enqueue(control, namespace, project, event)
                    inventory.pending(control, namespace, project, last_xact[0], pending_record(connection))
                done.add(change.resource)
                progress.add(change.resource)
            self._record(control, prepared, connection, recorded, sorted(later), seen[-1] if seen else None, True)
            if latest and not building and prepared.reading is not None:
                self.watches.applied(latest[-1], prepared.reading)
        except (ApplyFailedError, psycopg.Error) as exc:
            failure = progress.failure(
                exc
                if isinstance(exc, ApplyFailedError)
                else ApplyFailedError(
                    "(apply)", "the database connection failed", rolled_back=False, sqlstate=exc.sqlstate or ""
                )
            )
            self.sessions.forget_broken()
            control = self.sessions.get(inventory.CONTROL_DATABASE)
            if committed:
                # The database phase stands (an online build failed after it): record it. After a
                # --split failure half-way the record stays as it was: the next plan recomputes
                # from the catalog (and still knows the tables it was to drop).
                with contextlib.suppress(psycopg.Error):
                    self._record(control, prepared, self.sessions.get(desired.name), recorded, sorted(later))
            # Events say what failed, never Postgres' message: it can quote row data.
            failed = Plan(plan.project, [c for c in plan.changes if c.resource not in done])
            failures = events.for_plan(failed, namespace, project, "failed", actor, error=failure.public)
            with control.transaction():
                inventory.enqueue(control, namespace, project, failures)
            raise failure from None
        finally:
            if watched is not None:
                self.watches.finished(watched)
        providers = {p.kind: p for p in self.providers}
        runs.apply_externals(prepared, providers, self.control_session, self.sessions.reconnecting, actor, progress)
        return plan

    def _record(
        self,
        control: psycopg.Connection[Any],
        prepared: PostgresPrepared,
        connection: psycopg.Connection[Any],
        resources: list[Record],
        keep: list[str],
        fingerprints: dict[str, list[str | None]] | None = None,
        finished: bool = False,
    ) -> None:
        """The inventory's record of what this apply made (Postgres' spelling of every expression;
        ``fingerprints``: read already, inside the last project transaction). ``finished``: the
        apply succeeded, so the next plan may start from this record without reading it back
        (unless external changes follow, each recorded on its own)."""
        if fingerprints is None:
            fingerprints, _ = planning.applied_fingerprints(connection, prepared)
        stamp = inventory.record(
            control, prepared.namespace, prepared.project, fingerprints, resources, prepared.plan.to_json(), keep=keep,
            stored_rows=prepared.stored_rows, stored_fingerprints=prepared.stored_fingerprints,
        )  # fmt: skip
        stored = prepared.stored_rows
        if finished and stamp and stored is not None and not any(e.pending for e in prepared.externals):
            rows = {ref: stored[ref] for ref in keep if ref in stored}
            rows.update((r.ref(prepared.namespace), r) for r in resources)
            self._recorded[(prepared.namespace, prepared.project)] = Applied(
                fingerprints=dict(fingerprints),  # type: ignore[arg-type]
                resources=rows,
                stamp=stamp,
            )

    def report_drift(self, prepared: PostgresPrepared, actor: str) -> list[str]:
        """Queue a `drifted` event for every resource whose reality moved while its spec did not.

        Returns their refs. Called before correcting the drift (apply) or instead of it
        (observe-only).
        """
        if prepared.changed_specs or prepared.plan.empty:
            return []
        with self._project_lock(prepared.namespace, prepared.project), self.sessions.reconnecting():
            applied_before = inventory.owner_of(self.control_session(), prepared.desired.name) is not None
            return runs.report_drift(self.control_session, prepared, applied_before, actor)

    def record_statuses(self, namespace: str, project: str, states: list[ObjectState], by: str) -> int:
        """Each object's conditions and outputs in the control database (see :mod:`kliv.stacks.statuses`)."""
        with self.sessions.reconnecting():
            return statuses.record(self.sessions.get(inventory.CONTROL_DATABASE), namespace, project, states, by)

    def forget_project(self, namespace: str, project: str, audit: list[AuditEvent] | None = None) -> None:
        """Forget a project (deletionPolicy Retain): its database stays, unclaimed and untouched;
        ``audit`` events are queued in the same control transaction."""
        with self.sessions.reconnecting():
            self._forget(namespace, project, audit or [])

    def _forget(self, namespace: str, project: str, audit: list[AuditEvent]) -> None:
        deleting.forget(self.sessions.get(inventory.CONTROL_DATABASE), namespace, project, audit)

    def plan_deletion(self, namespace: str, project: str, database: str, drop: bool) -> deleting.Deletion:
        """What deleting the Project would do: drop (``drop``, and only if this Project claims the
        database: a Delete never reaches what is not ours) or forget; one change per resource."""
        with self.sessions.reconnecting():
            control = self.sessions.get(inventory.CONTROL_DATABASE)
            applied = inventory.load(control, namespace, project)
            owner = inventory.owner_of(control, database)
        return deleting.plan_deletion(namespace, project, database, applied.resources, owner, drop)

    def apply_deletion(self, deletion: deleting.Deletion, allow_data_loss: bool, actor: str) -> Plan:
        """Carry out a deletion plan; a gated one without consent queues `refused` events and raises
        RefusedError. Each resource's `deleted` event commits with the inventory's removal."""
        namespace, project = deletion.namespace, deletion.project
        with self._project_lock(namespace, project), self.sessions.reconnecting():
            refused = deletion.plan.refused(allow_data_loss)
            if refused:
                runs.refuse(self.control_session, namespace, project, refused, actor)
            audit = events.for_plan(deletion.plan, namespace, project, "applied", actor)
            if deletion.drop:
                self.drop_project(deletion.database, audit)
            else:
                self._forget(namespace, project, audit)
        return deletion.plan

    def drop_project(self, database: str, audit: list[AuditEvent] | None = None) -> None:
        """Drop a database, its roles and its inventory unconditionally (tests, benchmarks, apply_deletion);
        ``audit`` events are queued in the control transaction that removes the inventory."""
        try:
            self._drop(database, audit or [])
        except psycopg.OperationalError:
            self.sessions.close_mine()  # kept connections died with a server restart: once more, afresh
            self._drop(database, audit or [])

    def _drop(self, database: str, audit: list[AuditEvent]) -> None:
        self.sessions.discard(database)
        deleting.drop(self.sessions.get(), self.sessions.get(inventory.CONTROL_DATABASE), database, audit)
