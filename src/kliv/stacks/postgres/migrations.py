"""The control database's layout, as numbered migrations applied once each, in order.

Called by :func:`kliv.stacks.postgres.inventory.ensure_schema` when the engine first
connects to a control database whose newest migration is older than this code's.
Each migration is idempotent DDL (``IF NOT EXISTS``): a database made before
versions were recorded gets all of them, and keeps its rows. A kind that keeps rows in
the control database adds its tables here, as the next migration.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg

from kliv.stacks.functions import artifacts as function_artifacts
from kliv.stacks.secrets import store as secret_store


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "inventory, outbox and the postgres secret store",
        """CREATE SCHEMA IF NOT EXISTS inventory;
CREATE TABLE IF NOT EXISTS inventory.projects (
  namespace text NOT NULL,
  name text NOT NULL,
  database text NOT NULL UNIQUE,
  fingerprints jsonb NOT NULL DEFAULT '{}',
  last_plan jsonb,
  applied_at timestamptz,
  -- The project transaction of the apply in progress: whether it committed tells the next plan,
  -- if that apply stopped before recording itself, what it changed.
  pending_xact xid8,
  pending_record jsonb,
  PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS inventory.resources (
  namespace text NOT NULL,
  kind text NOT NULL,
  name text NOT NULL,
  project text NOT NULL,
  spec_hash text NOT NULL,
  physical text NOT NULL,
  retain boolean NOT NULL DEFAULT true,
  applied_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (namespace, project, kind, name)
);
CREATE TABLE IF NOT EXISTS inventory.outbox (
  position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id uuid NOT NULL UNIQUE,
  namespace text NOT NULL,
  project text NOT NULL,
  routing_key text NOT NULL,
  body text NOT NULL,
  -- The project-database transaction whose changes the event reports: the relay publishes
  -- the event only once Postgres says that transaction committed (and drops it if aborted).
  xact xid8,
  created_at timestamptz NOT NULL DEFAULT now(),
  delivered_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_pending ON inventory.outbox (position) WHERE delivered_at IS NULL;
"""
        + secret_store.SCHEMA,
    ),
    # Identity per project (two CLI folders may both hold Table/default/notes); the database
    # closed to other logins (LISTEN kliv_outbox named every project to anyone who could connect).
    Migration(
        2,
        "identity per project; the database closed to other logins",
        """ALTER TABLE inventory.resources DROP CONSTRAINT IF EXISTS resources_pkey;
ALTER TABLE inventory.resources ADD PRIMARY KEY (namespace, project, kind, name);
CREATE INDEX IF NOT EXISTS resources_physical ON inventory.resources (kind, physical);
DO $$ BEGIN EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()); END $$;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
""",
    ),
    Migration(
        3,
        "the project transaction of an apply in progress",
        """ALTER TABLE inventory.projects ADD COLUMN IF NOT EXISTS pending_xact xid8;
ALTER TABLE inventory.projects ADD COLUMN IF NOT EXISTS pending_record jsonb;
""",
    ),
    Migration(
        4,
        "stored plans, applied later by id",
        """
CREATE TABLE IF NOT EXISTS inventory.plans (
  id uuid PRIMARY KEY,
  namespace text NOT NULL,
  project text NOT NULL,
  -- What the plan is bound to: the specs' content and the plan reality gave for them.
  specs_digest text NOT NULL,
  plan_digest text NOT NULL,
  -- json, not jsonb: jsonb reorders keys, and a spec's mappings keep their order (its hash does).
  documents json NOT NULL,
  plan json NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  applied_at timestamptz
);
CREATE INDEX IF NOT EXISTS plans_expiry ON inventory.plans (expires_at);
""",
    ),
    Migration(
        5,
        "each object's status, from every run",
        """
CREATE TABLE IF NOT EXISTS inventory.statuses (
  namespace text NOT NULL,
  project text NOT NULL,
  kind text NOT NULL,
  name text NOT NULL,
  generation bigint,
  conditions jsonb NOT NULL,
  outputs jsonb NOT NULL DEFAULT '{}',
  updated_by text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (namespace, project, kind, name)
);
""",
    ),
    Migration(
        6,
        "expression fingerprints in buckets",
        """
CREATE TABLE IF NOT EXISTS inventory.fingerprints (
  namespace text NOT NULL,
  project text NOT NULL,
  bucket integer NOT NULL,
  entries jsonb NOT NULL,
  PRIMARY KEY (namespace, project, bucket),
  FOREIGN KEY (namespace, project) REFERENCES inventory.projects (namespace, name) ON DELETE CASCADE
);
""",
    ),
    Migration(7, "function artifacts, versions, invocations and logs", function_artifacts.SCHEMA),
)
LATEST = MIGRATIONS[-1].version

_HISTORY = """
CREATE TABLE IF NOT EXISTS inventory.migrations (
  version integer PRIMARY KEY,
  description text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def current(control: psycopg.Connection[Any]) -> int:
    """The newest migration this control database has recorded (0: none, or a layout from before
    migrations were numbered: every migration is idempotent, so all of them run)."""
    row = control.execute("SELECT to_regclass('inventory.migrations') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return 0
    found = control.execute("SELECT max(version) FROM inventory.migrations").fetchone()
    return int(found[0]) if found and found[0] is not None else 0


def migrate(control: psycopg.Connection[Any]) -> list[int]:
    """Apply the migrations this database lacks, in one transaction under a server-wide lock
    (two processes starting at once migrate once); returns the versions applied."""
    with control.transaction():
        control.execute("SELECT pg_advisory_xact_lock(hashtext('kliv.inventory.schema'))")
        version = current(control)
        missing = [m for m in MIGRATIONS if m.version > version]
        if not missing:
            return []
        for migration in missing:
            control.execute(migration.sql)  # constant DDL of this module
        control.execute(_HISTORY)
        with control.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO inventory.migrations (version, description) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(m.version, m.description) for m in MIGRATIONS if m.version <= LATEST],
            )
        return [m.version for m in missing]
