"""The fixed parts of every project database: roles, the `auth` helpers, the audit trail, the email templates table.

Called by the differ when a project's database, roles or bootstrap marker is
missing. Everything here is idempotent (IF NOT EXISTS / OR REPLACE), so a
re-run after a crash converges.

Project roles are adversaries (SECURITY.md): nothing installed here runs as a
superuser where they can reach it. The audit trigger function, the one
``SECURITY DEFINER`` function, belongs to the project's ``_auditor`` role
(NOLOGIN, not a superuser, allowed only to insert into ``audit.log``) and pins
``search_path = pg_catalog, pg_temp``: Postgres searches the caller's
``pg_temp`` *first* for types and tables unless it is listed, so an unpinned
(or empty) path lets a caller's ``pg_temp.jsonb`` domain run its check as the
definer. The invoker helpers in ``auth`` spell every type with its schema for
the same reason (they run inside the definer function too), and stay inlinable
(no ``SET`` clause). Project roles get no ``TEMPORARY`` on their database.
"""

from __future__ import annotations

from kliv.stacks.plans import Step
from kliv.stacks.postgres import templates
from kliv.stacks.postgres.naming import literal, quote

# Bump when the SQL below changes: the marker on schema `audit` tells the differ to re-run it.
BOOTSTRAP_VERSION = "kliv bootstrap v5"  # v2: schema `email`; v3: audit.record() owned by _auditor, no TEMPORARY;
# v4: event triggers that notify the engine of DDL (see .watching); v5: auth.users

# One statement per entry: steps run pipelined, which allows no multi-statement strings.
_AUTH_AND_AUDIT = (
    "CREATE SCHEMA IF NOT EXISTS auth",
    "CREATE SCHEMA IF NOT EXISTS audit",
    """CREATE OR REPLACE FUNCTION auth.jwt() RETURNS pg_catalog.jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    nullif(pg_catalog.current_setting('request.jwt.claims', true), ''), '{}'
  )::pg_catalog.jsonb
$$""",
    """CREATE OR REPLACE FUNCTION auth.uid() RETURNS pg_catalog.uuid LANGUAGE sql STABLE AS $$
  SELECT nullif(auth.jwt() OPERATOR(pg_catalog.->>) 'sub', '')::pg_catalog.uuid
$$""",
    """CREATE OR REPLACE FUNCTION auth.role() RETURNS pg_catalog.text LANGUAGE sql STABLE AS $$
  SELECT auth.jwt() OPERATOR(pg_catalog.->>) 'role'
$$""",
    # The platform's users (GoTrue's columns that apps read): tables reference them, trigger
    # functions copy them. Only the admin and service_role may touch it.
    """CREATE TABLE IF NOT EXISTS auth.users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text,
  phone text,
  role text,
  raw_user_meta_data jsonb NOT NULL DEFAULT '{}',
  raw_app_meta_data jsonb NOT NULL DEFAULT '{}',
  email_confirmed_at timestamptz,
  last_sign_in_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz
)""",
    "REVOKE ALL ON auth.users FROM PUBLIC",
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
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  old_row pg_catalog.jsonb;
  new_row pg_catalog.jsonb;
  changed pg_catalog.text[];
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
    # Invoker rights, fixed body, no arguments; an event trigger function cannot be called directly.
    """CREATE OR REPLACE FUNCTION audit.ddl_changed() RETURNS event_trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM pg_catalog.pg_notify('kliv_ddl', '');
END
$$""",
    # Only a superuser may create event triggers: under another admin there are none, and the
    # engine reads the catalog whole at every plan (.watching).
    """DO $$
BEGIN
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'kliv_ddl_start') THEN
      CREATE EVENT TRIGGER kliv_ddl_start ON ddl_command_start EXECUTE FUNCTION audit.ddl_changed();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'kliv_ddl_end') THEN
      CREATE EVENT TRIGGER kliv_ddl_end ON ddl_command_end EXECUTE FUNCTION audit.ddl_changed();
    END IF;
    ALTER EVENT TRIGGER kliv_ddl_start ENABLE;
    ALTER EVENT TRIGGER kliv_ddl_end ENABLE;
  END IF;
END
$$""",
    "REVOKE ALL ON SCHEMA audit FROM PUBLIC",
    "REVOKE ALL ON FUNCTION audit.record() FROM PUBLIC",
    "REVOKE ALL ON FUNCTION audit.ddl_changed() FROM PUBLIC",
    "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
)


