"""Running a plan's SQL, phase by phase, knowing at every point what has committed.

Called by the native engine (:mod:`.engine`), which decides what to record and
audit. The phases (:class:`~kliv.stacks.plans.Step`): ``server`` statements on
the admin connection, ``prepare`` statements each committed alone, the
``database`` statements in one transaction, ``online`` index builds each alone.
A failure in the database transaction changes nothing; a failure anywhere
else may come after a partial change, and :class:`Progress` says exactly which
(DESIGN.md, "Failures are whole": exit 4, never "fix the spec" when the cause
is elsewhere). An online build that fails leaves an invalid index behind: it is
dropped before the error is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from kliv.stacks.errors import ApplyFailedError
from kliv.stacks.plans import Step
from kliv.stacks.postgres.naming import quote
from kliv.stacks.runs import Progress

LOCK_TIMEOUT = "10s"
IDLE_TIMEOUT = "60s"

Owned = tuple[Step, str]  # a step and the ref of the change it belongs to


def execute(connection: psycopg.Connection[Any], sql: str, rolled_back: bool) -> None:
    """One statement; a failure becomes ApplyFailedError naming it and Postgres' reason."""
    try:
        connection.execute(sql)
    except psycopg.Error as exc:
        diag = exc.diag
        reason = diag.message_primary or str(exc).strip()
        if diag.message_detail:
            reason += f" ({diag.message_detail})"
        raise ApplyFailedError(sql, reason, rolled_back, sqlstate=exc.sqlstate or "") from None


def in_transaction(
    connection: psycopg.Connection[Any],
    statements: list[str],
    before_commit: Callable[[psycopg.Connection[Any]], None] | None = None,
) -> None:
    """Run ``statements`` in one transaction, pipelined (no round trip per statement).

    A pipeline reports the first error without saying which statement caused it:
    after a failure (already rolled back) the statements are replayed one by one in a
    transaction that always rolls back, to name the culprit.
    """
    if not statements and before_commit is None:
        return
    try:
        with connection.pipeline(), connection.transaction():
            # An application transaction holding a table must not stall the apply, nor
            # (queued behind our ALTER) every reader of that table: give up, roll back.
            connection.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            # A stalled apply (its process frozen) must not hold its locks, or the relay's
            # queue of this project's events, for longer than this.
            connection.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{IDLE_TIMEOUT}'")
            for sql in statements:
                connection.execute(sql)
            if before_commit is not None:
                before_commit(connection)
    except psycopg.Error as exc:
        if connection.closed or connection.broken:
            raise ApplyFailedError(
                "COMMIT", "the connection to the project database was lost", sqlstate=exc.sqlstate or "08006"
            ) from None
        with connection.transaction(force_rollback=True):
            for sql in statements:
                execute(connection, sql, rolled_back=True)
        # Every statement passed on its own: the failure came at commit (a deferred
        # foreign key) or from recording the result.
        raise ApplyFailedError("COMMIT", str(exc).strip(), sqlstate=exc.sqlstate or "") from None


def server_phase(admin: psycopg.Connection[Any], steps: list[Owned], progress: Progress) -> None:
    """CREATE DATABASE (alone, outside a transaction), then the roles and grants in one transaction."""
    for step, ref in steps:
        if not step.transactional:
            execute(admin, step.sql, rolled_back=False)
            progress.add(f"{ref}: {step.sql}")
    transactional = [step.sql for step, _ in steps if step.transactional]
    try:
        in_transaction(admin, transactional)
    except ApplyFailedError as exc:
        raise progress.failure(exc) from None
    for step, ref in steps:
        if step.transactional:
            progress.add(f"{ref}: {step.sql}")


def single_steps(connection: psycopg.Connection[Any], steps: list[Owned], progress: Progress) -> None:
    """``prepare`` or ``online`` steps, each committed alone: a failure may follow earlier ones."""
    for step, ref in steps:
        try:
            execute(connection, step.sql, rolled_back=False)
        except ApplyFailedError as exc:
            if step.sql.startswith(("CREATE INDEX CONCURRENTLY", "CREATE UNIQUE INDEX CONCURRENTLY")):
                _drop_invalid_index(connection, step.sql)
            raise progress.failure(exc) from None
        progress.add(f"{ref}: {step.sql}")


def _drop_invalid_index(connection: psycopg.Connection[Any], create: str) -> None:
    """A failed concurrent build leaves the index behind, invalid: remove it (nothing half-made stays)."""
    quoted = create.split(" CONCURRENTLY ", 1)[1].split(" ON ", 1)[0]
    name = quoted[1:-1].replace('""', '"')
    row = connection.execute(
        "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname = %s",
        [name],
    ).fetchone()
    if row and row[0]:
        connection.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(name)}")
