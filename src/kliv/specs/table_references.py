"""Project-level checks of a Table's keys and constraints: foreign keys (to project tables or to
``auth.users``, one column or composite), named checks, generated columns, column privileges.

A mixin of :class:`kliv.specs.resolving._Project`, which holds the project's tables and reports
the problems; every problem names the field and, where a name is close to a known one, suggests it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kliv.specs.base import Resource, checked_expression
from kliv.specs.column_types import ColumnType, parse_column_type
from kliv.specs.errors import DANGLING_REFERENCE, Problem
from kliv.specs.expressions import Context
from kliv.specs.projects import Spec
from kliv.specs.suggestions import did_you_mean
from kliv.specs.table import AUTH_USERS, AUTH_USERS_COLUMNS, Column, Table

if TYPE_CHECKING:
    from kliv.specs.rechecking import Lookups


class TableReferences:
    """The resolver's table-constraint methods, over the state ``_Project`` keeps."""

    tables: Lookups
    problems: list[Problem]

    def error(self, spec: Spec[Resource], path: str, message: str, hint: str = "", code: str = "") -> None:
        raise NotImplementedError

    def broken(self, kind: str, name: str) -> bool:
        raise NotImplementedError

    def _expression(
        self, spec: Spec[Resource], path: str, text: str, context: Context, columns: list[str], table: str
    ) -> None:
        raise NotImplementedError

    def _foreign_key(self, spec: Spec[Table], path: str, index: int) -> None:
        column = spec.resource.spec.columns[index]
        reference = column.references
        assert reference is not None
        if reference.table == AUTH_USERS:
            self._auth_users_key(spec, path, column)
            return
        target = self.tables.get(reference.table)
        if target is None:
            if self.broken("Table", reference.table):
                return
            self.error(
                spec,
                f"{path}/references/table",
                f"table `{reference.table}` does not exist",
                did_you_mean(reference.table, self.tables, "tables"),
                DANGLING_REFERENCE,
            )
            return
        if reference.column is None:
            keys = target.primary_key
            if len(keys) != 1:
                self.error(
                    spec,
                    f"{path}/references",
                    f"table `{reference.table}` has no single-column primary key to reference",
                    "name the referenced `column` explicitly",
                )
                return
            target_column = keys[0]
        else:
            found = next((c for c in target.spec.columns if c.name == reference.column), None)
            if found is None:
                self.error(
                    spec,
                    f"{path}/references/column",
                    f"column `{reference.column}` does not exist on table `{reference.table}`",
                    did_you_mean(reference.column, [c.name for c in target.spec.columns], "columns"),
                )
                return
            target_column = found
            if not is_unique(target, target_column.name):
                self.error(
                    spec,
                    f"{path}/references/column",
                    f"`{reference.table}.{target_column.name}` is neither a primary key nor unique",
                    "reference the primary key, or mark the target column `unique: true`",
                )
        source_type, target_type = column.parsed_type, target_column.parsed_type
        if not compatible(source_type, target_type):
            self.error(
                spec,
                f"{path}/type",
                f"type `{source_type}` cannot reference `{reference.table}.{target_column.name}` "
                f"of type `{target_type}`",
                f"use `type: {target_type}`",
            )
        if reference.on_delete == "setNull" and not column.is_nullable:
            self.error(
                spec,
                f"{path}/references/onDelete",
                "`setNull` on a column that is not nullable",
                "make the column nullable or use `cascade`",
            )

    def _auth_users_key(self, spec: Spec[Table], path: str, column: Column) -> None:
        reference = column.references
        assert reference is not None
        name = reference.column or "id"
        target = AUTH_USERS_COLUMNS.get(name)
        if target is None:
            self.error(
                spec,
                f"{path}/references/column",
                f"column `{name}` does not exist on `auth.users`",
                did_you_mean(name, AUTH_USERS_COLUMNS, "columns") or "reference `id`, the user's id",
            )
        elif name != "id":
            self.error(
                spec,
                f"{path}/references/column",
                f"`auth.users.{name}` is neither a primary key nor unique",
                "reference `auth.users` by its primary key: leave `column` out (it is `id`)",
            )
        elif not compatible(column.parsed_type, parse_column_type(target)):
            self.error(
                spec,
                f"{path}/type",
                f"type `{column.parsed_type}` cannot reference `auth.users.id` of type `uuid`",
                "use `type: uuid`",
            )

    def _generated(self, spec: Spec[Table], path: str, index: int) -> None:
        table = spec.resource
        column = table.spec.columns[index]
        assert column.generated is not None
        columns = [c.name for c in table.spec.columns]
        self._expression(spec, f"{path}/generated", column.generated, "generated", columns, table.table_name)
        generated = {c.name for c in table.spec.columns if c.generated is not None}
        for use in checked_expression(column.generated, "generated").columns:
            if use.column in generated:
                self.error(
                    spec,
                    f"{path}/generated",
                    f"generated column `{column.name}` uses generated column `{use.column}`",
                    "Postgres computes generated columns from the other columns only: repeat its expression",
                )
                return

    def _table_constraints(self, spec: Spec[Table]) -> None:
        table = spec.resource
        name = table.table_name
        columns = [c.name for c in table.spec.columns]
        names = _derived_constraint_names(table)
        for index, check in enumerate(table.spec.checks):
            path = f"/spec/checks/{index}"
            self._claim_constraint(spec, names, check.name, f"{path}/name")
            self._expression(spec, f"{path}/expression", check.expression, "check", columns, name)
        for index, key in enumerate(table.spec.foreign_keys):
            path = f"/spec/foreignKeys/{index}"
            if key.name is not None:
                self._claim_constraint(spec, names, key.name, f"{path}/name")
            self._composite_key(spec, path, index)
        for index, entry in enumerate(table.spec.column_privileges):
            for verb, listed in (("insert", entry.insert), ("update", entry.update)):
                self._known_columns(spec, f"/spec/columnPrivileges/{index}/{verb}", listed or [], columns)

    def _claim_constraint(self, spec: Spec[Table], names: dict[str, str], name: str, path: str) -> None:
        owner = names.setdefault(name, path)
        if owner != path:
            self.error(
                spec,
                path,
                f"constraint name `{name}` is already used by {owner} of table `{spec.resource.table_name}`",
                "give the constraint another `name`",
            )

    def _known_columns(self, spec: Spec[Table], path: str, listed: Sequence[str], columns: list[str]) -> bool:
        known = True
        for position, column in enumerate(listed):
            if column not in columns:
                known = False
                self.error(
                    spec,
                    f"{path}/{position}",
                    f"column `{column}` does not exist on table `{spec.resource.table_name}`",
                    did_you_mean(column, columns, "columns"),
                )
        return known

    def _composite_key(self, spec: Spec[Table], path: str, index: int) -> None:
        table = spec.resource
        key = table.spec.foreign_keys[index]
        own = {c.name: c for c in table.spec.columns}
        if not self._known_columns(spec, f"{path}/columns", key.columns, list(own)):
            return
        target_name = key.references.table
        if target_name == AUTH_USERS:
            types = {n: parse_column_type(t) for n, t in AUTH_USERS_COLUMNS.items()}
            unique_sets = [frozenset({"id"})]
        else:
            target = self.tables.get(target_name)
            if target is None:
                if not self.broken("Table", target_name):
                    self.error(
                        spec,
                        f"{path}/references/table",
                        f"table `{target_name}` does not exist",
                        did_you_mean(target_name, self.tables, "tables"),
                        DANGLING_REFERENCE,
                    )
                return
            types = {c.name: c.parsed_type for c in target.spec.columns}
            unique_sets = _unique_sets(target)
        if not self._known_columns(spec, f"{path}/references/columns", key.references.columns, list(types)):
            return
        if frozenset(key.references.columns) not in unique_sets:
            self.error(
                spec,
                f"{path}/references/columns",
                f"({', '.join(key.references.columns)}) of `{target_name}` is neither its primary key nor unique",
                "reference its primary key, or add a unique index over exactly these columns",
            )
        for position, (source, target_column) in enumerate(zip(key.columns, key.references.columns, strict=True)):
            source_type, target_type = own[source].parsed_type, types[target_column]
            if not compatible(source_type, target_type):
                self.error(
                    spec,
                    f"{path}/columns/{position}",
                    f"column `{source}` of type `{source_type}` cannot reference `{target_name}.{target_column}` "
                    f"of type `{target_type}`",
                    f"make `{source}` of type `{target_type}`",
                )
        if key.on_delete == "setNull" and not all(own[c].is_nullable for c in key.columns):
            self.error(
                spec,
                f"{path}/onDelete",
                "`setNull` on columns that are not all nullable",
                "make the columns nullable or use `cascade`",
            )


