"""The password of a project's ``<prefix>_authenticator`` login: generated once, kept in the secret
store, given to Postgres only as a SCRAM-SHA-256 verifier.

Called by ``kliv up`` after an apply, to print a ``database_url`` an application can use. The plan
never holds the password (plans are shown and stored); Postgres never receives it in clear either
(the verifier is computed here, as psql's ``\\password`` does), so no server log can show it.
Idempotent: the role's current verifier is checked against the stored password first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

import psycopg
from psycopg import sql

from kliv.stacks.errors import EngineError
from kliv.stacks.secrets import keys, store
from kliv.stacks.secrets.keys import Keyring

# The store's name for a login's password: per role (so per database), never per project name alone,
# or a project re-created on another database would be handed the retained one's password. No
# ProjectSecret can be named with a dot.
SECRET_PREFIX = "kliv.authenticator."
ITERATIONS = 4096
_ATTRIBUTES = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls", "rolinherit")


class ForeignLoginError(EngineError):
    """The role has the authenticator's name but is not the login kliv makes: its password is never handed out."""


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (RFC 5802/7677, as pg_authid keeps it)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def verifies(verifier: str | None, password: str) -> bool:
    """Whether ``verifier`` (from pg_authid) was made from ``password``."""
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        head, _ = verifier.split("$", 2)[1:]
        iterations, salt = head.split(":", 1)
        expected = scram_verifier(password, base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, verifier)


def check_role(admin: psycopg.Connection[Any], role: str, project_roles: list[str]) -> str | None:
    """The role's current verifier, if it is the login kliv creates: LOGIN NOINHERIT, no other attribute,
    a member of exactly the project's three roles and of nothing else, and nobody a member of it."""
    row = admin.execute(
        f"SELECT rolpassword, rolcanlogin, {', '.join(_ATTRIBUTES)}, "
        "ARRAY(SELECT DISTINCT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "      WHERE m.member = r.oid ORDER BY 1), "
        "EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = r.oid) "
        "FROM pg_authid r WHERE rolname = %s",
        [role],
    ).fetchone()
    if row is None:
        raise ForeignLoginError(f"role {role} does not exist", "apply the project first")
    verifier, can_login, *flags = row[:8]
    memberships, has_members = list(row[8]), bool(row[9])
    wrong = [name.removeprefix("rol").upper() for name, on in zip(_ATTRIBUTES, flags, strict=True) if on]
    if not can_login:
        wrong.append("NOLOGIN")
    if sorted(memberships) != sorted(project_roles):
        wrong.append(f"member of {', '.join(memberships) or 'nothing'}")
    if has_members:
        wrong.append("granted to other roles")
    if wrong:
        raise ForeignLoginError(
            f"role {role} is not the application login kliv makes ({'; '.join(wrong)}): kliv never hands out "
            "its password",
            f"drop or rename role {role} (kliv then creates it afresh), or fix it by hand",
        )
    return str(verifier) if verifier is not None else None


def ensure(
    admin: psycopg.Connection[Any],
    control: psycopg.Connection[Any],
    keyring: Keyring,
    namespace: str,
    project: str,
    role: str,
    project_roles: list[str],
) -> tuple[str, bool]:
    """The login's password (the stored one, else a new one) and whether it had to be set on the role
    (new, or changed outside kliv). Refused (ForeignLoginError) for a role that is not kliv's login."""
    verifier = check_role(admin, role, project_roles)
    name = SECRET_PREFIX + role
    if store.latest(control, namespace, project, name) is None:
        password = secrets.token_urlsafe(24)
        fingerprint = keys.fingerprint(store.fingerprint_key(control, keyring), f"{namespace}/{project}", password)
        version = store.Version(namespace, project, name, 1, "postgres", "generated", fingerprint, None)
        with control.transaction():
            store.add(control, keyring, version, password)
    password = store.reveal(control, keyring, namespace, project, name)  # a racing process's, if it won
    if verifies(verifier, password):
        return password, False
    verifier_sql = sql.SQL("ALTER ROLE {} PASSWORD {}").format(
        sql.Identifier(role), sql.Literal(scram_verifier(password))
    )
    admin.execute(verifier_sql)
    return password, True
