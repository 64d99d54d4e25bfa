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

from kliv.stacks.secrets import keys, store
from kliv.stacks.secrets.keys import Keyring

SECRET_NAME = "kliv.authenticator"  # not a ProjectSecret name (those are upper case): no spec can claim it
ITERATIONS = 4096


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


def ensure(
    admin: psycopg.Connection[Any],
    control: psycopg.Connection[Any],
    keyring: Keyring,
    namespace: str,
    project: str,
    role: str,
) -> str:
    """The login's password: the stored one (set again on the role if it drifted), else a new one."""
    latest = store.latest(control, namespace, project, SECRET_NAME)
    if latest is not None:
        password = store.reveal(control, keyring, namespace, project, SECRET_NAME)
    else:
        password = secrets.token_urlsafe(24)
        fingerprint = keys.fingerprint(store.fingerprint_key(control, keyring), f"{namespace}/{project}", password)
        version = store.Version(namespace, project, SECRET_NAME, 1, "postgres", "generated", fingerprint, None)
        with control.transaction():
            store.add(control, keyring, version, password)
        password = store.reveal(control, keyring, namespace, project, SECRET_NAME)  # a racing process won
    row = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()
    if row is None:
        raise LookupError(f"role {role} does not exist: apply the project first")
    if not verifies(row[0], password):
        admin.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(scram_verifier(password)))
        )
    return password
