"""The control plane's memory: database `kliv` on the admin server.

Records which Project claims which database (so a second claimant is refused,
never merged), and per resource the spec hash, physical name and deletion
policy applied last, plus Postgres' spelling of every expression applied (see
:mod:`.diffing`). Called by the engine; never stored inside a project database.
Resources are identified per project (:class:`~kliv.stacks.refs.Ref`).

The database is the platform's: no login but its owner may connect (its
notifications would name every project). Its layout is versioned: the numbered
migrations of :mod:`.migrations`, which :func:`ensure_schema` applies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import zlib
from typing import Any

import psycopg
from psycopg import sql as pgsql

from kliv.stacks.contract import Record
from kliv.stacks.events import AuditEvent
from kliv.stacks.postgres import migrations
from kliv.stacks.postgres.diffing import Applied
from kliv.stacks.refs import Ref

CONTROL_DATABASE = "kliv"

# The status of each event's project transaction. NULL from pg_xact_status means the
# transaction is older than the status Postgres still keeps: long finished, and an event
# is only ever queued inside it, so it committed or it was dropped before. An xid at or
# past this server's next one comes from another cluster (a restored control database):
# it cannot be checked, so it is published rather than lost.
XACT_STATUS = """
CASE WHEN xact IS NULL THEN 'committed'
     WHEN xact >= pg_snapshot_xmax(pg_current_snapshot()) THEN 'foreign'
     ELSE coalesce(pg_xact_status(xact), 'committed') END
