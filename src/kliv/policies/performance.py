"""Performance guardrails: schema shapes that get slow as data grows.

Registered on import by :mod:`kliv.policies`.
"""

from __future__ import annotations

from collections.abc import Iterator

from kliv.policies.rules import Finding, rule
from kliv.specs import ProjectSpecs


@rule(
    "foreign-key-unindexed",
    "warning",
    "A foreign-key column has no index",
    "add an index starting with the column (`indexes: [{columns: [<column>]}]`): deletes of the "
    "referenced rows and joins scan the whole table without it",
)
def foreign_key_unindexed(group: ProjectSpecs) -> Iterator[Finding]:
    for spec in group.tables:
        table = spec.resource
        leading = {entry.columns[0] for entry in table.spec.indexes}
        keys = [c.name for c in table.spec.columns if c.primary_key]
        if keys:
            leading.add(keys[0])
        leading.update(c.name for c in table.spec.columns if c.unique)
        for index, column in enumerate(table.spec.columns):
            if column.references is not None and column.name not in leading:
                yield Finding(
                    spec,
                    f"/spec/columns/{index}/references",
                    f"foreign-key column `{table.table_name}.{column.name}` has no index",
                )
        prefixes = [tuple(entry.columns) for entry in table.spec.indexes] + [tuple(keys)]
        for index, foreign in enumerate(table.spec.foreign_keys):
            columns = tuple(foreign.columns)
            if not any(prefix[: len(columns)] == columns for prefix in prefixes):
                yield Finding(
                    spec,
                    f"/spec/foreignKeys/{index}/columns",
                    f"foreign key ({', '.join(columns)}) of `{table.table_name}` has no index starting with "
                    "its columns",
                )


@rule(
    "varchar-without-length",
    "warning",
    "A column is `varchar` with no length",
    "write `text` (the same type in Postgres, and what its documentation recommends), or `varchar(n)` "
    "if a length limit is meant",
)
def varchar_without_length(group: ProjectSpecs) -> Iterator[Finding]:
    for spec in group.tables:
        for index, column in enumerate(spec.resource.spec.columns):
            parsed = column.parsed_type
            if parsed.base == "varchar" and not parsed.params:
                yield Finding(
                    spec, f"/spec/columns/{index}/type", f"column `{column.name}` is `varchar` with no length"
                )


@rule(
    "json-not-jsonb",
    "warning",
    "A column is `json` rather than `jsonb`",
    "write `jsonb`: stored parsed, indexable (GIN) and comparable; `json` keeps the text as written "
    "and re-parses it on every read",
)
def json_not_jsonb(group: ProjectSpecs) -> Iterator[Finding]:
    for spec in group.tables:
        for index, column in enumerate(spec.resource.spec.columns):
            if column.parsed_type.base == "json":
                yield Finding(spec, f"/spec/columns/{index}/type", f"column `{column.name}` is `json`")
