"""The secret versions kept in the control database `kliv` (schema ``secrets``).

Called by the secret provider (:mod:`.provider`) and ``kliv secrets``. With the
``postgres`` store a row holds the sealed value (``ciphertext``) and its wrapped
data key; with the ``aws`` store the value lives in Secrets Manager and the row
only records the version, its fingerprint and the Secrets Manager version id.
No column but ``ciphertext`` ever holds anything derived from a value except
through the keyed fingerprint.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import psycopg

from kliv.stacks.secrets import keys
from kliv.stacks.secrets.keys import Keyring

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS secrets;
CREATE TABLE IF NOT EXISTS secrets.keyring (
  purpose text PRIMARY KEY,
  key_id text NOT NULL,
  wrapped bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets.versions (
  namespace text NOT NULL,
  project text NOT NULL,
  name text NOT NULL,
  version integer NOT NULL,
  store text NOT NULL,
  source text NOT NULL,
  fingerprint text NOT NULL,
  key_id text,
  wrapped_key bytea,
  ciphertext bytea,
  external_version text,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (namespace, project, name, version)
)
"""

_FINGERPRINT = "fingerprint"


@dataclasses.dataclass(frozen=True)
class Version:
    """One stored version of a secret: everything but the value."""

    namespace: str
    project: str
    name: str
    version: int
    store: str
    source: str
    fingerprint: str
    external_version: str | None
    created_at: datetime.datetime | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.project}/{self.name}"


_COLUMNS = "namespace, project, name, version, store, source, fingerprint, external_version, created_at"


def _context(namespace: str, project: str, name: str, version: int) -> bytes:
    return f"kliv secret {namespace}/{project}/{name}@{version}".encode()


def fingerprint_key(control: psycopg.Connection[Any], keyring: Keyring) -> bytes:
    """The installation's fingerprint key: random, created once, wrapped like any data key."""
    context = b"kliv fingerprint key"
    row = control.execute("SELECT key_id, wrapped FROM secrets.keyring WHERE purpose = %s", [_FINGERPRINT]).fetchone()
    if row is None:
        key_id, wrapped = keyring.wrap(keys.new_data_key(), context)
        control.execute(
            "INSERT INTO secrets.keyring (purpose, key_id, wrapped) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            [_FINGERPRINT, key_id, wrapped],
        )
        row = control.execute(
            "SELECT key_id, wrapped FROM secrets.keyring WHERE purpose = %s", [_FINGERPRINT]
        ).fetchone()
        assert row is not None
    return keyring.unwrap(row[0], bytes(row[1]), context)


def latest(control: psycopg.Connection[Any], namespace: str, project: str, name: str) -> Version | None:
    row = control.execute(
        f"SELECT {_COLUMNS} FROM secrets.versions WHERE namespace = %s AND project = %s AND name = %s "
        "ORDER BY version DESC LIMIT 1",
        [namespace, project, name],
    ).fetchone()
    return Version(*row) if row else None


def add(
    control: psycopg.Connection[Any],
    keyring: Keyring | None,
    version: Version,
    value: str | None,
) -> None:
    """Store a new version; ``value`` is sealed for the postgres store (None for aws)."""
    key_id = wrapped = ciphertext = None
    if value is not None:
        assert keyring is not None
        context = _context(version.namespace, version.project, version.name, version.version)
        data_key = keys.new_data_key()
        key_id, wrapped = keyring.wrap(data_key, context)
        ciphertext = keys.seal(data_key, value.encode(), context)
    control.execute(
        "INSERT INTO secrets.versions (namespace, project, name, version, store, source, fingerprint, key_id, "
        "wrapped_key, ciphertext, external_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (namespace, project, name, version) DO NOTHING",
        [
            version.namespace, version.project, version.name, version.version, version.store, version.source,
            version.fingerprint, key_id, wrapped, ciphertext, version.external_version,
        ],
    )  # fmt: skip