"""


class AlreadyClaimedError(Exception):
    """A physical name belongs to another object."""


def ensure(admin: psycopg.Connection[Any]) -> None:
    """Create database `kliv` and its tables if missing (admin connection in autocommit)."""
    exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [CONTROL_DATABASE]).fetchone()
    if exists is None:
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another process won the race
            admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(CONTROL_DATABASE)))


def has_schema(control: psycopg.Connection[Any]) -> bool:
    """Whether the control database has every migration (older ones get ensure_schema())."""
    return migrations.current(control) == migrations.LATEST


def ensure_schema(control: psycopg.Connection[Any]) -> None:
    """Bring the control database to the newest version, once per server (see :mod:`.migrations`)."""
    migrations.migrate(control)


def claim(control: psycopg.Connection[Any], namespace: str, name: str, database: str) -> None:
    """Record that Project namespace/name owns ``database``; refuse if another project does."""
    with control.transaction():
        row = control.execute(
            "SELECT namespace, name FROM inventory.projects WHERE database = %s", [database]
        ).fetchone()
        if row is not None and tuple(row) != (namespace, name):
            raise AlreadyClaimedError(f"database `{database}` is already claimed by Project {row[0]}/{row[1]}")
        control.execute(
            "INSERT INTO inventory.projects (namespace, name, database) VALUES (%s, %s, %s) "
            "ON CONFLICT (namespace, name) DO UPDATE SET database = EXCLUDED.database",
            [namespace, name, database],
        )


def owner_of(control: psycopg.Connection[Any], database: str) -> tuple[str, str] | None:
    row = control.execute("SELECT namespace, name FROM inventory.projects WHERE database = %s", [database]).fetchone()
    return (row[0], row[1]) if row else None


def claimant(control: psycopg.Connection[Any], kind: str, physical: str) -> Ref | None:
    """The resource that claims a physical name (a bucket's), if any."""
    row = control.execute(
        "SELECT namespace, project, name FROM inventory.resources WHERE kind = %s AND physical = %s "
        "ORDER BY applied_at LIMIT 1",
        [kind, physical],
    ).fetchone()
    return Ref(kind, row[0], row[1], row[2]) if row else None


def load(control: psycopg.Connection[Any], namespace: str, project: str, known: Applied | None = None) -> Applied:
    """What was applied last for a project (empty if never); ``known``: what this process recorded
    last, returned (a copy) without reading the rows again while the record is still that one.

    An apply writes its record twice: before its project transaction commits, as a pending
    record tagged with that transaction (:func:`pending`), and after, for good (:func:`record`).
    If it stopped in between, the pending record stands when its transaction committed and is
    ignored when it did not; so the next plan neither rebuilds every expression for want of a
    record nor trusts one of changes that never happened.
    """
    row = control.execute(
        "SELECT fingerprints, applied_at::text, pending_xact IS NOT NULL AND pending_xact < "
        "pg_snapshot_xmax(pg_current_snapshot()) AND coalesce(pg_xact_status(pending_xact), 'committed') = "
        "'committed', pending_record FROM inventory.projects WHERE namespace = %s AND name = %s",
        [namespace, project],
    ).fetchone()
    pending: dict[str, Any] | None = row[3] if row and row[2] else None
    if known is not None and row is not None and pending is None and not row[0] and row[1] == known.stamp:
        return dataclasses.replace(known, fingerprints=dict(known.fingerprints), resources=dict(known.resources))
    # Written by a kliv from before fingerprints were kept in buckets: the column holds them,
    # and any buckets are older than that write (this kliv empties the column whenever it
    # writes them). The next record moves them.
    legacy = bool(row and row[0])
    fingerprints: dict[str, list[str]] = dict(row[0]) if row and legacy else {}
    if not legacy:
        for (entries,) in control.execute(
            "SELECT entries FROM inventory.fingerprints WHERE namespace = %s AND project = %s", [namespace, project]
        ).fetchall():
            fingerprints.update(entries)
    if pending is not None and "fingerprints" in pending:
        fingerprints = dict(pending["fingerprints"])
    elif pending is not None:  # what changed against the column (written by this kliv)
        for key in pending["fingerprintsRemoved"]:
            fingerprints.pop(key, None)
        fingerprints.update(pending["fingerprintsChanged"])
    applied = Applied(
        fingerprints=fingerprints,
        stamp=row[1] if row else None,
        committed_unrecorded=pending is not None and row is not None and row[1] is None,
        fingerprints_bucketed=not legacy,
    )
    # With a committed pending record, the rows are as they were before that apply: the record
    # says what changed (or, written by an older kliv, every row except those it leaves to their
    # own records: buckets, secrets).
    kept = set(pending["keep"]) if pending else None
    rows = control.execute(
        "SELECT kind, name, spec_hash, physical, retain FROM inventory.resources WHERE namespace = %s AND project = %s",
        [namespace, project],
    ).fetchall()
    records = [Record(kind, name, physical, digest, retain) for kind, name, digest, physical, retain in rows]
    if pending is not None and "resources" in pending:
        records = [r for r in records if r.ref(namespace) in (kept or set())]
        records += [Record.from_json(r) for r in pending["resources"]]
    elif pending is not None:
        removed = set(pending["removed"]) | {Record.from_json(r).ref(namespace) for r in pending["changed"]}
        records = [r for r in records if r.ref(namespace) not in removed]
        records += [Record.from_json(r) for r in pending["changed"]]
    applied.rows_recorded = pending is None
    for r in records:
        applied.resources[r.ref(namespace)] = r
    return applied


def stamp(control: psycopg.Connection[Any], namespace: str, project: str) -> str | None:
    """When the project's last apply was recorded (see :attr:`Applied.stamp`)."""
    row = control.execute(
        "SELECT applied_at::text FROM inventory.projects WHERE namespace = %s AND name = %s", [namespace, project]
    ).fetchone()
    return row[0] if row else None


def project_lock(control: psycopg.Connection[Any], namespace: str, project: str) -> bool:
    """Take the project's apply lock for this session (any process, any replica); False if another holds it."""
    row = control.execute(
        "SELECT pg_try_advisory_lock(hashtext('kliv.apply'), hashtext(%s))", [f"{namespace}/{project}"]
    ).fetchone()
    return bool(row and row[0])


def project_unlock(control: psycopg.Connection[Any], namespace: str, project: str) -> None:
    control.execute("SELECT pg_advisory_unlock(hashtext('kliv.apply'), hashtext(%s))", [f"{namespace}/{project}"])


def pending(
    control: psycopg.Connection[Any], namespace: str, project: str, xact: object, record: dict[str, Any]
) -> None:
    """Note the project transaction about to commit and what :func:`record` will then hold
    (inside the caller's control transaction)."""
    control.execute(
        "UPDATE inventory.projects SET pending_xact = %s, pending_record = %s WHERE namespace = %s AND name = %s",
        [xact, json.dumps(record), namespace, project],
    )


def enqueue(
    control: psycopg.Connection[Any],
    namespace: str,
    project: str,
    events: list[AuditEvent],
    xact: object | None = None,
) -> None:
    """Add events to the outbox (inside the caller's transaction, if any) and wake the relay."""
    if not events:
        return
    with control.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO inventory.outbox (event_id, namespace, project, routing_key, body, xact) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [[e.id, namespace, project, e.routing_key, e.body.decode(), xact] for e in events],
        )
    control.execute("SELECT pg_notify('kliv_outbox', %s)", [f"{namespace}.{project}"])


