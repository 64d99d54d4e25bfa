"""Physical names in Postgres: quoting, role names, derived constraint and index names.

Used by the SQL builders and the catalog reader so that both agree on what an
object is called.
"""

from __future__ import annotations

import hashlib

MAX_IDENTIFIER = 63
ROLE_SUFFIXES = ("anon", "authenticated", "service_role")
# Roles kliv keeps for itself: the owner of audit.record(), never granted to anyone.
AUDITOR_SUFFIX = "auditor"
# The one project role that logs in (LOGIN NOINHERIT, member of the three): what an application's
# DATABASE_URL names, switching with SET ROLE as PostgREST's authenticator does.
AUTHENTICATOR_SUFFIX = "authenticator"
# The owner of the project's DatabaseFunctions (NOLOGIN, BYPASSRLS, never granted to anyone): what
# a definer function runs as.
OWNER_SUFFIX = "owner"
ALL_ROLE_SUFFIXES = (*ROLE_SUFFIXES, AUDITOR_SUFFIX, AUTHENTICATOR_SUFFIX, OWNER_SUFFIX)
_LONGEST_SUFFIX = max(len("_" + suffix) for suffix in ALL_ROLE_SUFFIXES)  # "_authenticated", "_authenticator"


def quote(name: str) -> str:
    """A quoted identifier (names are validated identifiers; quoting keeps keywords safe)."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """An escape-string literal: right whatever ``standard_conforming_strings`` says."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def fit(name: str, *parts: str) -> str:
    """``name`` if it fits in 63 bytes, else a prefix plus a short hash of the whole."""
    if len(name.encode()) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256("\0".join((name, *parts)).encode()).hexdigest()[:8]
    return name.encode()[: MAX_IDENTIFIER - 9].decode(errors="ignore") + "_" + digest


def role_prefix(database: str) -> str:
    """Prefix of a project's roles: the database name, or a hashed form if too long."""
    if len(database) + _LONGEST_SUFFIX <= MAX_IDENTIFIER:
        return database
    digest = hashlib.sha256(database.encode()).hexdigest()[:8]
    # `$` cannot occur in a database name of the spec language, so no other project's
    # database name can spell this prefix (roles are cluster-wide).
    return database[: MAX_IDENTIFIER - _LONGEST_SUFFIX - 9] + "$" + digest


def role(database: str, suffix: str) -> str:
    """The physical role for ``anon``/``authenticated``/``service_role``/``auditor``/``authenticator``."""
    return f"{role_prefix(database)}_{suffix}"


def primary_key(table: str) -> str:
    return fit(f"{table}_pkey", table)


def unique(table: str, column: str) -> str:
    return fit(f"{table}_{column}_key", table, column)


def check(table: str, column: str) -> str:
    return fit(f"{table}_{column}_check", table, column)


def foreign_key(table: str, column: str) -> str:
    return fit(f"{table}_{column}_fkey", table, column)


def index(table: str, columns: list[str], unique_: bool, method: str = "btree", where: str | None = None) -> str:
    """``<table>_<columns>_idx|uidx``; another method or a predicate adds a mark, so that
    two indexes over the same columns never derive the same name."""
    marks = "" if method == "btree" else f"_{method}"
    if where is not None:
        marks += "_" + hashlib.sha256(where.encode()).hexdigest()[:6]
    kind = "uidx" if unique_ else "idx"
    return fit(f"{table}_{'_'.join(columns)}{marks}_{kind}", table, *columns, method, where or "")


AUDIT_TRIGGER = "kliv_audit"
