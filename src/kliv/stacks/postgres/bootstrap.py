"""The fixed parts of every project database: roles, the `auth` helpers, the audit trail, the email templates table.

Called by the differ when a project's database, roles or bootstrap marker is
missing. Everything here is idempotent (IF NOT EXISTS / OR REPLACE), so a
re-run after a crash converges.
"""

from __future__ import annotations

from kliv.stacks.plans import Step
from kliv.stacks.postgres import templates
from kliv.stacks.postgres.naming import literal, quote

# Bump when the SQL below changes: the marker on schema `audit` tells the differ to re-run it.
BOOTSTRAP_VERSION = "kliv bootstrap v2"  # v2: schema `email` (EmailTemplates)

# One statement per entry: steps run pipelined, which allows no multi-statement strings.
_AUTH_AND_AUDIT = (
    "CREATE SCHEMA IF NOT EXISTS auth",
    "CREATE SCHEMA IF NOT EXISTS audit",
    """CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$""",
    """CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT nullif(auth.jwt() ->> 'sub', '')::uuid
$$""",
    """CREATE OR REPLACE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT auth.jwt() ->> 'role'
$$""",
    """CREATE TABLE IF NOT EXISTS audit.log (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  table_name text NOT NULL,
  operation text NOT NULL,
  old_row jsonb,
  new_row jsonb,
  changed_columns text[],
  actor uuid,
  at timestamptz NOT NULL DEFAULT now(),
  transaction_id bigint NOT NULL DEFAULT txid_current()
)""",
    """CREATE OR REPLACE FUNCTION audit.record() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public AS $$
DECLARE
  old_row jsonb;
  new_row jsonb;
  changed text[];
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN old_row := to_jsonb(OLD); END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN new_row := to_jsonb(NEW); END IF;
  IF TG_OP = 'UPDATE' THEN
    SELECT array_agg(n.key ORDER BY n.key) INTO changed
    FROM jsonb_each(new_row) AS n WHERE n.value IS DISTINCT FROM old_row -> n.key;
  END IF;
  INSERT INTO audit.log (table_name, operation, old_row, new_row, changed_columns, actor)
  VALUES (TG_TABLE_NAME, TG_OP, old_row, new_row, changed, auth.uid());
  RETURN NULL;
END
$$""",
    "REVOKE ALL ON SCHEMA audit FROM PUBLIC",
    "REVOKE ALL ON FUNCTION audit.record() FROM PUBLIC",
    "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
)


def server_steps(database: str, roles: dict[str, str], database_exists: bool, missing_roles: set[str]) -> list[Step]:
    """CREATE DATABASE (outside any transaction), the project roles, and who may connect."""
    steps = []
    if not database_exists:
        steps.append(Step(f"CREATE DATABASE {quote(database)}", phase="server", transactional=False))
    for suffix, name in roles.items():
        if name in missing_roles:
            bypass = " BYPASSRLS" if suffix == "service_role" else ""
            steps.append(Step(f"CREATE ROLE {quote(name)} NOLOGIN NOINHERIT{bypass}", phase="server"))
    if not database_exists or missing_roles:
        steps.append(Step(f"REVOKE ALL ON DATABASE {quote(database)} FROM PUBLIC", phase="server"))
        grantees = ", ".join(quote(r) for r in roles.values())
        steps.append(Step(f"GRANT CONNECT, TEMPORARY ON DATABASE {quote(database)} TO {grantees}", phase="server"))
    return steps


def database_steps(roles: dict[str, str]) -> list[Step]:
    """Schemas `auth`, `audit` and `email`, their functions and grants, and the version marker."""
    grantees = ", ".join(quote(r) for r in roles.values())
    statements = list(_AUTH_AND_AUDIT) + list(templates.SCHEMA_STEPS)
    statements += [
        f"GRANT USAGE ON SCHEMA public, auth TO {grantees}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA auth TO {grantees}",
        f"GRANT USAGE ON SCHEMA audit TO {quote(roles['service_role'])}",
        f"GRANT SELECT ON audit.log TO {quote(roles['service_role'])}",
        *templates.grants(roles["service_role"]),
        f"COMMENT ON SCHEMA audit IS {literal(BOOTSTRAP_VERSION)}",
    ]
    return [Step(s) for s in statements]
