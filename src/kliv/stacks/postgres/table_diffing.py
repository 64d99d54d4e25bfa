"""The tables' part of a project database's plan: create, alter, rename and drop tables, their
columns, constraints and indexes (pure).

A mixin of :class:`kliv.stacks.postgres.diffing._Differ`, which holds the state it reads
(desired, observed, applied) and calls it for each table.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from kliv.stacks.errors import EngineError
from kliv.stacks.plans import Precondition, Risk
from kliv.stacks.postgres import naming, privileges
from kliv.stacks.postgres.catalog import ObservedColumn, ObservedDatabase, ObservedTable
from kliv.stacks.postgres.changing import (
    COLUMNS,
    CONSTRAINTS,
    CREATE_TABLES,
    DROP_CONSTRAINTS,
    DROP_TABLES,
    FOREIGN_KEYS,
    INDEXES,
    RENAMES,
    SECURITY,
    TRIGGERS,
    _Resource,
    widening,
)
from kliv.stacks.postgres.desired import (
    ColumnState,
    ConstraintState,
    DatabaseState,
    TableState,
    expression,
    text_digest,
)
from kliv.stacks.postgres.naming import literal, quote
from kliv.stacks.postgres.preconditions import CHECKED, no_duplicates, settled

if TYPE_CHECKING:
    from kliv.stacks.postgres.diffing import Applied, ServerState


# Execution stages within the project database's transaction.
class TableDiffing:
    """The differ's table methods, over the state :class:`~kliv.stacks.postgres.diffing._Differ` keeps."""

    desired: DatabaseState
    observed: ObservedDatabase
    server: ServerState
    applied: Applied
    fingerprints: dict[str, str]
    resources: dict[str, _Resource]
    retyped: set[tuple[str, str]]  # (table, column) whose type changes
    preconditions: list[Precondition]
    grantees: str

    def resource(self, ref: str, exists: bool) -> _Resource:
        if ref not in self.resources:
            self.resources[ref] = _Resource(ref, "update" if exists else "create")
        return self.resources[ref]

    def unchanged(self, key: str, desired_text: str) -> bool:
        record = self.applied.fingerprints.get(key)
        if record is None or len(record) != 2 or record[1] != self.fingerprints.get(key):
            return False
        # Records written before digests were kept hold the text itself.
        return record[0] == desired_text or record[0] == text_digest(desired_text)

    def _table(self, table: TableState) -> None:
        observed = self.observed.tables.get(table.name)
        resource = self.resource(table.resource, observed is not None)
        if observed is None and table.renamed_from and table.renamed_from in self.observed.tables:
            observed = self.observed.tables[table.renamed_from]
            resource.action = "update"
            resource.add(
                f"rename table {table.renamed_from} to {table.name}",
                f"ALTER TABLE {quote(table.renamed_from)} RENAME TO {quote(table.name)}",
                RENAMES,
                "rename",
            )
            old = table.renamed_from
            self._rekey(f":{old}.", f":{table.name}.")
            self.observed.policies = {
                (table.name if t == old else t, n): fp for (t, n), fp in self.observed.policies.items()
            }
            observed = self.observed.tables[old] = observed.editable()  # a reading's tables are shared
            self._rename_derived(table, observed, resource, f"{old}_", f"{table.name}_")
        elif observed is not None and table.column_renames:
            observed = self.observed.tables[table.name] = observed.editable()
        if observed is None:
            self._create_table(table, resource)
        else:
            self._alter_table(table, observed, resource)

    def _rekey(self, old: str, new: str, exact: bool = False) -> None:
        """Follow a rename in the observed and recorded fingerprints (keys ``kind:table.object``)."""
        for fingerprints in (self.fingerprints, self.applied.fingerprints):
            for key in list(fingerprints):
                kind, _, rest = key.partition(":")
                if (exact and f":{rest}" == old) or (not exact and f":{rest}".startswith(old)):
                    fingerprints[f"{kind}{new}{f':{rest}'[len(old) :]}"] = fingerprints.pop(key)  # type: ignore[assignment]

    def _rename_derived(
        self, table: TableState, observed: ObservedTable, resource: _Resource, old: str, new: str
    ) -> None:
        """Rename constraints and indexes whose derived names follow a renamed table or column.

        Dropping and re-creating them instead would fail for a primary key that other
        tables reference, and rebuild indexes for nothing.
        """
        for name in [n for n in observed.constraints if n.startswith(old)]:
            target = new + name[len(old) :]
            if target in table.constraints and target not in observed.constraints:
                resource.add(
                    f"rename constraint {name} to {target}",
                    f"ALTER TABLE {quote(table.name)} RENAME CONSTRAINT {quote(name)} TO {quote(target)}",
                    RENAMES,
                    "rename",
                )
                observed.constraints[target] = observed.constraints.pop(name)
                self._rekey(f":{table.name}.{name}", f":{table.name}.{target}", exact=True)
        for name in [n for n in observed.indexes if n.startswith(old)]:
            target = new + name[len(old) :]
            if target in table.indexes and target not in observed.indexes:
                resource.add(
                    f"rename index {name} to {target}",
                    f"ALTER INDEX {quote(name)} RENAME TO {quote(target)}",
                    RENAMES,
                    "rename",
                )
                observed.indexes[target] = observed.indexes.pop(name)
                self._rekey(f":{name}", f":{target}", exact=True)

    def _column_sql(self, column: ColumnState) -> str:
        parts = [quote(column.name), column.ddl_type]
        if column.generated is not None:
            parts.append(f"GENERATED ALWAYS AS {expression(column.generated)} STORED")
        if column.identity:
            parts.append(
                "GENERATED ALWAYS AS IDENTITY" if column.identity == "a" else "GENERATED BY DEFAULT AS IDENTITY"
            )
        if not column.nullable:
            parts.append("NOT NULL")
        if column.default is not None:
            parts.append(f"DEFAULT {expression(column.default)}")
        return " ".join(parts)

    def _create_table(self, table: TableState, resource: _Resource) -> None:
        name = quote(table.name)
        columns = ",\n  ".join(self._column_sql(c) for c in table.columns.values())
        resource.add(f"create table {table.name}", f"CREATE TABLE {name} (\n  {columns}\n)", CREATE_TABLES)
        for constraint in table.constraints.values():
            stage = FOREIGN_KEYS if constraint.kind == "f" else CONSTRAINTS
            resource.add(
                f"add constraint {constraint.name}",
                f"ALTER TABLE {name} ADD CONSTRAINT {quote(constraint.name)} {constraint.clause}",
                stage,
            )
        for index in table.indexes.values():
            resource.add(f"create index {index.name}", index.create(table.name), INDEXES)
        for statement in privileges.grant_statements(table, self.desired.roles, replace=False):
            resource.add(privileges.summary(table), statement, SECURITY)
        if table.rls:
            resource.add(
                "enable and force row-level security",
                f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY",
                SECURITY,
            )
        if table.audit:
            resource.add("record row changes in audit.log", _audit_trigger(table.name), TRIGGERS)
        if table.comment:
            resource.add("set table comment", f"COMMENT ON TABLE {name} IS {literal(table.comment)}", SECURITY)
        for column in table.columns.values():
            if column.comment:
                resource.add(
                    f"set comment on {column.name}",
                    f"COMMENT ON COLUMN {name}.{quote(column.name)} IS {literal(column.comment)}",
                    SECURITY,
                )

    def _alter_table(self, table: TableState, observed: ObservedTable, resource: _Resource) -> None:
        name = quote(table.name)
        columns = dict(observed.columns)
        for new, old in table.column_renames.items():
            if new not in columns and old in columns:
                resource.add(
                    f"rename column {old} to {new}",
                    f"ALTER TABLE {name} RENAME COLUMN {quote(old)} TO {quote(new)}",
                    RENAMES,
                    "rename",
                )
                columns[new] = dataclasses.replace(columns.pop(old), name=new)
                self._rekey(f":{table.name}.{old}", f":{table.name}.{new}", exact=True)
                self._rename_derived(table, observed, resource, f"{table.name}_{old}_", f"{table.name}_{new}_")
        for column in table.columns.values():
            current = columns.pop(column.name, None)
            if current is None:
                risk: Risk = "safe"
                if not column.nullable and column.default is None and not column.identity:
                    risk = "data-loss"
                resource.add(
                    f"add column {column.name}" + (" (NOT NULL without a default)" if risk != "safe" else ""),
                    f"ALTER TABLE {name} ADD COLUMN {self._column_sql(column)}",
                    COLUMNS,
                    risk,
                )
                if column.comment:
                    resource.add(
                        f"set comment on {column.name}",
                        f"COMMENT ON COLUMN {name}.{quote(column.name)} IS {literal(column.comment)}",
                        SECURITY,
                    )
            else:
                self._alter_column(table, column, current, resource)
        for leftover in columns.values():
            resource.add(
                f"drop column {leftover.name} (its data is lost)",
                f"ALTER TABLE {name} DROP COLUMN {quote(leftover.name)}",
                COLUMNS,
                "data-loss",
            )
        self._constraints(table, observed, resource)
        self._indexes(table, observed, resource)
        roles = self.desired.roles
        if privileges.desired_grants(table, roles) != privileges.observed_grants(observed.grants, roles):
            for statement in privileges.grant_statements(table, roles, replace=True):
                resource.add(privileges.summary(table), statement, SECURITY)
        if table.rls and not (observed.rls and observed.force):
            resource.add(
                "enable and force row-level security",
                f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY",
                SECURITY,
            )
        elif not table.rls and (observed.rls or observed.force):
            resource.add(
                "disable row-level security (every granted role sees every row)",
                f"ALTER TABLE {name} DISABLE ROW LEVEL SECURITY, NO FORCE ROW LEVEL SECURITY",
                SECURITY,
                "destructive",
            )
        if table.audit and not observed.audit:
            resource.add("record row changes in audit.log", _audit_trigger(table.name), TRIGGERS)
        elif not table.audit and observed.audit:
            resource.add(
                "stop recording row changes", f"DROP TRIGGER {quote(naming.AUDIT_TRIGGER)} ON {name}", TRIGGERS
            )
        if (table.comment or None) != (observed.comment or None):
            comment = literal(table.comment) if table.comment else "NULL"
            resource.add("set table comment", f"COMMENT ON TABLE {name} IS {comment}", SECURITY)

    def _alter_column(
        self, table: TableState, column: ColumnState, current: ObservedColumn, resource: _Resource
    ) -> None:
        """Column changes in the only order Postgres accepts them all: the old default goes
        first, then nullability, type and identity, and the new default last."""
        target = f"ALTER TABLE {quote(table.name)} ALTER COLUMN {quote(column.name)}"
        self._generation(table, column, current, resource, target)
        if current.generated:  # its expression is not a default (nor, dropped, any more)
            current = dataclasses.replace(current, generated=False, default=None)
        retype = column.type != current.type
        reidentify = column.identity != current.identity
        new_default = column.default is not None and not self.unchanged(
            f"default:{table.name}.{column.name}", column.default
        )
        has_default = current.default is not None and not current.identity
        # An old default that is being replaced must go before a retype (it may not cast to the
        # new type), and any default before an identity (which has none).
        dropped = has_default and (
            column.default is None or (retype and new_default) or bool(column.identity and reidentify)
        )
        if dropped:
            why = f"drop default of {column.name}" if column.default is None else f"drop old default of {column.name}"
            resource.add(why, f"{target} DROP DEFAULT", COLUMNS)
        if not column.nullable and current.nullable:
            risk: Risk = "destructive" if column.default is not None or column.identity else "data-loss"
            resource.add(
                f"make {column.name} NOT NULL (fails if rows hold NULL)", f"{target} SET NOT NULL", COLUMNS, risk
            )
        elif column.nullable and not current.nullable:
            resource.add(f"allow NULL in {column.name}", f"{target} DROP NOT NULL", COLUMNS)
        if retype:
            safe = widening(current.type, column.type)
            resource.add(
                f"change type of {column.name} from {current.type} to {column.type}"
                + ("" if safe else " (values may not fit)"),
                f"{target} TYPE {column.ddl_type} USING {quote(column.name)}::{column.ddl_type}",
                COLUMNS,
                "safe" if safe else "data-loss",
            )
            # Postgres refuses to retype a column a policy uses: those policies are rebuilt around it.
            self.retyped.add((table.name, column.name))
        if reidentify:
            kind = "ALWAYS" if column.identity == "a" else "BY DEFAULT"
            if not current.identity:
                resource.add(
                    f"make {column.name} an identity column", f"{target} ADD GENERATED {kind} AS IDENTITY", COLUMNS
                )
                # Existing rows hold values already: continue after the largest.
                resource.add(
                    f"continue {column.name} after existing values",
                    f"SELECT setval(pg_get_serial_sequence({literal(quote(table.name))}, {literal(column.name)}), "
                    f"coalesce(max({quote(column.name)}), 0) + 1, false) FROM {quote(table.name)}",
                    COLUMNS,
                )
            elif not column.identity:
                resource.add(f"stop generating {column.name}", f"{target} DROP IDENTITY", COLUMNS)
            else:
                resource.add(f"generate {column.name} {kind.lower()}", f"{target} SET GENERATED {kind}", COLUMNS)
        if column.default is not None and (new_default or dropped):
            resource.add(f"set default of {column.name}", f"{target} SET DEFAULT {expression(column.default)}", COLUMNS)
        if (column.comment or None) != (current.comment or None):
            comment = literal(column.comment) if column.comment else "NULL"
            resource.add(
                f"set comment on {column.name}",
                f"COMMENT ON COLUMN {quote(table.name)}.{quote(column.name)} IS {comment}",
                SECURITY,
            )

    def _generation(
        self, table: TableState, column: ColumnState, current: ObservedColumn, resource: _Resource, target: str
    ) -> None:
        """A generated column stays as it is, or becomes a plain one keeping its values.

        Anything else would drop and add the column (its indexes, constraints and policies with it):
        refused with the way to do it instead.
        """
        key = f"default:{table.name}.{column.name}"
        if column.generated is None:
            if current.generated:
                resource.add(f"stop generating {column.name} (its values stay)", f"{target} DROP EXPRESSION", COLUMNS)
            return
        assert column.expression_text is not None
        if current.generated and self.unchanged(key, column.expression_text):
            return
        what = "change the expression of" if current.generated else "turn into a generated column"
        raise EngineError(
            f"cannot {what} column `{table.name}.{column.name}` in place: Postgres would drop and add it",
            "add a new column with the `generated` expression, then drop the old one in a later apply",
        )

    def _constraints(self, table: TableState, observed: ObservedTable, resource: _Resource) -> None:
        name = quote(table.name)
        for constraint in table.constraints.values():
            key = f"constraint:{table.name}.{constraint.name}"
            stage = FOREIGN_KEYS if constraint.kind == "f" else CONSTRAINTS
            current = observed.constraints.get(constraint.name)
            if current is not None:
                if self.unchanged(key, constraint.text) or _same_key(constraint, current, table.column_renames):
                    continue
                resource.add(
                    f"replace constraint {constraint.name}",
                    f"ALTER TABLE {name} DROP CONSTRAINT {quote(constraint.name)}",
                    DROP_CONSTRAINTS,
                )
            checked = current is None and constraint.kind in ("p", "u") and settled(observed, table, constraint.columns)
            why = f"add constraint {constraint.name}" + (
                CHECKED if checked else " (fails if rows violate it)" if current is None else ""
            )
            if checked:
                self.preconditions.append(
                    no_duplicates(table, constraint.columns, None, f"unique constraint {constraint.name}", why)
                )
            resource.add(why, f"ALTER TABLE {name} ADD CONSTRAINT {quote(constraint.name)} {constraint.clause}", stage)
        for extra in sorted(set(observed.constraints) - set(table.constraints)):
            resource.add(
                f"drop constraint {extra}",
                f"ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {quote(extra)}",
                DROP_CONSTRAINTS,
            )

    def _indexes(self, table: TableState, observed: ObservedTable, resource: _Resource) -> None:
        for index in table.indexes.values():
            current = observed.indexes.get(index.name)
            if current is not None:
                valid = current[1]
                if valid and self.unchanged(f"index:{index.name}", index.create(table.name)):
                    continue
                # Replaced inside the transaction: if the new index cannot be built (a new
                # unique one over duplicates), the old one, and its guarantee, stay.
                resource.add(
                    f"replace index {index.name}" + ("" if valid else " (left invalid by a failed build)"),
                    f"DROP INDEX IF EXISTS {quote(index.name)}",
                    DROP_CONSTRAINTS,
                )
                resource.add(f"create index {index.name}", index.create(table.name), INDEXES)
                continue
            # A new index on an existing table is built without blocking writes, after the transaction.
            checked = index.unique and settled(observed, table, index.columns)
            why = f"create index {index.name} concurrently" + (CHECKED if checked else "")
            resource.add(why, index.create(table.name, concurrently=True), INDEXES, phase="online")
            if checked:
                self.preconditions.append(
                    no_duplicates(table, index.columns, index.where, f"unique index {index.name}", why)
                )
        for extra in sorted(set(observed.indexes) - set(table.indexes)):
            resource.add(f"drop index {extra}", f"DROP INDEX IF EXISTS {quote(extra)}", DROP_CONSTRAINTS)

    def _removed_tables(self) -> None:
        present = {t.resource for t in self.desired.tables.values()}
        for ref, record in self.applied.resources.items():
            if record.kind != "Table" or ref in present:
                continue
            resource = self.resource(ref, True)
            resource.action = "delete"
            physical = record.physical
            if physical in self.desired.tables:
                # Another Table spec (a renamed document) declares the same table: it stays.
                resource.summary.append(f"forget table {physical}: another Table spec declares it now")
            elif record.retain:
                resource.summary.append(f"forget table {physical} (deletionPolicy Retain: the table and its data stay)")
            elif physical in self.observed.tables:
                resource.add(
                    f"drop table {physical} (deletionPolicy Delete: its data is lost)",
                    f"DROP TABLE {quote(physical)} CASCADE",
                    DROP_TABLES,
                    "data-loss",
                )

    # -- policies ------------------------------------------------------------------------------


def _same_key(constraint: ConstraintState, current: tuple[str, str, str | None], renames: dict[str, str]) -> bool:
    """Primary and unique keys compare by their columns, followed through column renames.

    Re-creating a key instead would fail when a foreign key depends on it.
    """
    kind, _, definition = current
    if kind != constraint.kind or kind not in ("p", "u") or not definition or "(" not in definition:
        return False
    previous = {old: new for new, old in renames.items()}
    inside = definition[definition.index("(") + 1 : definition.rindex(")")]
    columns = tuple(previous.get(c.strip().strip('"'), c.strip().strip('"')) for c in inside.split(","))
    return columns == constraint.columns


def _audit_trigger(table: str) -> str:
    return (
        f"CREATE TRIGGER {quote(naming.AUDIT_TRIGGER)} AFTER INSERT OR UPDATE OR DELETE ON {quote(table)} "
        "FOR EACH ROW EXECUTE FUNCTION audit.record()"
    )
