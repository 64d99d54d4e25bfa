"""Function artifacts, versions and active pointers in the control database (schema ``functions``).

Called by the Function provider (:mod:`.provider`) inside the engine's control-database
transaction, by ``kliv functions`` (rollback, listings) and by ``kliv serve``, which reads
the active versions and follows their changes on the ``kliv_functions`` channel. An
artifact is the module's source, stored once per sha256 (content-addressed: two
functions or versions with the same code share it). A version is an artifact plus the
settings it runs with; ``active`` points at the version served, per function. Nothing
here holds a secret value: a version names the secrets it reads, ``kliv serve`` decrypts
them in memory when it starts the version.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from typing import Any

import psycopg

CHANNEL = "kliv_functions"
RETENTION = "7 days"  # invocations and log lines (DESIGN.md, "Functions")

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS functions;
CREATE TABLE IF NOT EXISTS functions.artifacts (
  sha256 text PRIMARY KEY,
  source text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS functions.versions (
  namespace text NOT NULL,
  project text NOT NULL,
  name text NOT NULL,
  version integer NOT NULL,
  artifact text NOT NULL REFERENCES functions.artifacts (sha256),
  settings jsonb NOT NULL,
  digest text NOT NULL,
  target text NOT NULL,
  external_version text,
  created_at timestamptz NOT NULL DEFAULT now(),
  activated_at timestamptz,  -- when it last became the active version: what "kept" and rollback go by
  PRIMARY KEY (namespace, project, name, version)
);
CREATE TABLE IF NOT EXISTS functions.active (
  namespace text NOT NULL,
  project text NOT NULL,
  name text NOT NULL,
  route text NOT NULL,
  version integer NOT NULL,
  -- A rollback pins `version` until the spec digest differs from `pinned_for`.
  pinned_for text,
  retired_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (namespace, project, name),
  FOREIGN KEY (namespace, project, name, version) REFERENCES functions.versions
);
CREATE UNIQUE INDEX IF NOT EXISTS active_route ON functions.active (namespace, project, route)
  WHERE retired_at IS NULL;
CREATE TABLE IF NOT EXISTS functions.invocations (
  request_id uuid PRIMARY KEY,
  namespace text NOT NULL,
  project text NOT NULL,
  function text NOT NULL,
  version integer NOT NULL,
  method text NOT NULL,
  path text NOT NULL,
  status integer NOT NULL,
  duration_ms double precision NOT NULL,
  cold boolean NOT NULL,
  error text,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS invocations_by_function ON functions.invocations (namespace, project, function, at);
CREATE TABLE IF NOT EXISTS functions.logs (
  position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  namespace text NOT NULL,
  project text NOT NULL,
  function text NOT NULL,
  version integer NOT NULL,
  stream text NOT NULL,
  message text NOT NULL,
  ts timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS logs_by_function ON functions.logs (namespace, project, function, position);
CREATE TABLE IF NOT EXISTS functions.schedule_runs (
  namespace text NOT NULL,
  project text NOT NULL,
  name text NOT NULL,
  due_at timestamptz NOT NULL,
  claimed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (namespace, project, name, due_at)
);
"""

# What a dropped project leaves: its versions and pointers (artifacts are shared and kept).
CLEANUP = (
    "WITH o AS (SELECT %s::text AS ns, %s::text AS p), "
    "a AS (DELETE FROM functions.active USING o WHERE namespace = o.ns AND project = o.p) "
    "DELETE FROM functions.versions USING o WHERE namespace = o.ns AND project = o.p"
)


