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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg

from kliv.specs import ProjectSpecs
from kliv.stacks import events, registry, statuses
from kliv.stacks.contract import Observation, Provider, Record
from kliv.stacks.engines import Prepared
from kliv.stacks.errors import (
    AlreadyExistsError,
    ApplyFailedError,
    ConflictError,
    ExternalFailedError,
    PlanRefusedError,
    RefusedError,
    UnavailableError,
)
from kliv.stacks.events import AuditEvent, mask
from kliv.stacks.hashing import spec_hash
from kliv.stacks.plans import Change, Plan, Precondition
from kliv.stacks.postgres import applying, deleting, inventory, locks, sessions
from kliv.stacks.postgres.catalog import ObservedDatabase, observe
from kliv.stacks.postgres.desired import DatabaseState, desired_state, outputs
from kliv.stacks.postgres.diffing import ServerState, diff
from kliv.stacks.statuses import ObjectState

if TYPE_CHECKING:
    from kliv.stacks.providers import ProviderOptions

PRECONDITION_TIMEOUT = "60s"


@dataclasses.dataclass
class PostgresPrepared(Prepared):
    """A plan of the native engine: the neutral one, plus the desired database and records."""

    desired: DatabaseState = dataclasses.field(kw_only=True)
    resources: list[Record] = dataclasses.field(kw_only=True)  # the inventory's records once applied
    stamp: str | None = None  # the inventory's record of the last apply, as this plan saw it
    lock_table: locks.LockTable | None = None  # the server's, when planned
    lock_budget: int | None = None  # --split: locks per transaction; None: one transaction
    observed: ObservedDatabase | None = None  # the catalog as this plan read it
    # The tables this plan's changes reach (read again after applying, the rest reused from
    # ``observed``); None: every table (a change that may reach any, such as the bootstrap).
    touched: frozenset[str] | None = None


