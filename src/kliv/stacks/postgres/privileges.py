"""What each project role may do to a table, by table and by column (pure).

Called by the table differ (:mod:`kliv.stacks.postgres.table_diffing`): the spec's
``columnPrivileges`` become the set of grants the catalog reader reports
(:attr:`kliv.stacks.postgres.catalog.ObservedTable.grants`), so that both sides compare as
sets, and the statements that make a table's grants exactly that set.

A verb a role's entry gives replaces that role's table-wide privilege by column grants (none
for ``[]``); a verb left out keeps the table-wide one. service_role is never restricted.
"""

from __future__ import annotations

from kliv.stacks.postgres.desired import TableState
from kliv.stacks.postgres.naming import quote

_TABLE_WIDE = ("SELECT", "INSERT", "UPDATE", "DELETE")
_VERBS = ("INSERT", "UPDATE")

Grant = tuple[str, str, str]  # (physical role, privilege, column or "")


def desired_grants(table: TableState, roles: dict[str, str]) -> set[Grant]:
    """The grants the project's roles should hold on ``table``."""
    found: set[Grant] = set()
    for suffix, role in roles.items():
        columns = dict(zip(_VERBS, table.column_privileges.get(suffix, (None, None)), strict=True))
        for privilege in _TABLE_WIDE:
            listed = columns.get(privilege)
            if listed is None:
                found.add((role, privilege, ""))
            else:
                found.update((role, privilege, column) for column in listed)
    return found


def observed_grants(grants: set[Grant], roles: dict[str, str]) -> set[Grant]:
    """The part of a table's grants that concerns the project's roles (not its owner's)."""
    ours = set(roles.values())
    return {grant for grant in grants if grant[0] in ours}


def restricted(table: TableState) -> bool:
    return any(verb is not None for verbs in table.column_privileges.values() for verb in verbs)


def grant_statements(table: TableState, roles: dict[str, str], replace: bool) -> list[str]:
    """Statements that leave exactly :func:`desired_grants` (``replace``: revoke what is there first;
    revoking a table privilege also revokes it on every column)."""
    name = quote(table.name)
    everyone = ", ".join(quote(r) for r in roles.values())
    statements = [f"REVOKE ALL ON {name} FROM {everyone}"] if replace else []
    if not restricted(table):
        return [*statements, f"GRANT {', '.join(_TABLE_WIDE)} ON {name} TO {everyone}"]
    for suffix, role in roles.items():
        verbs = dict(zip(_VERBS, table.column_privileges.get(suffix, (None, None)), strict=True))
        wide = [p for p in _TABLE_WIDE if verbs.get(p) is None]
        statements.append(f"GRANT {', '.join(wide)} ON {name} TO {quote(role)}")
        for verb, columns in verbs.items():
            if columns:
                listed = ", ".join(quote(c) for c in columns)
                statements.append(f"GRANT {verb} ({listed}) ON {name} TO {quote(role)}")
    return statements


def summary(table: TableState) -> str:
    """How a plan line says what the grants become."""
    if not restricted(table):
        return f"grant table privileges on {table.name}"
    parts = []
    for suffix, (insert, update) in sorted(table.column_privileges.items()):
        for verb, columns in (("insert", insert), ("update", update)):
            if columns is not None:
                parts.append(f"{suffix} may {verb} {', '.join(columns) if columns else 'no column'}")
    return f"grant privileges on {table.name}: " + "; ".join(parts)
