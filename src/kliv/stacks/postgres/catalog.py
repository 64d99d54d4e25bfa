"""What exists: a project database read from the Postgres catalog in one round trip.

Called by the engine before diffing (and after applying, to record what
Postgres made of our expressions). One statement returns everything as JSON,
so the cost does not grow with round trips as a project grows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

import psycopg

# Expressions are fingerprinted by an md5 of Postgres' stored node trees, not deparsed:
# deparsing every default, check and policy was most of this query's cost.
_CATALOG_SQL = """
with t as (
    select c.oid, c.relname, c.relrowsecurity, c.relforcerowsecurity, c.relacl
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'p')
      and (%(only)s::text[] is null or c.relname = any(%(only)s::text[]))
), descriptions as (
    select objoid, objsubid, description from pg_description
    where classoid = 'pg_class'::regclass and objoid in (select oid from t)
)
select json_build_object(
  'tables', (select coalesce(json_agg(json_build_array(t.relname, t.relrowsecurity, t.relforcerowsecurity,
      (select description from descriptions d where d.objoid = t.oid and d.objsubid = 0))), '[]') from t),
  'columns', (select coalesce(json_agg(json_build_array(
      t.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
      md5(d.adbin::text), c.description, a.attgenerated) order by t.relname, a.attnum), '[]')
      from pg_attribute a join t on t.oid = a.attrelid
      left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
      left join descriptions c on c.objoid = a.attrelid and c.objsubid = a.attnum
      where a.attnum > 0 and not a.attisdropped),
  'constraints', (select coalesce(json_agg(json_build_array(t.relname, k.conname, k.contype,
      md5(concat_ws('|', k.conkey, k.confrelid::regclass, k.confkey, k.confdeltype, k.confupdtype,
                    k.condeferrable, k.condeferred, k.conbin)),
      case when k.contype in ('p', 'u') then pg_get_constraintdef(k.oid) end)), '[]')
      from pg_constraint k join t on t.oid = k.conrelid where k.contype in ('p', 'u', 'c', 'f')),
  'indexes', (select coalesce(json_agg(json_build_array(t.relname, ic.relname,
      md5(concat_ws('|', i.indisunique, ic.relam, i.indkey, i.indclass, i.indexprs, i.indpred)), i.indisvalid)), '[]')
      from pg_index i join t on t.oid = i.indrelid join pg_class ic on ic.oid = i.indexrelid
      where not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid and k.contype in ('p', 'u'))),
  'policies', (select coalesce(json_agg(json_build_array(t.relname, p.polname,
      md5(concat_ws('|', p.polcmd, p.polpermissive, p.polroles, p.polqual, p.polwithcheck)))), '[]')
      from pg_policy p join t on t.oid = p.polrelid),
  -- Who may do what, by table and by column (the owner's own privileges included: filtered by the reader).
  'grants', (select coalesce(json_agg(json_build_array(t.relname, r.rolname, g.privilege_type, null)), '[]')
      from t cross join lateral aclexplode(t.relacl) g join pg_roles r on r.oid = g.grantee),
  'column_grants', (select coalesce(json_agg(json_build_array(t.relname, r.rolname, g.privilege_type, a.attname)),
      '[]')
      from pg_attribute a join t on t.oid = a.attrelid cross join lateral aclexplode(a.attacl) g
      join pg_roles r on r.oid = g.grantee
      where a.attnum > 0 and not a.attisdropped and a.attacl is not null),
  -- Functions and triggers are read whole (not only the tables asked for): few, and cheap.
  'functions', (select coalesce(json_agg(json_build_array(p.proname, pg_get_function_identity_arguments(p.oid),
      pg_get_function_result(p.oid), p.pronargdefaults,
      md5(concat_ws('|', pg_get_functiondef(p.oid), p.proacl::text, p.proowner::regrole::text)))), '[]')
      from pg_proc p where p.pronamespace = 'public'::regnamespace and p.prokind = 'f'),
  'user_triggers', (select coalesce(json_agg(json_build_array(
      case when n.nspname = 'public' then c.relname else n.nspname || '.' || c.relname end, g.tgname,
      md5(pg_get_triggerdef(g.oid)))), '[]')
      from pg_trigger g join pg_class c on c.oid = g.tgrelid join pg_namespace n on n.oid = c.relnamespace
      where not g.tgisinternal and g.tgname <> 'kliv_audit'
        and (n.nspname = 'public' or (n.nspname = 'auth' and c.relname = 'users'))),
  'triggers', (select coalesce(json_agg(t.relname), '[]')
      from pg_trigger g join t on t.oid = g.tgrelid where g.tgname = 'kliv_audit'),
  'enums', (select coalesce(json_object_agg(x.typname, x.labels), '{}') from (
      select ty.typname, array_agg(e.enumlabel order by e.enumsortorder) as labels
      from pg_type ty join pg_namespace n on n.oid = ty.typnamespace join pg_enum e on e.enumtypid = ty.oid
      where n.nspname = 'public' group by ty.typname) x),
  'bootstrap', (select obj_description(oid, 'pg_namespace') from pg_namespace where nspname = 'audit')
)
"""


@dataclasses.dataclass(frozen=True)
class ObservedColumn:
    name: str
    type: str
    nullable: bool
    identity: str
    default: str | None  # fingerprint of the stored default (or generation) expression
    comment: str | None
    generated: bool = False


@dataclasses.dataclass
class ObservedTable:
    name: str
    rls: bool
    force: bool
    comment: str | None
    audit: bool = False
    columns: dict[str, ObservedColumn] = dataclasses.field(default_factory=dict)
    # name -> (kind, fingerprint, definition of primary and unique keys)
    constraints: dict[str, tuple[str, str, str | None]] = dataclasses.field(default_factory=dict)
    indexes: dict[str, tuple[str, bool]] = dataclasses.field(default_factory=dict)  # name -> (fingerprint, valid)
    grants: set[tuple[str, str, str]] = dataclasses.field(default_factory=set)  # (role, privilege, column or "")
    _fingerprints: dict[str, str] | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def fingerprints(self) -> dict[str, str]:
        """Postgres' stored form of this table's expressions (see :meth:`ObservedDatabase.fingerprints`),
        derived once: a table as read is never changed (the differ changes copies, see
        :meth:`editable`)."""
        if self._fingerprints is None:
            found: dict[str, str] = {}
            for column in self.columns.values():
                if column.default is not None:
                    found[f"default:{self.name}.{column.name}"] = column.default
            for name, (_, fingerprint, _) in self.constraints.items():
                found[f"constraint:{self.name}.{name}"] = fingerprint
            for name, (fingerprint, _) in self.indexes.items():
                found[f"index:{name}"] = fingerprint
            self._fingerprints = found
        return self._fingerprints

    def editable(self) -> ObservedTable:
        """A copy to change (a rename re-keys its constraints and indexes)."""
        return dataclasses.replace(
            self, columns=dict(self.columns), constraints=dict(self.constraints), indexes=dict(self.indexes)
        )


@dataclasses.dataclass(frozen=True)
class ObservedFunction:
    name: str
    identity: str  # pg_get_function_identity_arguments(), unquoted
    result: str  # pg_get_function_result()
    defaults: int
    fingerprint: str

    @property
    def signature(self) -> tuple[str, str, int]:
        return (self.identity, self.result, self.defaults)


@dataclasses.dataclass
class ObservedDatabase:
    """What exists in a project's database (empty when the database does not)."""

    exists: bool
    bootstrap: str | None = None
    enums: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    tables: dict[str, ObservedTable] = dataclasses.field(default_factory=dict)
    policies: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)  # (table, name) -> fingerprint
    functions: dict[str, ObservedFunction] = dataclasses.field(default_factory=dict)  # in schema public, by name
    triggers: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)  # (table, name) -> fingerprint

    def refreshed(self, fresh: ObservedDatabase, tables: Collection[str]) -> ObservedDatabase:
        """This observation with ``tables`` as ``fresh`` (observed with ``only=tables``) found them."""
        kept = {name: table for name, table in self.tables.items() if name not in tables}
        policies = {key: value for key, value in self.policies.items() if key[0] not in tables}
        return ObservedDatabase(
            fresh.exists,
            fresh.bootstrap,
            fresh.enums,
            {**kept, **fresh.tables},
            {**policies, **fresh.policies},
            fresh.functions,
            fresh.triggers,
        )

    def fingerprints(self) -> dict[str, str]:
        """Postgres' stored form of every expression-bearing object, keyed as the inventory keys them."""
        found: dict[str, str] = {}
        for table in self.tables.values():
            found.update(table.fingerprints())
        for (table_name, name), fingerprint in self.policies.items():
            found[f"policy:{table_name}.{name}"] = fingerprint
        for name, function in self.functions.items():
            found[f"function:{name}"] = function.fingerprint
        for (table_name, name), fingerprint in self.triggers.items():
            found[f"trigger:{table_name}.{name}"] = fingerprint
        return found