class PostgresEngine:
    """Plans and applies projects on the Postgres server at ``admin_url``."""

    # Project-database connections each thread keeps besides the admin and control ones.
    KEPT_PROJECT_SESSIONS = 2

    def __init__(self, admin_url: str, application_name: str = "kliv", options: ProviderOptions | None = None) -> None:
        """``options``: what the bucket and secret providers need; without them only the kinds
        that need none (email templates) are planned beside the database."""
        self.admin_url = admin_url
        self.application_name = application_name
        self.providers: list[Provider] = []
        self.use(options)
        # Autocommit connections kept per thread and database: a long-lived caller (the
        # operator, a benchmark loop) pays for connecting once, and projects reconciled in
        # different threads never share a connection. Transactions use connection.transaction().
        self._local = threading.local()
        self._all_sessions: list[dict[str | None, psycopg.Connection[Any]]] = []
        self._registry_lock = threading.Lock()
        # One plan or apply at a time per project; different projects run in parallel.
        self._project_locks: dict[tuple[str, str], threading.RLock] = {}
        # CREATE DATABASE copies template1: one at a time on a server.
        self._server_lock = threading.Lock()

    @property
    def _sessions(self) -> dict[str | None, psycopg.Connection[Any]]:
        sessions: dict[str | None, psycopg.Connection[Any]] | None = getattr(self._local, "sessions", None)
        if sessions is None:
            sessions = self._local.sessions = {}
            with self._registry_lock:
                self._all_sessions.append(sessions)
        return sessions

    def _project_lock(self, namespace: str, project: str) -> threading.RLock:
        with self._registry_lock:
            return self._project_locks.setdefault((namespace, project), threading.RLock())

    @contextlib.contextmanager
    def _reconnecting(self) -> Iterator[None]:
        """Turn a lost server into UnavailableError, dropping this thread's dead connections."""
        try:
            yield
        except psycopg.OperationalError as exc:
            self._close_mine()
            raise UnavailableError(
                f"cannot connect to Postgres ({mask(str(exc).strip().splitlines()[0])})",
                "the next attempt reconnects",
            ) from None

    def _close_mine(self) -> None:
        for connection in self._sessions.values():
            connection.close()
        self._sessions.clear()

    def close(self) -> None:
        """Close the connections this engine keeps, in every thread."""
        with self._registry_lock:
            for sessions in self._all_sessions:
                for connection in sessions.values():
                    connection.close()
                sessions.clear()

    def __enter__(self) -> PostgresEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def use(self, options: ProviderOptions | None) -> None:
        """Plan and apply with the providers of every registered kind, built from ``options``."""
        wiring = registry.Wiring(options, self.control_session, self.database_session)
        self.providers = registry.providers(wiring)

    def _provider(self, kind: str) -> Provider:
        return next(p for p in self.providers if p.kind == kind)

    def _session(self, database: str | None = None) -> psycopg.Connection[Any]:
        """A kept autocommit connection to ``database`` (None: the admin database)."""
        sessions = self._sessions
        connection = sessions.pop(database, None)  # re-inserted last: most recently used
        if connection is None or connection.closed or connection.broken:
            if database == inventory.CONTROL_DATABASE:
                connection = self._control()
            else:
                connection = self._connect(database, autocommit=True)
        sessions[database] = connection
        self._evict_project_sessions(sessions)
        return connection

    def _evict_project_sessions(self, sessions: dict[str | None, psycopg.Connection[Any]]) -> None:
        # Without a bound, every worker thread would keep a connection to every project
        # database it ever served: 6 threads x 100 projects exhausted max_connections.
        projects = [name for name in sessions if name not in (None, inventory.CONTROL_DATABASE)]
        for name in projects[: -self.KEPT_PROJECT_SESSIONS]:
            sessions.pop(name).close()

    def _connect(self, database: str | None = None, autocommit: bool = False) -> psycopg.Connection[Any]:
        try:
            return sessions.connect(
                self.admin_url,
                database,
                autocommit=autocommit,
                application_name=self.application_name,
                connect_timeout=10,
            )
        except psycopg.Error as exc:
            reason = mask(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
            if isinstance(exc, psycopg.ProgrammingError):
                reason = "the connection string is malformed"  # its text may quote the password
            raise UnavailableError(
                f"cannot connect to Postgres ({exc.__class__.__name__}: {reason})",
                "check KLIV_DATABASE_URL, or run `kliv up` to start the embedded server",
            ) from None

    def control_session(self) -> psycopg.Connection[Any]:
        """This thread's autocommit connection to the control database (for providers)."""
        return self._session(inventory.CONTROL_DATABASE)

    def database_session(self, database: str) -> psycopg.Connection[Any] | None:
        """This thread's autocommit connection to a project database; None while it does not exist."""
        found = (
            self._session(inventory.CONTROL_DATABASE)
            .execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
            .fetchone()
        )
        return self._session(database) if found else None

    def admin_session(self) -> psycopg.Connection[Any]:
        """This thread's autocommit admin connection to the server (roles are cluster-wide)."""
        return self._session()

    # -- plan ----------------------------------------------------------------------------------

    def _control(self) -> psycopg.Connection[Any]:
        """A connection to the control-plane database, creating it and its tables on first use."""
        try:
            control = self._connect(inventory.CONTROL_DATABASE, autocommit=True)
        except UnavailableError as exc:
            if "does not exist" not in exc.message:
                raise
            with self._connect(autocommit=True) as admin:
                inventory.ensure(admin)
            control = self._connect(inventory.CONTROL_DATABASE, autocommit=True)
        if not inventory.has_schema(control):
            inventory.ensure_schema(control)
        return control

    def plan(self, group: ProjectSpecs, split: bool = False) -> PostgresPrepared:
        """``split``: consent to apply in several transactions when one would not fit the server's lock
        table (DESIGN.md, "Failures are whole"); without it such a plan is refused (PlanRefusedError)."""
        with self._project_lock(group.namespace, group.name), self._reconnecting():
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
        control = self._session(inventory.CONTROL_DATABASE)
        # pg_database and pg_roles are shared catalogs: readable from the control database too.
        row = control.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %s), "
            "ARRAY(SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)), "
            "(SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            " WHERE d.datname = %s AND s.setrole = 0), "
            "(SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
            " WHERE r.rolname = %s AND s.setdatabase = 0), "
            f"{locks.SETTINGS}",
            [desired.name, desired.all_roles, desired.name, desired.authenticator],
        ).fetchone()
        assert row is not None
        lock_table = locks.LockTable.from_settings(tuple(row[4]))
        settings = dict(item.split("=", 1) for item in row[2] or [] if "=" in item)
        role_settings = dict(item.split("=", 1) for item in row[3] or [] if "=" in item)
        server = ServerState(bool(row[0]), set(row[1]), settings, role_settings)
        owner = inventory.owner_of(control, desired.name)
        if owner not in (None, (group.namespace, group.name)):
            raise AlreadyExistsError(
                f"database `{desired.name}` is already claimed by Project {owner[0]}/{owner[1]}",
                "give this Project another `spec.database.name`",
            )
        if owner is None and server.existing_roles:
            raise AlreadyExistsError(
                f"roles {', '.join(sorted(server.existing_roles))} exist but no kliv Project claims them; "
                "kliv never takes roles over",
                "choose another `spec.database.name`, or drop the roles",
            )
        if owner is None and server.database_exists:
            raise AlreadyExistsError(
                f"database `{desired.name}` exists but no kliv Project manages it; kliv never takes one over",
                "choose another `spec.database.name`, or drop or rename the existing database",
            )
        applied = inventory.load(control, group.namespace, group.name)
        observed = ObservedDatabase(False)
        if server.database_exists:
            observed = observe(self._session(desired.name))
        plan = diff(desired, observed, server, applied)
        plan.not_supported = {
            spec.resource.ref: str(kind.not_supported)
            for spec in group
            if (kind := registry.BY_NAME.get(spec.resource.KIND)) is not None and kind.not_supported
        }
        for check in plan.preconditions:
            connection = self._session(desired.name)
            try:
                with connection.transaction():
                    # A plan reads a table's rows at most this long: it may run on an untrusted change.
                    connection.execute(f"SET LOCAL statement_timeout = '{PRECONDITION_TIMEOUT}'")
                    row = connection.execute(check.sql).fetchone()
            except psycopg.OperationalError as exc:
                if not isinstance(exc, psycopg.errors.QueryCanceled):
                    raise
                _unchecked(plan, check)  # too many rows to check in time: the plan says so, the apply will tell
                continue
            except psycopg.Error:
                _unchecked(plan, check)  # a predicate over a column this plan adds
                continue
            if row and row[0]:
                raise PlanRefusedError(f"{check.resource}: {check.message}", check.hint)
        in_database: list[Observation] = []
        externals: list[Observation] = []
        for provider in self.providers:
            of_kind = {ref: r for ref, r in applied.resources.items() if r.kind == provider.kind}
            (in_database if provider.in_database else externals).extend(provider.observe(group, of_kind))
        observations = in_database + externals
        plan.changes += [o.change for o in observations if o.problem is None]
        resources = _resources(group, desired)
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
            touched=_touched(plan, desired, applied.resources),
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
        with self._project_lock(prepared.namespace, prepared.project), self._reconnecting():
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
        control = self._session(inventory.CONTROL_DATABASE)
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
                inventory.project_unlock(self._session(inventory.CONTROL_DATABASE), namespace, project)

    def _apply_locked(self, prepared: PostgresPrepared, allow_data_loss: bool, actor: str) -> Plan:
        plan = prepared.plan
        namespace, project = prepared.namespace, prepared.project
        control = self._session(inventory.CONTROL_DATABASE)
        refused = plan.refused(allow_data_loss)
        if refused:
            refusals = [events.build(c, namespace, project, "refused", actor) for c in refused]
            with control.transaction():
                inventory.enqueue(control, namespace, project, refusals)
            raise RefusedError(refused)
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
        changed = {c.resource for c in plan.changes if c.action != "noop"} | later
        applied += [
            events.build(
                Change(ref, "update", "safe", ["spec changed; reality needed no change"], []),
                namespace,
                project,
                "applied",
                actor,
            )
            for ref in prepared.changed_specs
            if ref not in changed
        ]

        recorded = [r for r in prepared.resources if r.ref(namespace) not in later]

        owned = plan.owned_steps()
        building = {c.resource for c in online.changes}
        database = [o for o in owned if o[0].phase == "database"]
        # --split: several transactions, each within the lock budget; otherwise one.
        batches = locks.chunks(database, prepared.lock_budget) if prepared.lock_budget else [database]
        batches = batches or [[]]
        last_batch = {ref: index for index, batch in enumerate(batches) for _, ref in batch}
        progress = applying.Progress()
        done: set[str] = set()  # changes whose `applied` event is queued
        last_xact: list[str] = []  # of the last (or only) project transaction
        seen: list[dict[str, list[str | None]]] = []  # the fingerprints the last pending record held
        committed = False  # every project transaction

        def pending_record(connection: psycopg.Connection[Any]) -> dict[str, Any]:
            # A change still to be built online is recorded with no spec hash: should the process
            # stop before its build and its event, the next plan sees it as changed and audits it.
            rows = [dataclasses.replace(r, spec_hash="") if r.ref(namespace) in building else r for r in recorded]
            fingerprints = self._fingerprints(connection, prepared)
            if not building:
                seen[:] = [fingerprints]  # what the final record holds too, unless an online build follows
            return {
                "fingerprints": fingerprints,
                "resources": [r.to_json() for r in rows],
                "keep": sorted(later),
            }

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
                    applying.server_phase(self._session(), server, progress)
            connection = self._session(desired.name)
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
            self._record(control, prepared, connection, recorded, sorted(later), seen[-1] if seen else None)
        except (ApplyFailedError, psycopg.Error) as exc:
            failure = progress.failure(
                exc
                if isinstance(exc, ApplyFailedError)
                else ApplyFailedError(
                    "(apply)", "the database connection failed", rolled_back=False, sqlstate=exc.sqlstate or ""
                )
            )
            for name, kept in list(self._sessions.items()):
                if kept.broken or kept.closed:
                    del self._sessions[name]
            control = self._session(inventory.CONTROL_DATABASE)
            if committed:
                # The database phase stands (an online build failed after it): record it. After a
                # --split failure half-way the record stays as it was: the next plan recomputes
                # from the catalog (and still knows the tables it was to drop).
                with contextlib.suppress(psycopg.Error):
                    self._record(control, prepared, self._session(desired.name), recorded, sorted(later))
            # Events say what failed, never Postgres' message: it can quote row data.
            failed = Plan(plan.project, [c for c in plan.changes if c.resource not in done])
            failures = events.for_plan(failed, namespace, project, "failed", actor, error=failure.public)
            with control.transaction():
                inventory.enqueue(control, namespace, project, failures)
            raise failure from None
        self._apply_externals(prepared, actor, progress)
        return plan

    def _apply_externals(self, prepared: PostgresPrepared, actor: str, progress: applying.Progress) -> None:
        """Buckets and secrets, once the database is done: each made and recorded (with its event)
        in one control-database transaction.

        For the postgres secret store that makes the new version, its inventory row and
        its audit event one atomic commit. For an API call (S3, Secrets Manager) a crash
        between the call and the commit is caught up by the next apply: the inventory
        still holds the old spec hash, so the resource is re-planned (every write is
        idempotent) and audited then. One failure does not stop the others; the first
        is raised at the end.
        """
        namespace, project = prepared.namespace, prepared.project
        failures: list[ExternalFailedError] = []
        for external in (e for e in prepared.externals if e.pending):
            change = external.change
            provider = self._provider(change.resource.split("/", 1)[0])
            try:
                with self._reconnecting():
                    control = self._session(inventory.CONTROL_DATABASE)
                    with control.transaction():
                        external.outputs = provider.apply(change.resource, change)
                        event = events.build(change, namespace, project, "applied", actor)
                        inventory.put_resource(control, namespace, project, change.resource, external.record, [event])
                progress.add(change.resource)
            except Exception as exc:
                failure = ExternalFailedError.wrap(change.resource, exc)
                failures.append(failure)
                prepared.failures[change.resource] = failure
                event = events.build(change, namespace, project, "failed", actor, error=failure.public)
                with self._reconnecting():
                    control = self._session(inventory.CONTROL_DATABASE)
                    with control.transaction():
                        inventory.enqueue(control, namespace, project, [event])
        if failures:
            first = failures[0]
            raise ExternalFailedError(
                first.resource, first.reason, first.hint, first.temporary, tuple(progress.committed)
            )

    def _record(
        self,
        control: psycopg.Connection[Any],
        prepared: PostgresPrepared,
        connection: psycopg.Connection[Any],
        resources: list[Record],
        keep: list[str],
        fingerprints: dict[str, list[str | None]] | None = None,
    ) -> None:
        """The inventory's record of what this apply made (Postgres' spelling of every expression;
        ``fingerprints``: read already, inside the last project transaction)."""
        if fingerprints is None:
            fingerprints = self._fingerprints(connection, prepared)
        inventory.record(
            control, prepared.namespace, prepared.project, fingerprints, resources, prepared.plan.to_json(), keep=keep
        )

    @staticmethod
    def _fingerprints(connection: psycopg.Connection[Any], prepared: PostgresPrepared) -> dict[str, list[str | None]]:
        """The spec's text and Postgres' stored form of every expression, as applied: only the tables
        the plan reached are read again (at 1,000 tables one added column reads one)."""
        touched, before = prepared.touched, prepared.observed
        if touched is None or before is None:
            found = observe(connection)
        else:
            found = before.refreshed(observe(connection, touched), touched)
        observed = found.fingerprints()
        return {key: [text, observed.get(key)] for key, text in prepared.desired.fingerprints().items()}

    def report_drift(self, prepared: PostgresPrepared, actor: str) -> list[str]:
        """Queue a `drifted` event for every resource whose reality moved while its spec did not.

        Returns their refs. Called before correcting the drift (apply) or instead of it
        (observe-only).
        """
        if prepared.changed_specs:
            return []
        drifted = [c for c in prepared.plan.changes if c.action != "noop"]
        if not drifted:
            return []
        with self._project_lock(prepared.namespace, prepared.project), self._reconnecting():
            control = self._session(inventory.CONTROL_DATABASE)
            if inventory.owner_of(control, prepared.desired.name) is None:
                return []  # never applied: nothing can have drifted
            found = [events.build(c, prepared.namespace, prepared.project, "drifted", actor) for c in drifted]
            with control.transaction():
                inventory.enqueue(control, prepared.namespace, prepared.project, found)
        return [c.resource for c in drifted]

    def record_statuses(self, namespace: str, project: str, states: list[ObjectState], by: str) -> int:
        """Each object's conditions and outputs in the control database (see :mod:`kliv.stacks.statuses`)."""
        with self._reconnecting():
            return statuses.record(self._session(inventory.CONTROL_DATABASE), namespace, project, states, by)

    def forget_project(self, namespace: str, project: str, audit: list[AuditEvent] | None = None) -> None:
        """Forget a project (deletionPolicy Retain): its database stays, unclaimed and untouched;
        ``audit`` events are queued in the same control transaction."""
        with self._reconnecting():
            self._forget(namespace, project, audit or [])

    def _forget(self, namespace: str, project: str, audit: list[AuditEvent]) -> None:
        control = self._session(inventory.CONTROL_DATABASE)
        with control.transaction():
            control.execute(
                "DELETE FROM inventory.resources WHERE namespace = %s AND project = %s", [namespace, project]
            )
            control.execute("DELETE FROM inventory.projects WHERE namespace = %s AND name = %s", [namespace, project])
            inventory.enqueue(control, namespace, project, audit)

    def plan_deletion(self, namespace: str, project: str, database: str, drop: bool) -> deleting.Deletion:
        """What deleting the Project would do: drop (``drop``, and only if this Project claims the
        database: a Delete never reaches what is not ours) or forget; one change per resource."""
        with self._reconnecting():
            control = self._session(inventory.CONTROL_DATABASE)
            applied = inventory.load(control, namespace, project)
            owner = inventory.owner_of(control, database)
        return deleting.plan_deletion(namespace, project, database, applied.resources, owner, drop)

    def apply_deletion(self, deletion: deleting.Deletion, allow_data_loss: bool, actor: str) -> Plan:
        """Carry out a deletion plan; a gated one without consent queues `refused` events and raises
        RefusedError. Each resource's `deleted` event commits with the inventory's removal."""
        namespace, project = deletion.namespace, deletion.project
        with self._project_lock(namespace, project), self._reconnecting():
            refused = deletion.plan.refused(allow_data_loss)
            if refused:
                control = self._session(inventory.CONTROL_DATABASE)
                with control.transaction():
                    refusals = [events.build(c, namespace, project, "refused", actor) for c in refused]
                    inventory.enqueue(control, namespace, project, refusals)
                raise RefusedError(refused)
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
            self._close_mine()  # kept connections died with a server restart: once more, afresh
            self._drop(database, audit or [])

    def _drop(self, database: str, audit: list[AuditEvent]) -> None:
        from kliv.stacks.postgres import naming

        kept = self._sessions.pop(database, None)
        if kept is not None:
            kept.close()
        admin = self._session()
        # Idempotent: after a crash past this point the next deletion finds nothing to drop and
        # still removes the inventory and queues the events below.
        admin.execute(f"DROP DATABASE IF EXISTS {naming.quote(database)} WITH (FORCE)")
        for suffix in naming.ALL_ROLE_SUFFIXES:
            admin.execute(f"DROP ROLE IF EXISTS {naming.quote(naming.role(database, suffix))}")
        control = self._session(inventory.CONTROL_DATABASE)
        owners = "(SELECT namespace, name FROM inventory.projects WHERE database = %s)"
        with control.transaction():
            owner = inventory.owner_of(control, database)
            control.execute(f"DELETE FROM inventory.resources WHERE (namespace, project) IN {owners}", [database])
            if owner is not None:
                for kind in registry.KINDS:
                    if kind.cleanup:  # what a dropped project's resources leave in the control database
                        control.execute(kind.cleanup, list(owner))
            control.execute("DELETE FROM inventory.projects WHERE database = %s", [database])
            if owner is not None and audit:
                inventory.enqueue(control, owner[0], owner[1], audit)


