"""Whether a project database's catalog changed since the engine last read it.

Called by the engine: :meth:`Watches.observe` at plan, instead of reading the catalog
(:func:`.catalog.observe`) every time; :meth:`Watches.applying` before an apply changes
anything and :meth:`Watches.applied` once it has. The bootstrap (v4) installs event
triggers that ``NOTIFY kliv_ddl`` at the start and the end of every DDL command in the
database (the start too: a ``CREATE INDEX CONCURRENTLY`` that fails half-way has committed
an invalid index by then). Every connection the engine plans or applies with listens
(each thread has its own); while no session but the engine's ran DDL, the last reading of
the database, kept up to date by each apply's own re-reading of what it changed, is what
a full reading would give. So a long-lived engine (the operator's) re-planning 1,000 tables
after one edit reads one table's catalog rows, not all of them. A new `kliv apply` process
reads everything, as before.

The reading is not reused when the triggers are missing or disabled (a server whose
admin is not a superuser gets none), when a notification came from any other session
(a person's ``ALTER TABLE``, another engine or replica), on a connection that began
listening after the reading began (it cannot have heard what came before), or once it
is older than
:data:`MAX_AGE`: a superuser can run DDL with event triggers off
(``session_replication_role = replica``), and that drift is then found within that time.
Notifications are delivered to the client when it next talks to the server: the check
below is that round trip, so DDL committed before a plan starts is always seen by it.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
import weakref
from typing import Any

import psycopg

from kliv.stacks.postgres.catalog import ObservedDatabase, observe

CHANNEL = "kliv_ddl"
MAX_AGE = 300.0  # seconds: a reading older than this is read again, whatever the notifications say

_ARMED = (
    "SELECT count(*) = 2 FROM pg_catalog.pg_event_trigger "
    "WHERE evtname IN ('kliv_ddl_start', 'kliv_ddl_end') AND evtenabled = 'O'"
)


@dataclasses.dataclass(frozen=True)
class Reading:
    """Which reading of which database a plan started from: an apply may keep what it left only
    if nothing read that database anew since."""

    database: str
    generation: int


@dataclasses.dataclass
class _Database:
    observed: ObservedDatabase | None = None  # the last full reading, brought up to date by applies
    started: float = 0.0  # when that reading began (monotonic)
    generation: int = 0  # full readings so far
    armed: bool = False  # the event triggers were there and enabled at the last plan
    changed: bool = False  # DDL from a session not the engine's since ``started``


class Watches:
    """One engine's readings of its project databases, and the connections that listen for them.

    Plans and applies of one project never run at once (the engine's project lock), so a
    database's reading has one user at a time; notifications arrive on any listening
    connection, in whichever thread next uses it.
    """

    def __init__(self) -> None:
        self._databases: dict[str, _Database] = {}
        # connection -> (database, when it began listening)
        self._listening: weakref.WeakKeyDictionary[psycopg.Connection[Any], tuple[str, float]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def observe(self, connection: psycopg.Connection[Any]) -> tuple[ObservedDatabase, Reading]:
        """The connected database's catalog: the last reading when it still stands, else read anew.
        The caller may change what it gets (the differ re-keys renames): it is a copy."""
        database, since = self._listen(connection)
        row = connection.execute(_ARMED).fetchone()  # also the round trip that delivers notifications
        with self._lock:
            state = self._databases.setdefault(database, _Database())
            state.armed = bool(row and row[0])
            fresh = time.monotonic() - state.started < MAX_AGE
            if state.armed and state.observed is not None and not state.changed and fresh and since <= state.started:
                return _copy(state.observed), Reading(database, state.generation)
            state.changed = False  # before reading: a notification during the reading counts
            state.observed = None
            state.generation += 1
            state.started = time.monotonic()
            generation, armed = state.generation, state.armed
        found = observe(connection)
        if not armed:
            return found, Reading(database, generation)
        with self._lock:
            if state.generation == generation:
                state.observed = found
        return _copy(found), Reading(database, generation)

    def applying(self, connection: psycopg.Connection[Any]) -> None:
        """An apply is about to change the database through ``connection``: its DDL is the engine's
        (heard, and ignored, from now on), and until the apply says what it left, whichever way it
        ends, nothing is reused."""
        database, _ = self._listen(connection)
        with self._lock:
            state = self._databases.get(database)
            if state is not None:
                state.observed = None

    def applied(self, observed: ObservedDatabase, reading: Reading) -> None:
        """What an apply left: its re-reading of what it changed, the rest as the plan read it (so
        ``started`` stays); kept only if nothing read the database anew since the plan's reading,
        so that every DDL since then is the engine's or set ``changed``."""
        with self._lock:
            state = self._databases.get(reading.database)
            if state is not None and state.armed and state.generation == reading.generation:
                state.observed = _copy(observed)

    def _listen(self, connection: psycopg.Connection[Any]) -> tuple[str, float]:
        with self._lock:
            found = self._listening.get(connection)
        if found is not None:
            return found
        database = connection.info.dbname
        connection.add_notify_handler(functools.partial(self._notified, database))
        since = time.monotonic()
        with self._lock:  # the engine's own before it runs any DDL through this connection
            self._listening[connection] = (database, since)
        connection.execute(f"LISTEN {CHANNEL}")
        return database, since

    def _notified(self, database: str, notify: psycopg.Notify) -> None:
        if notify.channel != CHANNEL:
            return
        with self._lock:
            # The engine's own DDL: from a backend one of its open connections to this database
            # holds. (A pid outlives its backend only until the connection's next use fails.)
            own = {c.info.backend_pid for c, (d, _) in self._listening.items() if d == database and not c.closed}
            state = self._databases.get(database)
            if state is not None and notify.pid not in own:
                state.changed = True


def _copy(observed: ObservedDatabase) -> ObservedDatabase:
    """A copy whose maps may be changed without changing ``observed``'s (its tables are never
    changed: the differ edits copies, :meth:`~.catalog.ObservedTable.editable`)."""
    return ObservedDatabase(
        observed.exists, observed.bootstrap, dict(observed.enums), dict(observed.tables), dict(observed.policies)
    )
