"""Whether a project database's catalog changed since the engine last read it.

Called by the engine: :meth:`Watches.observe` at plan, instead of reading the catalog
(:func:`.catalog.observe`) every time, and :meth:`Watches.verify` once the plan is known;
:meth:`Watches.applying` before an apply changes anything, :meth:`Watches.applied` with
what it left, :meth:`Watches.finished` whichever way it ends. The bootstrap (v4) installs
event triggers that ``NOTIFY kliv_ddl`` at the start and the end of every DDL command in
the database (the start too: a ``CREATE INDEX CONCURRENTLY`` that fails half-way has
committed an invalid index by then).

For each of the :data:`CAPACITY` databases it planned last, the engine keeps one listening
connection, drained at once by a background thread (a listener nobody reads would hold
back the server's notification queue for every database). While no session but the
engine's applies ran DDL there, the last reading of the database, kept up to date by each
apply's own re-reading of what it changed, is what a full reading would give. So a
long-lived engine (the operator's) re-planning 1,000 tables after one edit reads one
table's catalog rows, not all of them. A new `kliv apply` process reads everything, as
before. Before a reading is reused, a "barrier" notification goes from the planning
connection through the listener: notifications arrive in commit order, so once it is back,
everything committed before the plan began has been heard.

The reading is not reused after DDL from any other session (a person's ``ALTER TABLE``,
another engine or replica), after an apply that did not finish, when the listener began
after the reading did or was lost, when the triggers are missing or disabled (a server
whose admin is not a superuser gets none), or once it is older than :data:`MAX_AGE`. What
no event trigger reports (``REINDEX`` before PostgreSQL 17; DDL a superuser ran with event
triggers off, ``session_replication_role = replica``) is found by the next full reading,
or sooner by :meth:`Watches.verify`: the tables a plan changes are read again and compared
before the plan stands, so an apply never records such a change as its own.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import selectors
import threading
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

import psycopg

from kliv.stacks.postgres.catalog import ObservedDatabase, observe

CHANNEL = "kliv_ddl"
MAX_AGE = 300.0  # seconds: a reading older than this is read again, whatever the notifications say
CAPACITY = 8  # databases watched at once (one listening connection each)
BARRIER_TIMEOUT = 2.0  # seconds to wait for a barrier; then the plan reads in full

_ARMED = (
    "SELECT count(*) = 2 FROM pg_catalog.pg_event_trigger WHERE evtname IN ('kliv_ddl_start', 'kliv_ddl_end') "
    "AND evtenabled IN ('O', 'A') AND evtfoid = to_regprocedure('audit.ddl_changed()')"
)


@dataclasses.dataclass(frozen=True)
class Reading:
    """Which reading of which database a plan started from (``reused``: not read for this plan)."""

    database: str
    generation: int
    reused: bool = False


@dataclasses.dataclass
class _Database:
    observed: ObservedDatabase | None = None  # the last full reading, brought up to date by applies
    started: float = 0.0  # when that reading began (monotonic)
    generation: int = 0  # full readings so far
    armed: bool = False  # the event triggers were there and enabled at the last plan
    changed: bool = False  # DDL from a session not the engine's since ``started``
    listener: psycopg.Connection[Any] | None = None
    since: float = 0.0  # when ``listener`` began listening
    own: set[int] = dataclasses.field(default_factory=set)  # backends of the engine's applies running here
    barriers: dict[str, threading.Event] = dataclasses.field(default_factory=dict)


class Watches:
    """One engine's readings of its project databases, and their listeners.

    Plans and applies of one project never run at once (the engine's project lock), so a
    database's reading has one user at a time; the drainer thread is the only user of the
    listening connections once they listen.
    """

    def __init__(self, connect: Callable[[str], psycopg.Connection[Any]]) -> None:
        self._connect = connect
        self._databases: collections.OrderedDict[str, _Database] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._retired: list[psycopg.Connection[Any]] = []  # listeners for the drainer to close
        self._wake_r, self._wake_w = os.pipe()
        self._drainer: threading.Thread | None = None
        self._closing = False

    # -- plans -------------------------------------------------------------------------------

    def observe(self, connection: psycopg.Connection[Any]) -> tuple[ObservedDatabase, Reading]:
        """The connected database's catalog: the last reading when it still stands, else read anew.
        The caller may change what it gets (the differ re-keys renames): it is a copy."""
        database = connection.info.dbname
        state = self._watch(database)
        row = connection.execute(_ARMED).fetchone()
        armed = bool(row and row[0])
        heard = armed and state.listener is not None and self._barrier(connection, state)
        with self._lock:
            state.armed = armed
            fresh = time.monotonic() - state.started < MAX_AGE
            if heard and state.observed is not None and not state.changed and fresh and state.since <= state.started:
                return copy(state.observed), Reading(database, state.generation, reused=True)
            state.changed = False  # before reading: a notification during the reading counts
            state.observed = None
            state.generation += 1
            state.started = time.monotonic()
            generation = state.generation
        found = observe(connection)
        if not armed:
            return found, Reading(database, generation)
        with self._lock:
            if state.generation == generation:
                state.observed = found
        return copy(found), Reading(database, generation)

    def verify(
        self,
        connection: psycopg.Connection[Any],
        reading: Reading,
        before: ObservedDatabase,
        tables: Collection[str] | None,
    ) -> bool:
        """Whether the ``tables`` a plan changes (None: any) are, read again now, as the reused reading
        ``before`` has them; if not, the reading is dropped (the caller plans again, reading all)."""
        if not reading.reused or (tables is not None and not tables):
            return True
        if tables is not None:
            now = observe(connection, tables)
            kept = {name: before.tables.get(name) for name in tables}
            policies = {key: value for key, value in before.policies.items() if key[0] in tables}
            if (now.bootstrap, now.enums, {name: now.tables.get(name) for name in tables}, now.policies) == (
                before.bootstrap,
                before.enums,
                kept,
                policies,
            ):
                return True
        with self._lock:
            state = self._databases.get(reading.database)
            if state is not None:
                state.observed = None
        return False

    # -- applies -----------------------------------------------------------------------------

    def applying(self, connection: psycopg.Connection[Any]) -> None:
        """An apply is about to change the database through ``connection``: its DDL is the engine's
        until :meth:`finished`, and nothing is reused until it says what it left."""
        with self._lock:
            state = self._databases.get(connection.info.dbname)
            if state is not None:
                state.own.add(connection.info.backend_pid)
                state.observed = None

    def applied(self, observed: ObservedDatabase, reading: Reading) -> None:
        """What an apply left: its re-reading of what it changed, the rest as the plan read it (so
        ``started`` stays); kept only if nothing read the database anew since the plan's reading."""
        with self._lock:
            state = self._databases.get(reading.database)
            if state is not None and state.armed and state.generation == reading.generation:
                state.observed = copy(observed)

    def finished(self, connection: psycopg.Connection[Any]) -> None:
        """The apply through ``connection`` ended: once its own notifications are heard (a barrier
        behind them), DDL from its backend is no longer the engine's."""
        with self._lock:
            state = self._databases.get(connection.info.dbname)
        if state is None:
            return
        pid = connection.info.backend_pid
        heard = False
        with contextlib.suppress(psycopg.Error):
            heard = state.listener is not None and not connection.broken and self._barrier(connection, state)
        with self._lock:
            state.own.discard(pid)
            if not heard:
                state.observed = None

    def close(self) -> None:
        """Stop the drainer and close the listeners."""
        with self._lock:
            self._closing = True
            drainer, self._drainer = self._drainer, None
        self._wake()
        if drainer is not None:
            drainer.join(timeout=5)
        with self._lock:
            for state in self._databases.values():
                if state.listener is not None:
                    self._retired.append(state.listener)
                    state.listener = None
            retired, self._retired = self._retired, []
        for listener in retired:
            listener.close()
        if drainer is None or not drainer.is_alive():
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
            for fd in fds:
                with contextlib.suppress(OSError):
                    if fd >= 0:
                        os.close(fd)

    # -- listening ---------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # closed
            os.write(self._wake_w, b"x")

    def _watch(self, database: str) -> _Database:
        """The database's state, listened to (the least recently planned beyond CAPACITY is not)."""
        with self._lock:
            state = self._databases.setdefault(database, _Database())
            self._databases.move_to_end(database)
            for name, other in list(self._databases.items())[:-CAPACITY]:
                if other.listener is not None:
                    self._retired.append(other.listener)
                del self._databases[name]
            needs_listener = state.listener is None and not self._closing
        if needs_listener:
            try:
                listener = self._connect(database)
                listener.execute(f"LISTEN {CHANNEL}")
            except psycopg.Error:
                return state  # not watched: every plan reads in full
            with self._lock:
                state.listener, state.since = listener, time.monotonic()
            self._wake()
        with self._lock:
            if (self._drainer is None or not self._drainer.is_alive()) and not self._closing:
                self._drainer = threading.Thread(target=self._drain, name="kliv-catalog-watch", daemon=True)
                self._drainer.start()
        return state

    def _barrier(self, connection: psycopg.Connection[Any], state: _Database) -> bool:
        """Send a notification from ``connection`` and wait for the listener to hear it."""
        token = f"barrier:{uuid.uuid4().hex}"
        arrived = threading.Event()
        with self._lock:
            if self._drainer is None or not self._drainer.is_alive():
                return False
            state.barriers[token] = arrived
        try:
            connection.execute("SELECT pg_catalog.pg_notify(%s, %s)", [CHANNEL, token])
            return arrived.wait(BARRIER_TIMEOUT)
        finally:
            with self._lock:
                state.barriers.pop(token, None)

    def _drain(self) -> None:
        """Read every listener as soon as it has something (selectors: a busy process has file
        descriptors past select()'s 1,024)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ)
            registered: dict[psycopg.Connection[Any], int] = {}
            while True:
                with self._lock:
                    if self._closing:
                        return
                    retired, self._retired = self._retired, []
                    listening = {s.listener: s for s in self._databases.values() if s.listener is not None}
                for listener in [*retired, *(c for c in registered if c not in listening)]:
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        selector.unregister(registered.pop(listener))
                    if listener in retired:
                        listener.close()
                for listener in listening:
                    if listener not in registered:
                        try:
                            registered[listener] = listener.pgconn.socket
                            selector.register(registered[listener], selectors.EVENT_READ, listener)
                        except (psycopg.Error, ValueError, OSError):
                            registered.pop(listener, None)
                            self._lost(listener, listening[listener])
                for key, _ in selector.select(timeout=1.0):
                    if key.data is None:
                        os.read(self._wake_r, 512)
                    elif key.data in listening:
                        self._receive(key.data, listening[key.data])

    def _receive(self, listener: psycopg.Connection[Any], state: _Database) -> None:
        try:
            listener.pgconn.consume_input()
            while (notify := listener.pgconn.notifies()) is not None:
                payload = notify.extra.decode()
                with self._lock:
                    arrived = state.barriers.get(payload)
                    if arrived is not None:
                        arrived.set()
                    elif not payload.startswith("barrier:") and notify.be_pid not in state.own:
                        state.changed = True
        except psycopg.Error:
            self._lost(listener, state)

    def _lost(self, listener: psycopg.Connection[Any], state: _Database) -> None:
        """Nothing ``listener`` heard can be trusted any more; the next plan listens anew."""
        with self._lock:
            if state.listener is listener:
                state.listener, state.observed = None, None
            self._retired.append(listener)
        self._wake()


def copy(observed: ObservedDatabase) -> ObservedDatabase:
    """A copy whose maps may be changed without changing ``observed``'s (its tables are never
    changed: the differ edits copies, :meth:`~.catalog.ObservedTable.editable`)."""
    return ObservedDatabase(
        observed.exists,
        observed.bootstrap,
        dict(observed.enums),
        dict(observed.tables),
        dict(observed.policies),
        dict(observed.functions),
        dict(observed.triggers),
    )