def _touched(plan: Plan, desired: DatabaseState, applied: dict[str, Record]) -> frozenset[str] | None:
    """The tables a plan's changes reach, or None when one may reach any table: a change of the
    Project (bootstrap, enums, grants) or a dropped table (CASCADE reaches its referrers)."""
    tables = {state.resource: name for name, state in desired.tables.items()}
    policies = {state.resource: table for (table, _), state in desired.policies.items()}
    found: set[str] = set()
    for change in plan.changes:
        if change.action == "noop" or not change.steps:
            continue
        kind = change.resource.split("/", 1)[0]
        before = applied.get(change.resource)
        if kind == "Table" and change.action != "delete" and change.resource in tables:
            found.add(tables[change.resource])
            if before is not None:
                found.add(before.physical)  # a renamed table
        elif kind == "TablePolicy" and change.resource in policies:
            found.add(policies[change.resource])
            if before is not None:
                found.add(before.physical.split(".", 1)[0])  # a policy moved from another table
        elif kind == "TablePolicy" and before is not None:
            found.add(before.physical.split(".", 1)[0])  # a removed policy
        elif kind != "EmailTemplate":  # templates live outside the public schema
            return None
    return frozenset(found)


def _unchecked(plan: Plan, check: Precondition) -> None:
    """The plan no longer claims a check it could not make."""
    for change in plan.changes:
        if change.resource == check.resource:
            change.summary = [check.unchecked if line == check.summary else line for line in change.summary]


def _resources(group: ProjectSpecs, desired: DatabaseState) -> list[Record]:
    """Inventory records for every resource of the project this engine plans itself."""
    records: list[Record] = []
    if group.project is not None:
        project = group.project.resource
        retain = project.spec.deletion_policy == "Retain"
        records.append(Record("Project", project.name, desired.name, spec_hash(project.spec), retain))
    for table in group.tables:
        state = desired.tables[table.resource.table_name]
        records.append(Record("Table", table.resource.name, state.name, state.spec_hash, state.retain))
    for policy in group.policies:
        resource = policy.resource
        physical = f"{resource.spec.table}.{resource.policy_name}"
        records.append(Record("TablePolicy", resource.name, physical, desired.policy_resources[resource.ref], False))
    return records