def reveal(control: psycopg.Connection[Any], keyring: Keyring, namespace: str, project: str, name: str) -> str:
    """The value of the latest version (postgres store): for functions, never for status or logs."""
    row = control.execute(
        "SELECT version, key_id, wrapped_key, ciphertext FROM secrets.versions "
        "WHERE namespace = %s AND project = %s AND name = %s ORDER BY version DESC LIMIT 1",
        [namespace, project, name],
    ).fetchone()
    if row is None or row[3] is None:
        raise keys.SecretKeyError(f"secret {namespace}/{project}/{name} has no value in the postgres store")
    context = _context(namespace, project, name, row[0])
    data_key = keyring.unwrap(row[1], bytes(row[2]), context)
    return keys.unseal(data_key, bytes(row[3]), context).decode()


def delete(control: psycopg.Connection[Any], namespace: str, project: str, name: str) -> int:
    cursor = control.execute(
        "DELETE FROM secrets.versions WHERE namespace = %s AND project = %s AND name = %s", [namespace, project, name]
    )
    return cursor.rowcount


def versions(control: psycopg.Connection[Any], namespace: str, project: str, name: str) -> list[Version]:
    rows = control.execute(
        f"SELECT {_COLUMNS} FROM secrets.versions WHERE namespace = %s AND project = %s AND name = %s ORDER BY version",
        [namespace, project, name],
    ).fetchall()
    return [Version(*row) for row in rows]


def count(control: psycopg.Connection[Any], namespace: str, project: str, name: str) -> int:
    row = control.execute(
        "SELECT count(*) FROM secrets.versions WHERE namespace = %s AND project = %s AND name = %s",
        [namespace, project, name],
    ).fetchone()
    return int(row[0]) if row else 0


def listing(control: psycopg.Connection[Any], project: str | None = None) -> list[Version]:
    """The latest version of every secret (of one project: ``name`` or ``namespace/name``)."""
    namespace, _, name = project.rpartition("/") if project else ("", "", "")
    rows = control.execute(
        f"SELECT DISTINCT ON (namespace, project, name) {_COLUMNS} FROM secrets.versions "
        "WHERE (%(name)s = '' OR project = %(name)s) AND (%(namespace)s = '' OR namespace = %(namespace)s) "
        "ORDER BY namespace, project, name, version DESC",
        {"name": name, "namespace": namespace},
    ).fetchall()
    return [Version(*row) for row in rows]


@dataclasses.dataclass(frozen=True)
class Rotation:
    rewrapped: int
    already_current: int
    key_id: str


def rotate(control: psycopg.Connection[Any], keyring: Keyring) -> Rotation:
    """Re-wrap every data key under the current key, in one transaction; values are untouched.

    Readers holding either key keep working throughout: a row is readable with the
    key it names, and each row changes atomically.
    """
    rewrapped = current = 0
    with control.transaction():
        control.execute("LOCK TABLE secrets.versions, secrets.keyring IN SHARE ROW EXCLUSIVE MODE")
        for purpose, key_id, wrapped in control.execute(
            "SELECT purpose, key_id, wrapped FROM secrets.keyring"
        ).fetchall():
            if key_id == keyring.current_id:
                current += 1
                continue
            context = b"kliv fingerprint key" if purpose == _FINGERPRINT else purpose.encode()
            new_id, new_wrapped = keyring.wrap(keyring.unwrap(key_id, bytes(wrapped), context), context)
            control.execute(
                "UPDATE secrets.keyring SET key_id = %s, wrapped = %s WHERE purpose = %s",
                [new_id, new_wrapped, purpose],
            )
            rewrapped += 1
        rows = control.execute(
            "SELECT namespace, project, name, version, key_id, wrapped_key FROM secrets.versions "
            "WHERE wrapped_key IS NOT NULL"
        ).fetchall()
        for namespace, project, name, version, key_id, wrapped in rows:
            if key_id == keyring.current_id:
                current += 1
                continue
            context = _context(namespace, project, name, version)
            new_id, new_wrapped = keyring.wrap(keyring.unwrap(key_id, bytes(wrapped), context), context)
            control.execute(
                "UPDATE secrets.versions SET key_id = %s, wrapped_key = %s "
                "WHERE namespace = %s AND project = %s AND name = %s AND version = %s",
                [new_id, new_wrapped, namespace, project, name, version],
            )
            rewrapped += 1
    return Rotation(rewrapped, current, keyring.current_id)
