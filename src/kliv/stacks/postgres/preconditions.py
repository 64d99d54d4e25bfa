"""Checks a plan makes before it runs: that the rows of a table allow a new unique key (pure).

Called by the table differ (:mod:`kliv.stacks.postgres.table_diffing`) for unique constraints and
unique indexes added to existing tables.
"""

from __future__ import annotations

from kliv.stacks.plans import Precondition
from kliv.stacks.postgres.catalog import ObservedTable
from kliv.stacks.postgres.desired import TableState, expression
from kliv.stacks.postgres.naming import quote


def settled(observed: ObservedTable, table: TableState, columns: tuple[str, ...]) -> bool:
    """Whether the table and these columns already have their names (no rename in this plan): a
    precondition reads the table as it is before the plan runs."""
    return observed.name == table.name and all(c in observed.columns for c in columns)


CHECKED = " (checked at plan: no duplicate rows)"
UNCHECKED = " (too many rows to check at plan: fails if they hold duplicates)"


def no_duplicates(
    table: TableState, keys: tuple[str, ...], predicate: str | None, what: str, summary: str
) -> Precondition:
    """A unique index built concurrently fails over duplicates after the transaction, leaving an invalid
    index; a unique constraint fails the whole transaction: the rows are checked at plan instead (NULLs
    never collide in a unique index)."""
    columns = ", ".join(quote(c) for c in keys)
    where = " AND ".join([f"{quote(c)} IS NOT NULL" for c in keys] + ([expression(predicate)] if predicate else []))
    return Precondition(
        table.resource,
        f"SELECT EXISTS (SELECT 1 FROM {quote(table.name)} WHERE {where} GROUP BY {columns} HAVING count(*) > 1)",
        f"{what} cannot be built: rows of {table.name} already hold duplicate values of ({', '.join(keys)})",
        "remove the duplicate rows first, or drop `unique: true`",
        summary,
        summary.replace(CHECKED, UNCHECKED),
    )