def sha256(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def digest(sha: str, settings: dict[str, Any]) -> str:
    """What identifies a version: its code and the settings it runs with."""
    text = sha + "\0" + json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class Version:
    """One deployed version (its source is read separately: it can be 1 MiB)."""

    namespace: str
    project: str
    name: str
    version: int
    artifact: str
    settings: dict[str, Any]
    digest: str
    target: str
    external_version: str | None
    created_at: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Active:
    """The version a function serves, and whether a rollback pinned it."""

    namespace: str
    project: str
    name: str
    route: str
    version: int
    pinned_for: str | None
    retired: bool

    @property
    def pinned(self) -> bool:
        return self.pinned_for is not None


_VERSION = "namespace, project, name, version, artifact, settings, digest, target, external_version, created_at"
_ACTIVE = "namespace, project, name, route, version, pinned_for, retired_at IS NOT NULL"


def versions(control: psycopg.Connection[Any], namespace: str, project: str, name: str) -> list[Version]:
    """Every kept version, oldest first."""
    rows = control.execute(
        f"SELECT {_VERSION} FROM functions.versions WHERE namespace = %s AND project = %s AND name = %s "
        "ORDER BY version",
        [namespace, project, name],
    ).fetchall()
    return [Version(*row) for row in rows]


def active(control: psycopg.Connection[Any], namespace: str, project: str, name: str) -> Active | None:
    row = control.execute(
        f"SELECT {_ACTIVE} FROM functions.active WHERE namespace = %s AND project = %s AND name = %s",
        [namespace, project, name],
    ).fetchone()
    return Active(*row) if row else None


def source(control: psycopg.Connection[Any], sha: str) -> str | None:
    row = control.execute("SELECT source FROM functions.artifacts WHERE sha256 = %s", [sha]).fetchone()
    return str(row[0]) if row else None


def store(control: psycopg.Connection[Any], code: str) -> str:
    """Keep ``code`` once; returns its sha256."""
    sha = sha256(code)
    control.execute(
        "INSERT INTO functions.artifacts (sha256, source) VALUES (%s, %s) ON CONFLICT DO NOTHING", [sha, code]
    )
    return sha


def _lock(control: psycopg.Connection[Any], namespace: str, project: str, name: str) -> None:
    control.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"kliv.function:{namespace}/{project}/{name}"])


def deploy(
    control: psycopg.Connection[Any],
    namespace: str,
    project: str,
    name: str,
    route: str,
    code: str,
    settings: dict[str, Any],
    target: str,
    kept: int,
    external_version: str | None = None,
) -> tuple[Version, bool]:
    """Make the version of ``code`` + ``settings`` active (adding it unless a kept version is the
    same: idempotent); returns it and whether it was added. Inside the caller's transaction."""
    assert control.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS, "needs a transaction"
    _lock(control, namespace, project, name)
    sha = store(control, code)
    wanted = digest(sha, settings)
    found = [v for v in versions(control, namespace, project, name) if v.digest == wanted and v.target == target]
    added = not found
    if found:
        chosen = found[-1]
        if external_version is not None and external_version != chosen.external_version:  # published again
            control.execute(
                "UPDATE functions.versions SET external_version = %s WHERE namespace = %s AND project = %s "
                "AND name = %s AND version = %s",
                [external_version, namespace, project, name, chosen.version],
            )
            chosen = dataclasses.replace(chosen, external_version=external_version)
    else:
        row = control.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM functions.versions "
            "WHERE namespace = %s AND project = %s AND name = %s",
            [namespace, project, name],
        ).fetchone()
        number = int(row[0]) if row else 1
        control.execute(
            "INSERT INTO functions.versions (namespace, project, name, version, artifact, settings, digest, target, "
            "external_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [namespace, project, name, number, sha, json.dumps(settings), wanted, target, external_version],
        )
        chosen = Version(namespace, project, name, number, sha, settings, wanted, target, external_version)
    switch(control, namespace, project, name, route, chosen.version, pinned_for=None)
    prune(control, namespace, project, name, kept)
    return chosen, added


def switch(
    control: psycopg.Connection[Any],
    namespace: str,
    project: str,
    name: str,
    route: str,
    version: int,
    pinned_for: str | None,
) -> None:
    """Point the function at ``version`` and tell every ``kliv serve`` (on commit)."""
    control.execute(
        "INSERT INTO functions.active (namespace, project, name, route, version, pinned_for) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (namespace, project, name) DO UPDATE SET "
        "route = excluded.route, version = excluded.version, pinned_for = excluded.pinned_for, "
        "retired_at = NULL, updated_at = now()",
        [namespace, project, name, route, version, pinned_for],
    )
    control.execute(
        "UPDATE functions.versions SET activated_at = clock_timestamp() WHERE namespace = %s AND project = %s "
        "AND name = %s AND version = %s",
        [namespace, project, name, version],
    )
    notify(control, namespace, project, name)