def _auditor_steps(auditor: str) -> list[str]:
    """What the owner of audit.record() may do: insert audit rows and read the caller's claims."""
    role = quote(auditor)
    return [
        f"GRANT USAGE ON SCHEMA audit, auth TO {role}",
        f"GRANT INSERT ON audit.log TO {role}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA auth TO {role}",
        f"ALTER FUNCTION audit.record() OWNER TO {role}",
    ]


def _owner_steps(owner: str) -> list[str]:
    """What the DatabaseFunctions' owner may do: read the caller's claims, read and write auth.users
    (a new-user trigger) and every project table, those made later too (the admin makes them: its
    default privileges); the table differ compares only the three project roles' grants."""
    role = quote(owner)
    return [
        f"GRANT USAGE ON SCHEMA public, auth TO {role}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA auth TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON auth.users TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
    ]


def server_steps(
    database: str,
    roles: dict[str, str],
    auditor: str,
    database_exists: bool,
    missing_roles: set[str],
    authenticator: str = "",
    owner: str = "",
) -> list[Step]:
    """CREATE DATABASE (outside any transaction), the project roles, and who may connect.

    The authenticator is created without a password (the plan never holds one): ``kliv up`` sets
    it from the secret store as a SCRAM verifier (:mod:`kliv.stacks.postgres.authenticator`).
    NOINHERIT: logged in, it holds no project role's rights until it `SET ROLE`s to one.
    """
    steps = []
    if not database_exists:
        steps.append(Step(f"CREATE DATABASE {quote(database)}", phase="server", transactional=False))
    for suffix, name in roles.items():
        if name in missing_roles:
            bypass = " BYPASSRLS" if suffix == "service_role" else ""
            steps.append(Step(f"CREATE ROLE {quote(name)} NOLOGIN NOINHERIT{bypass}", phase="server"))
    if auditor in missing_roles:
        steps.append(Step(f"CREATE ROLE {quote(auditor)} NOLOGIN NOINHERIT", phase="server"))
    if owner and owner in missing_roles:
        steps.append(Step(f"CREATE ROLE {quote(owner)} NOLOGIN NOINHERIT BYPASSRLS", phase="server"))
    grantees = ", ".join(quote(r) for r in roles.values())
    if authenticator and authenticator in missing_roles:
        steps.append(Step(f"CREATE ROLE {quote(authenticator)} LOGIN NOINHERIT", phase="server"))
        steps.append(Step(f"GRANT {grantees} TO {quote(authenticator)}", phase="server"))
    if not database_exists or missing_roles:
        steps.append(Step(f"REVOKE ALL ON DATABASE {quote(database)} FROM PUBLIC", phase="server"))
        connecting = ", ".join(quote(r) for r in [*roles.values(), *([authenticator] if authenticator else [])])
        steps.append(Step(f"GRANT CONNECT ON DATABASE {quote(database)} TO {connecting}", phase="server"))
    return steps


def database_steps(database: str, roles: dict[str, str], auditor: str, owner: str = "") -> list[Step]:
    """Schemas `auth`, `audit` and `email`, their functions and grants, and the version marker."""
    grantees = ", ".join(quote(r) for r in roles.values())
    statements = list(_AUTH_AND_AUDIT) + list(templates.SCHEMA_STEPS) + _auditor_steps(auditor)
    if owner:
        statements += _owner_steps(owner)
    statements += [
        # Databases bootstrapped before v3 granted TEMPORARY: the pg_temp shadowing attack's foothold.
        f"REVOKE TEMPORARY ON DATABASE {quote(database)} FROM PUBLIC, {grantees}",
        f"GRANT USAGE ON SCHEMA public, auth TO {grantees}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA auth TO {grantees}",
        f"REVOKE ALL ON auth.users FROM {grantees}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON auth.users TO {quote(roles['service_role'])}",
        f"GRANT USAGE ON SCHEMA audit TO {quote(roles['service_role'])}",
        f"GRANT SELECT ON audit.log TO {quote(roles['service_role'])}",
        *templates.grants(roles["service_role"]),
        f"COMMENT ON SCHEMA audit IS {literal(BOOTSTRAP_VERSION)}",
    ]
    return [Step(s) for s in statements]