def record(
    control: psycopg.Connection[Any],
    namespace: str,
    project: str,
    fingerprints: dict[str, list[str | None]],
    resources: list[Record],
    plan: dict[str, Any],
    events: list[AuditEvent] | None = None,
    xact: object | None = None,
    keep: list[str] | None = None,
    stored_rows: dict[str, Record] | None = None,
    stored_fingerprints: dict[str, list[str]] | None = None,
) -> str | None:
    """Make a project's record what was just applied, and queue its events, in one transaction.

    Only rows that changed are written (one added column at 1,000 tables is one row, not 3,001):
    removed resources are deleted, new or changed ones upserted, the rest left alone (their
    ``applied_at`` is when they last changed). ``keep``: refs (``Kind/namespace/name``) whose rows
    stay as they are, for resources applied afterwards, each recorded as it succeeds
    (:func:`put_resource`). ``stored_rows``: the rows as the plan read them (under the project's
    apply lock nobody else writes them), so they need not be read again; ``stored_fingerprints``
    likewise: the fingerprints as the plan read them, so that only the buckets that differ are written.
    Returns the record's stamp (see :attr:`Applied.stamp`).
    """
    with control.transaction():
        enqueue(control, namespace, project, events or [], xact)
        stamp = control.execute(
            "UPDATE inventory.projects SET fingerprints = '{}', last_plan = %s, applied_at = now(), "
            "pending_xact = NULL, pending_record = NULL WHERE namespace = %s AND name = %s RETURNING applied_at::text",
            [json.dumps(plan), namespace, project],
        ).fetchone()
        _record_fingerprints(control, namespace, project, fingerprints, stored_fingerprints)
        if stored_rows is not None:
            stored = {(r.kind, r.name): r.row() for r in stored_rows.values()}
        else:
            stored = {
                (row[0], row[1]): tuple(row[2:])
                for row in control.execute(
                    "SELECT kind, name, spec_hash, physical, retain FROM inventory.resources "
                    "WHERE namespace = %s AND project = %s",
                    [namespace, project],
                ).fetchall()
            }
        kept = {tuple(ref.split("/", 2)[::2]) for ref in keep or []}  # (kind, name)
        wanted = {(r.kind, r.name): r.row() for r in resources}
        gone = [key for key in stored if key not in wanted and key not in kept]
        if gone:
            control.execute(
                "DELETE FROM inventory.resources WHERE namespace = %s AND project = %s "
                "AND (kind, name) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                [namespace, project, [k for k, _ in gone], [n for _, n in gone]],
            )
        changed = [(key, row) for key, row in wanted.items() if stored.get(key) != row]
        if changed:
            with control.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO inventory.resources (namespace, kind, name, project, spec_hash, physical, retain) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (namespace, project, kind, name) DO UPDATE "
                    "SET spec_hash = EXCLUDED.spec_hash, physical = EXCLUDED.physical, retain = EXCLUDED.retain, "
                    "applied_at = now()",
                    [[namespace, kind, name, project, *row] for (kind, name), row in changed],
                )
    return stamp[0] if stamp else None


# Fingerprints are kept in buckets by their key's hash: one changed expression rewrites one
# bucket (about 160 of 10,000 at 1,000 tables), not one value holding all of them.
_BUCKETS = 64


def _bucket(key: str) -> int:
    return zlib.crc32(key.encode()) % _BUCKETS


def _record_fingerprints(
    control: psycopg.Connection[Any],
    namespace: str,
    project: str,
    fingerprints: dict[str, list[str | None]],
    before: dict[str, list[str]] | None,
) -> None:
    """Make the project's buckets hold ``fingerprints``; ``before``: what they held (None: unknown,
    so every bucket is written)."""
    if before is None:
        control.execute(
            "DELETE FROM inventory.fingerprints WHERE namespace = %s AND project = %s", [namespace, project]
        )
        touched = set(range(_BUCKETS))
    else:
        touched = {_bucket(k) for k in before.keys() - fingerprints.keys()}
        touched |= {_bucket(k) for k in changed_fingerprints(before, fingerprints)}
    if not touched:
        return
    buckets: dict[int, dict[str, list[str | None]]] = {b: {} for b in touched}
    for key, value in fingerprints.items():
        if (bucket := _bucket(key)) in buckets:
            buckets[bucket][key] = value
    kept = [[namespace, project, b, json.dumps(entries)] for b, entries in sorted(buckets.items()) if entries]
    empty = sorted(b for b, entries in buckets.items() if not entries)
    if kept:
        with control.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO inventory.fingerprints (namespace, project, bucket, entries) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (namespace, project, bucket) DO UPDATE SET entries = EXCLUDED.entries",
                kept,
            )
    if empty and before is not None:
        control.execute(
            "DELETE FROM inventory.fingerprints WHERE namespace = %s AND project = %s AND bucket = ANY(%s)",
            [namespace, project, empty],
        )


def changed_fingerprints(
    before: dict[str, list[str]], after: dict[str, list[str | None]]
) -> dict[str, list[str | None]]:
    """The entries of ``after`` that ``before`` lacks or holds otherwise."""
    return {key: value for key, value in after.items() if before.get(key) != value}


def put_resource(
    control: psycopg.Connection[Any],
    namespace: str,
    project: str,
    ref: str,
    row: Record | None,
    events: list[AuditEvent],
) -> None:
    """Record one resource (``Kind/namespace/name`` of ``project``) as applied (``row``) or gone (None),
    with its events, in one transaction (the caller's, if one is open)."""
    kind, _, name = ref.split("/", 2)
    with _transaction(control):
        control.execute(
            "DELETE FROM inventory.resources WHERE namespace = %s AND project = %s AND kind = %s AND name = %s",
            [namespace, project, kind, name],
        )
        if row is not None:
            control.execute(
                "INSERT INTO inventory.resources (namespace, kind, name, project, spec_hash, physical, retain) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [namespace, kind, name, project, row.spec_hash, row.physical, row.retain],
            )
        enqueue(control, namespace, project, events)


def _transaction(control: psycopg.Connection[Any]) -> contextlib.AbstractContextManager[Any]:
    """The caller's open transaction, or a new one (a savepoint would cost two round trips)."""
    if control.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
        return contextlib.nullcontext()
    return control.transaction()