def compatible(source: ColumnType, target: ColumnType) -> bool:
    return source.family == target.family and source.array_dims == target.array_dims


def is_unique(table: Table, column: str) -> bool:
    keys = table.primary_key
    if len(keys) == 1 and keys[0].name == column:
        return True
    if any(c.name == column and c.unique for c in table.spec.columns):
        return True
    return any(i.unique and i.where is None and i.columns == [column] for i in table.spec.indexes)


def _unique_sets(table: Table) -> list[frozenset[str]]:
    """The column sets a foreign key may reference: the primary key, unique columns, unique indexes."""
    found = [frozenset(c.name for c in table.primary_key)] if table.primary_key else []
    found += [frozenset({c.name}) for c in table.spec.columns if c.unique]
    found += [frozenset(i.columns) for i in table.spec.indexes if i.unique and i.where is None]
    return found


def _derived_constraint_names(table: Table) -> dict[str, str]:
    """Names Postgres (and kliv) derive for a table's constraints, and what they belong to (a check's
    or key's explicit name may not take one)."""
    name = table.table_name
    found = {f"{name}_pkey": "the primary key"} if table.primary_key else {}
    for column in table.spec.columns:
        for suffix, present in (("key", column.unique), ("check", column.check), ("fkey", column.references)):
            if present:
                found[f"{name}_{column.name}_{suffix}"] = f"the `{suffix}` constraint of column `{column.name}`"
    for index, key in enumerate(table.spec.foreign_keys):
        if key.name is None:
            found.setdefault(f"{name}_{'_'.join(key.columns)}_fkey", f"/spec/foreignKeys/{index}")
    return found
