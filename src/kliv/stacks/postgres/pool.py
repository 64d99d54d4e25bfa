"""The connections the native engine keeps: per thread and database, autocommit, reconnected.

Used by :class:`~kliv.stacks.postgres.engine.PostgresEngine` (and through it by the
providers and the CLI). A long-lived caller (the operator, a benchmark loop) pays for
connecting once, and projects reconciled in different threads never share a
connection; transactions use ``connection.transaction()``. The control database is
created, and migrated, on first use.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from kliv.stacks.errors import UnavailableError
from kliv.stacks.events import mask
from kliv.stacks.postgres import inventory, sessions

Sessions = dict[str | None, psycopg.Connection[Any]]  # database (None: the admin one) -> connection


class SessionPool:
    """Kept connections to the server at ``admin_url``."""

    # Project-database connections each thread keeps besides the admin and control ones.
    KEPT_PROJECT_SESSIONS = 2

    def __init__(self, admin_url: str, application_name: str = "kliv") -> None:
        self.admin_url = admin_url
        self.application_name = application_name
        self._local = threading.local()
        self._all: list[Sessions] = []
        self._lock = threading.Lock()

    @property
    def mine(self) -> Sessions:
        """This thread's connections."""
        found: Sessions | None = getattr(self._local, "sessions", None)
        if found is None:
            found = self._local.sessions = {}
            with self._lock:
                self._all.append(found)
        return found

    @contextlib.contextmanager
    def reconnecting(self) -> Iterator[None]:
        """Turn a lost server into UnavailableError, dropping this thread's dead connections."""
        try:
            yield
        except psycopg.OperationalError as exc:
            self.close_mine()
            raise UnavailableError(
                f"cannot connect to Postgres ({mask(str(exc).strip().splitlines()[0])})",
                "the next attempt reconnects",
            ) from None

    def close_mine(self) -> None:
        for connection in self.mine.values():
            connection.close()
        self.mine.clear()

    def forget_broken(self) -> None:
        """Drop this thread's connections that failed (the next use reconnects)."""
        for name, kept in list(self.mine.items()):
            if kept.broken or kept.closed:
                del self.mine[name]

    def discard(self, database: str) -> None:
        """Close this thread's connection to ``database`` (about to be dropped)."""
        kept = self.mine.pop(database, None)
        if kept is not None:
            kept.close()

    def close(self) -> None:
        """Close the connections kept, in every thread."""
        with self._lock:
            for found in self._all:
                for connection in found.values():
                    connection.close()
                found.clear()

    def get(self, database: str | None = None) -> psycopg.Connection[Any]:
        """A kept autocommit connection to ``database`` (None: the admin database)."""
        found = self.mine
        connection = found.pop(database, None)  # re-inserted last: most recently used
        if connection is None or connection.closed or connection.broken:
            if database == inventory.CONTROL_DATABASE:
                connection = self._control()
            else:
                connection = self._connect(database, autocommit=True)
        found[database] = connection
        self._evict_project_sessions(found)
        return connection

    def _evict_project_sessions(self, found: Sessions) -> None:
        # Without a bound, every worker thread would keep a connection to every project
        # database it ever served: 6 threads x 100 projects exhausted max_connections.
        projects = [name for name in found if name not in (None, inventory.CONTROL_DATABASE)]
        for name in projects[: -self.KEPT_PROJECT_SESSIONS]:
            found.pop(name).close()

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