def notify(control: psycopg.Connection[Any], namespace: str, project: str, name: str) -> None:
    control.execute("SELECT pg_notify(%s, %s)", [CHANNEL, json.dumps([namespace, project, name])])


def prune(control: psycopg.Connection[Any], namespace: str, project: str, name: str, kept: int) -> int:
    """Keep the ``kept`` versions active most recently (the active one always); returns how many
    were dropped."""
    dropped = control.execute(
        "DELETE FROM functions.versions v WHERE namespace = %(ns)s AND project = %(p)s AND name = %(n)s "
        "AND version NOT IN (SELECT version FROM functions.active a WHERE a.namespace = %(ns)s "
        "AND a.project = %(p)s AND a.name = %(n)s) "
        "AND version NOT IN (SELECT version FROM functions.versions WHERE namespace = %(ns)s AND project = %(p)s "
        "AND name = %(n)s ORDER BY activated_at DESC NULLS LAST, version DESC LIMIT %(k)s)",
        {"ns": namespace, "p": project, "n": name, "k": kept},
    )
    return dropped.rowcount


def rollback(
    control: psycopg.Connection[Any], namespace: str, project: str, name: str, to: int | None
) -> tuple[Active, Version]:
    """Serve version ``to`` (default: the one active before the active one) and pin it until the
    spec changes. Raises LookupError naming what is missing."""
    assert control.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS, "needs a transaction"
    _lock(control, namespace, project, name)
    current = active(control, namespace, project, name)
    if current is None or current.retired:
        raise LookupError(f"function {name} of {namespace}/{project} is not deployed")
    kept = versions(control, namespace, project, name)
    if to is None:
        row = control.execute(
            "SELECT version FROM functions.versions WHERE namespace = %s AND project = %s AND name = %s "
            "AND version <> %s ORDER BY activated_at DESC NULLS LAST, version DESC LIMIT 1",
            [namespace, project, name, current.version],
        ).fetchone()
        if row is None:
            raise LookupError(f"function {name} has no other kept version than {current.version} to roll back to")
        chosen = next(v for v in kept if v.version == row[0])
    else:
        matching = [v for v in kept if v.version == to]
        if not matching:
            numbers = ", ".join(str(v.version) for v in kept)
            raise LookupError(f"function {name} has no version {to} (kept: {numbers})")
        chosen = matching[0]
    # The pin holds while the spec's digest stays the one deployed before the rollback.
    pinned_for = current.pinned_for or next(v.digest for v in kept if v.version == current.version)
    switch(control, namespace, project, name, current.route, chosen.version, pinned_for)
    return Active(namespace, project, name, current.route, chosen.version, pinned_for, False), chosen


def retire(control: psycopg.Connection[Any], namespace: str, project: str, name: str) -> bool:
    """Stop serving the function; its versions stay (retention). False: it was not served."""
    done = control.execute(
        "UPDATE functions.active SET retired_at = now(), updated_at = now() "
        "WHERE namespace = %s AND project = %s AND name = %s AND retired_at IS NULL",
        [namespace, project, name],
    )
    notify(control, namespace, project, name)
    return done.rowcount > 0


def served(control: psycopg.Connection[Any], namespace: str | None = None) -> list[tuple[Active, Version]]:
    """Every active function with its version (``kliv serve``, ``kliv functions list``)."""
    where, params = ("WHERE a.retired_at IS NULL", []) if namespace is None else (
        "WHERE a.retired_at IS NULL AND a.namespace = %s", [namespace])  # fmt: skip
    rows = control.execute(
        "SELECT a.namespace, a.project, a.name, a.route, a.version, a.pinned_for, a.retired_at IS NOT NULL, "
        "v.namespace, v.project, v.name, v.version, v.artifact, v.settings, v.digest, v.target, v.external_version, "
        f"v.created_at FROM functions.active a JOIN functions.versions v USING (namespace, project, name, version) "
        f"{where} ORDER BY a.namespace, a.project, a.name",
        params,
    ).fetchall()
    return [(Active(*row[:7]), Version(*row[7:])) for row in rows]
