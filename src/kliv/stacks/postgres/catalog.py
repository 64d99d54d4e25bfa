"""What exists: a project database read from the Postgres catalog in one round trip.

Called by the engine before diffing (and after applying, to record what
Postgres made of our expressions). One statement returns everything as JSON,
so the cost does not grow with round trips as a project grows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg

_CATALOG_SQL = """
with t as (
    select c.oid, c.relname, c.relrowsecurity, c.relforcerowsecurity
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'p')
)
select json_build_object(
  'tables', (select coalesce(json_agg(json_build_object(
      'name', t.relname, 'rls', t.relrowsecurity, 'force', t.relforcerowsecurity,
      'comment', obj_description(t.oid, 'pg_class'))), '[]') from t),
  'columns', (select coalesce(json_agg(json_build_object(
      'table', t.relname, 'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
      'notnull', a.attnotnull, 'identity', a.attidentity, 'default', pg_get_expr(d.adbin, d.adrelid),
      'comment', col_description(a.attrelid, a.attnum)) order by t.relname, a.attnum), '[]')
      from pg_attribute a join t on t.oid = a.attrelid
      left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
      where a.attnum > 0 and not a.attisdropped),
  'constraints', (select coalesce(json_agg(json_build_object(
      'table', t.relname, 'name', k.conname, 'kind', k.contype, 'definition', pg_get_constraintdef(k.oid))), '[]')
      from pg_constraint k join t on t.oid = k.conrelid where k.contype in ('p', 'u', 'c', 'f')),
  'indexes', (select coalesce(json_agg(json_build_object(
      'table', t.relname, 'name', ic.relname, 'definition', pg_get_indexdef(i.indexrelid), 'valid', i.indisvalid,
      'constraint', exists(select 1 from pg_constraint k where k.conindid = i.indexrelid and k.contype in ('p', 'u')))),
      '[]') from pg_index i join t on t.oid = i.indrelid join pg_class ic on ic.oid = i.indexrelid),
  'policies', (select coalesce(json_agg(json_build_object(
      'table', t.relname, 'name', p.polname, 'command', p.polcmd,
      'roles', (select coalesce(array_agg(r.rolname order by r.rolname), '{}')
                from pg_roles r where r.oid = any(p.polroles)),
      'using', pg_get_expr(p.polqual, p.polrelid), 'with_check', pg_get_expr(p.polwithcheck, p.polrelid))), '[]')
      from pg_policy p join t on t.oid = p.polrelid),
  'triggers', (select coalesce(json_agg(t.relname), '[]')
      from pg_trigger g join t on t.oid = g.tgrelid where g.tgname = 'kliv_audit'),
  'enums', (select coalesce(json_object_agg(x.typname, x.labels), '{}') from (
      select ty.typname, array_agg(e.enumlabel order by e.enumsortorder) as labels
      from pg_type ty join pg_namespace n on n.oid = ty.typnamespace join pg_enum e on e.enumtypid = ty.oid
      where n.nspname = 'public' group by ty.typname) x),
  'bootstrap', (select obj_description(oid, 'pg_namespace') from pg_namespace where nspname = 'audit')
)
"""

_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}


@dataclasses.dataclass(frozen=True)
class ObservedColumn:
    name: str
    type: str
    nullable: bool
    identity: str
    default: str | None
    comment: str | None


@dataclasses.dataclass(frozen=True)
class ObservedPolicy:
    name: str
    table: str
    command: str
    roles: tuple[str, ...]
    using: str | None
    with_check: str | None

    @property
    def definition(self) -> str:
        return f"{self.command} TO {','.join(self.roles)} USING {self.using} WITH CHECK {self.with_check}"


@dataclasses.dataclass
class ObservedTable:
    name: str
    rls: bool
    force: bool
    comment: str | None
    audit: bool = False
    columns: dict[str, ObservedColumn] = dataclasses.field(default_factory=dict)
    constraints: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # name -> (kind, definition)
    indexes: dict[str, tuple[str, bool]] = dataclasses.field(default_factory=dict)  # name -> (definition, valid)


@dataclasses.dataclass
class ObservedDatabase:
    """What exists in a project's database (empty when the database does not)."""

    exists: bool
    bootstrap: str | None = None
    enums: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    tables: dict[str, ObservedTable] = dataclasses.field(default_factory=dict)
    policies: dict[tuple[str, str], ObservedPolicy] = dataclasses.field(default_factory=dict)

    def fingerprints(self) -> dict[str, str]:
        """Postgres' own spelling of every expression-bearing object, keyed as the inventory keys them."""
        found: dict[str, str] = {}
        for table in self.tables.values():
            for column in table.columns.values():
                if column.default is not None:
                    found[f"default:{table.name}.{column.name}"] = column.default
            for name, (kind, definition) in table.constraints.items():
                found[f"constraint:{table.name}.{name}"] = f"{kind}:{definition}"
            for name, (definition, _) in table.indexes.items():
                found[f"index:{name}"] = definition
        for (table_name, name), policy in self.policies.items():
            found[f"policy:{table_name}.{name}"] = policy.definition
        return found


def observe(connection: psycopg.Connection[Any]) -> ObservedDatabase:
    """Read the public schema of the connected database."""
    row = connection.execute(_CATALOG_SQL).fetchone()
    assert row is not None
    data = row[0]
    tables = {t["name"]: ObservedTable(t["name"], t["rls"], t["force"], t["comment"]) for t in data["tables"]}
    for c in data["columns"]:
        tables[c["table"]].columns[c["name"]] = ObservedColumn(
            c["name"], c["type"], not c["notnull"], c["identity"] or "", c["default"], c["comment"]
        )
    for k in data["constraints"]:
        tables[k["table"]].constraints[k["name"]] = (k["kind"], k["definition"])
    for i in data["indexes"]:
        if not i["constraint"]:
            tables[i["table"]].indexes[i["name"]] = (i["definition"], i["valid"])
    for name in data["triggers"]:
        tables[name].audit = True
    policies = {
        (p["table"], p["name"]): ObservedPolicy(
            p["name"], p["table"], _COMMANDS[p["command"]], tuple(p["roles"]), p["using"], p["with_check"]
        )
        for p in data["policies"]
    }
    enums = {name: tuple(labels) for name, labels in data["enums"].items()}
    return ObservedDatabase(True, data["bootstrap"], enums, tables, policies)
