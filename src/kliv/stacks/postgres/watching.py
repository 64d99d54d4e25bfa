"""Whether a project database's catalog changed since the engine last read it.

Called by the engine: :meth:`Watches.observe` at plan, instead of reading the catalog
(:func:`.catalog.observe`) every time; :meth:`Watches.applying` before an apply changes
anything and :meth:`Watches.applied` once it has. The bootstrap (v4) installs event
triggers that ``NOTIFY kliv_ddl`` at the start and the end of every DDL command in the
database (the start too: a ``CREATE INDEX CONCURRENTLY`` that fails half-way has committed
an invalid index by then). The engine listens on the connection it plans and applies
with; while nothing but that connection ran DDL, its last reading, kept up to date by
the apply's own re-reading of what it changed, is what a full reading would give. So a
long-lived engine (the operator's) re-planning 1,000 tables after one edit reads one
table's catalog rows, not all of them. A new `kliv apply` process reads everything, as before.

The reading is not reused when the triggers are missing or disabled (a server whose
admin is not a superuser gets none), when a notification came from any other session
(a person's ``ALTER TABLE``, another replica), or once it is older than
:data:`MAX_AGE`: a superuser can run DDL with event triggers off
(``session_replication_role = replica``), and that drift is then found within that time.
Notifications are delivered to the client when it next talks to the server: the check
below is that round trip, so DDL committed before a plan starts is always seen by it.
"""

from __future__ import annotations

import dataclasses
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
    """Which reading a plan started from: an apply may keep what it left only on that connection,
    and only if nothing read the catalog anew there in between."""

    pid: int
    generation: int


@dataclasses.dataclass
class _Watch:
    own_pid: int
    observed: ObservedDatabase | None = None
    read_at: float = 0.0
    generation: int = 0  # full readings so far
    armed: bool = False  # the event triggers are there and enabled
    changed: bool = False  # DDL from another session since the last full reading

    def notified(self, notify: psycopg.Notify) -> None:
        if notify.channel == CHANNEL and notify.pid != self.own_pid:
            self.changed = True


class Watches:
    """The last catalog reading of each connection that listens (one engine's, any thread's)."""

    def __init__(self) -> None:
        self._watches: weakref.WeakKeyDictionary[psycopg.Connection[Any], _Watch] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # the map; each connection is used by one thread at a time

    def observe(self, connection: psycopg.Connection[Any]) -> tuple[ObservedDatabase, Reading]:
        """The connected database's catalog: the last reading when it still stands, else read anew.
        The caller may change what it gets (the differ re-keys renames): it is a copy."""
        watch = self._get(connection)
        if watch is None:
            watch = _Watch(connection.info.backend_pid)
            connection.add_notify_handler(watch.notified)
            connection.execute(f"LISTEN {CHANNEL}")  # before reading: DDL after this point is heard
            with self._lock:
                self._watches[connection] = watch
        row = connection.execute(_ARMED).fetchone()  # also the round trip that delivers notifications
        watch.armed = bool(row and row[0])
        fresh = time.monotonic() - watch.read_at < MAX_AGE
        if watch.armed and fresh and not watch.changed and watch.observed is not None:
            return _copy(watch.observed), Reading(watch.own_pid, watch.generation)
        watch.changed = False  # before reading: a notification during the reading counts
        found = observe(connection)
        watch.generation += 1
        watch.read_at = time.monotonic()
        watch.observed = found if watch.armed else None
        return (_copy(found) if watch.armed else found), Reading(watch.own_pid, watch.generation)

    def applying(self, connection: psycopg.Connection[Any]) -> None:
        """An apply is about to change the database through ``connection`` (whose own DDL is not
        heard): until it says what it left, nothing is reused, whichever way it ends."""
        watch = self._get(connection)
        if watch is not None:
            watch.observed = None

    def applied(self, connection: psycopg.Connection[Any], observed: ObservedDatabase, reading: Reading) -> None:
        """What an apply on ``connection`` left: its reading of what it changed, the rest as the plan
        read it (so ``read_at`` stays); kept only if the plan read on this connection and nothing read
        anew since, so that every DDL since ``observed`` is what ``changed`` says."""
        watch = self._get(connection)
        if watch is not None and watch.armed and Reading(watch.own_pid, watch.generation) == reading:
            watch.observed = _copy(observed)

    def _get(self, connection: psycopg.Connection[Any]) -> _Watch | None:
        with self._lock:
            return self._watches.get(connection)


def _copy(observed: ObservedDatabase) -> ObservedDatabase:
    """A copy whose maps may be changed without changing ``observed``'s (its tables are never
    changed: the differ edits copies, :meth:`~.catalog.ObservedTable.editable`)."""
    return ObservedDatabase(
        observed.exists, observed.bootstrap, dict(observed.enums), dict(observed.tables), dict(observed.policies)
    )