def observe(connection: psycopg.Connection[Any], only: Collection[str] | None = None) -> ObservedDatabase:
    """Read the public schema of the connected database (``only``: of these tables; the enums
    and the bootstrap marker are always read)."""
    row = connection.execute(_CATALOG_SQL, {"only": sorted(only) if only is not None else None}).fetchone()
    assert row is not None
    data = row[0]
    tables = {name: ObservedTable(name, rls, force, comment) for name, rls, force, comment in data["tables"]}
    for table, name, type_, notnull, identity, default, comment, generated in data["columns"]:
        # format_type() quotes type names that are keywords (an enum called "position").
        tables[table].columns[name] = ObservedColumn(
            name, type_.replace('"', ""), not notnull, identity or "", default, comment, generated == "s"
        )
    for table, role, privilege, column in [*data["grants"], *data["column_grants"]]:
        tables[table].grants.add((role, privilege, column or ""))
    for table, name, kind, fingerprint, definition in data["constraints"]:
        tables[table].constraints[name] = (kind, fingerprint, definition)
    for table, name, fingerprint, valid in data["indexes"]:
        tables[table].indexes[name] = (fingerprint, valid)
    for name in data["triggers"]:
        tables[name].audit = True
    policies = {(table, name): fingerprint for table, name, fingerprint in data["policies"]}
    enums = {name: tuple(labels) for name, labels in data["enums"].items()}
    functions = {name: ObservedFunction(name, identity.replace('"', ""), result, defaults, fingerprint)
                 for name, identity, result, defaults, fingerprint in data["functions"]}  # fmt: skip
    triggers = {(table, name): fingerprint for table, name, fingerprint in data["user_triggers"]}
    return ObservedDatabase(True, data["bootstrap"], enums, tables, policies, functions, triggers)
