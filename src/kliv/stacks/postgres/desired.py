"""The desired state of a project's database, built from its specs (pure: no I/O).

Called by the engine before diffing; the catalog reader produces the same
shapes for what exists, so the differ compares like with like.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

from kliv.specs import ProjectSpecs, Table, TablePolicy
from kliv.specs.column_types import ColumnType
from kliv.specs.project import duration_ms
from kliv.specs.table import AUTH_USERS
from kliv.stacks.errors import EngineError
from kliv.stacks.hashing import spec_hash
from kliv.stacks.postgres import naming, routines
from kliv.stacks.postgres.routines import FunctionState, TriggerState

_FORMAT_TYPE = {
    "varchar": "character varying",
    "char": "character",
    "time": "time without time zone",
    "timetz": "time with time zone",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
}
_ON_ACTION = {"noAction": "NO ACTION", "restrict": "RESTRICT", "cascade": "CASCADE",
              "setNull": "SET NULL", "setDefault": "SET DEFAULT"}  # fmt: skip
_COMMANDS = {"select": "SELECT", "insert": "INSERT", "update": "UPDATE", "delete": "DELETE", "all": "ALL"}


def sql_type(column_type: ColumnType) -> str:
    """DDL spelling of a column type (enums quoted)."""
    base = column_type.base if column_type.is_builtin else naming.quote(column_type.base)
    params = "(" + ",".join(str(p) for p in column_type.params) + ")" if column_type.params else ""
    return base + params + "[]" * column_type.array_dims


def format_type(column_type: ColumnType) -> str:
    """How Postgres' format_type() prints this type, for comparison with the catalog."""
    base = _FORMAT_TYPE.get(column_type.base, column_type.base)
    values = column_type.params
    # Postgres' own defaults, as format_type() prints them: char is char(1), numeric(p) is numeric(p,0).
    if column_type.base == "char" and not values:
        values = (1,)
    if column_type.base == "numeric" and len(values) == 1:
        values = (values[0], 0)
    params = "(" + ",".join(str(p) for p in values) + ")" if values else ""
    if params and base.endswith(" time zone"):
        head, _, zone = base.partition(" with")
        text = f"{head}{params} with{zone}"
    else:
        text = base + params
    return text + "[]" * column_type.array_dims


def expression(text: str) -> str:
    """A validated SQL fragment, embedded as the spec language requires: ``(<text>\\n)``."""
    return f"({text}\n)"


@dataclasses.dataclass(frozen=True)
class ColumnState:
    name: str
    type: str  # format_type spelling
    ddl_type: str
    nullable: bool
    identity: str  # "" | "a" (always) | "d" (by default)
    default: str | None
    comment: str | None
    generated: str | None = None  # the expression of a stored generated column

    @property
    def expression_text(self) -> str | None:
        """What the catalog's fingerprint of the column's pg_attrdef entry stands for."""
        return self.default if self.generated is None else f"GENERATED {self.generated}"


@dataclasses.dataclass(frozen=True)
class ConstraintState:
    name: str
    kind: str  # p, u, c, f
    clause: str  # e.g. PRIMARY KEY ("id")
    columns: tuple[str, ...]

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.clause}"


@dataclasses.dataclass(frozen=True)
class IndexState:
    name: str
    unique: bool
    columns: tuple[str, ...]
    method: str
    where: str | None

    def create(self, table: str, concurrently: bool = False) -> str:
        where = f" WHERE {expression(self.where)}" if self.where else ""
        cols = ", ".join(naming.quote(c) for c in self.columns)
        return (
            f"CREATE {'UNIQUE ' if self.unique else ''}INDEX {'CONCURRENTLY ' if concurrently else ''}"
            f"{naming.quote(self.name)} ON {naming.quote(table)} USING {self.method} ({cols}){where}"
        )


@dataclasses.dataclass(frozen=True)
class PolicyState:
    name: str
    resource: str
    command: str  # SELECT | INSERT | UPDATE | DELETE | ALL
    roles: tuple[str, ...]  # physical, sorted
    using: str | None
    with_check: str | None
    restrictive: bool = False

    @property
    def text(self) -> str:
        # The same shape as ObservedPolicy.definition, with the spec's expressions (a permissive
        # policy's text is as it was before restrictive ones existed: its record still matches).
        mode = "AS RESTRICTIVE " if self.restrictive else ""
        return f"{mode}{self.command} TO {','.join(self.roles)} USING {self.using} WITH CHECK {self.with_check}"


@dataclasses.dataclass
class TableState:
    name: str
    resource: str
    spec_hash: str
    columns: dict[str, ColumnState]
    constraints: dict[str, ConstraintState]
    indexes: dict[str, IndexState]
    rls: bool
    audit: bool
    comment: str | None
    renamed_from: str | None = None
    column_renames: dict[str, str] = dataclasses.field(default_factory=dict)  # new -> old
    # spec role -> (insert columns, update columns); None: the table-wide privilege
    column_privileges: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...] | None]] = dataclasses.field(
        default_factory=dict
    )
    retain: bool = True
    _fingerprints: dict[str, str] | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def fingerprints(self) -> dict[str, str]:
        """The text of this table's expressions (see :meth:`DatabaseState.fingerprints`), derived once:
        a table's state is kept per spec model and never changed."""
        if self._fingerprints is None:
            found: dict[str, str] = {}
            for column in self.columns.values():
                if column.expression_text is not None:
                    found[f"default:{self.name}.{column.name}"] = column.expression_text
            for constraint in self.constraints.values():
                found[f"constraint:{self.name}.{constraint.name}"] = constraint.text
            for index in self.indexes.values():
                found[f"index:{index.name}"] = index.create(self.name)
            self._fingerprints = found
        return self._fingerprints


@dataclasses.dataclass
class DatabaseState:
    name: str
    resource: str
    roles: dict[str, str]  # spec role -> physical role
    enums: dict[str, tuple[str, ...]]
    tables: dict[str, TableState]
    policies: dict[tuple[str, str], PolicyState]  # (table, policy) -> state
    policy_resources: dict[str, str] = dataclasses.field(default_factory=dict)  # resource -> spec hash
    auditor: str = ""  # owner of audit.record(): a role no one is granted
    authenticator: str = ""  # the LOGIN role of applications (member of the three project roles)
    owner: str = ""  # owner of the DatabaseFunctions: what a definer function runs as
    functions: dict[str, FunctionState] = dataclasses.field(default_factory=dict)  # name -> state
    triggers: dict[tuple[str, str], TriggerState] = dataclasses.field(default_factory=dict)  # (table, name)
    statement_timeout_ms: int = 30_000  # the database's default for the application's queries

    @property
    def all_roles(self) -> list[str]:
        """Every role the project owns on the server (claimed with its database)."""
        return [*self.roles.values(), self.auditor, self.authenticator, *([self.owner] if self.owner else [])]

    def fingerprints(self) -> dict[str, str]:
        """The spec's text of every expression-bearing object, keyed as the catalog keys them
        (the inventory keeps :func:`text_digest` of each)."""
        found: dict[str, str] = {}
        for table in self.tables.values():
            found.update(table.fingerprints())
        for (table_name, name), policy in self.policies.items():
            found[f"policy:{table_name}.{name}"] = policy.text
        for name, function in self.functions.items():
            found[f"function:{name}"] = function.text
        for (table_name, name), trigger in self.triggers.items():
            found[f"trigger:{table_name}.{name}"] = trigger.text
        return found


# A long-lived process that loads the same files again plans the same Table objects again and
# again: the loader keeps the models of unchanged files, so a table's state is derived once per
# model. (The operator builds new models at each reconcile: not yet.)
# Keyed by identity (the model itself is kept, so an id is never reused while cached).
_TABLE_STATES: dict[int, tuple[Table, TableState]] = {}
_CACHED_TABLES = 50_000  # then forgotten at once (models of edited files are never asked for again)


def _cached_table(spec: Table) -> TableState:
    """``_table(spec)``, derived once per model (a TableState is never changed once built)."""
    found = _TABLE_STATES.get(id(spec))
    if found is not None and found[0] is spec:
        return found[1]
    state = _table(spec, spec.ref)
    if len(_TABLE_STATES) >= _CACHED_TABLES:
        _TABLE_STATES.clear()
    _TABLE_STATES[id(spec)] = (spec, state)
    return state


_POLICY_STATES: dict[int, tuple[TablePolicy, tuple[str, ...], PolicyState, str]] = {}


def _cached_policy(policy: TablePolicy, roles: dict[str, str]) -> tuple[PolicyState, str]:
    """A policy's state and spec hash, derived once per model and project roles (as tables are)."""
    physical = tuple(roles.values())
    found = _POLICY_STATES.get(id(policy))
    if found is not None and found[0] is policy and found[1] == physical:
        return found[2], found[3]
    state = PolicyState(
        name=policy.policy_name,
        resource=policy.ref,
        command=_COMMANDS[policy.spec.command],
        roles=tuple(sorted(roles[r] for r in policy.spec.roles)),
        using=policy.spec.using,
        with_check=policy.spec.with_check,
        restrictive=policy.spec.mode == "restrictive",
    )
    digest = spec_hash(policy.spec)
    if len(_POLICY_STATES) >= _CACHED_TABLES:
        _POLICY_STATES.clear()
    _POLICY_STATES[id(policy)] = (policy, physical, state, digest)
    return state, digest


@functools.lru_cache(maxsize=65_536)
def text_digest(text: str) -> str:
    """How the inventory keeps a spec's expression text: its digest (at 1,000 tables the texts
    were 1.6 MB of JSON written twice per apply and read by every plan)."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _table(spec: Table, ref: str) -> TableState:
    name = spec.table_name
    columns: dict[str, ColumnState] = {}
    constraints: dict[str, ConstraintState] = {}
    keys = [c.name for c in spec.spec.columns if c.primary_key]
    for column in spec.spec.columns:
        parsed = column.parsed_type
        identity = {"always": "a", "byDefault": "d"}.get(column.identity or "", "")
        columns[column.name] = ColumnState(
            column.name, format_type(parsed), sql_type(parsed), column.is_nullable, identity,
            column.default, column.description, column.generated,
        )  # fmt: skip
        if column.unique:
            key = naming.unique(name, column.name)
            constraints[key] = ConstraintState(key, "u", f"UNIQUE ({naming.quote(column.name)})", (column.name,))
        if column.check is not None:
            key = naming.check(name, column.name)
            constraints[key] = ConstraintState(key, "c", f"CHECK {expression(column.check)}", (column.name,))
        if column.references is not None:
            ref_ = column.references
            key = naming.foreign_key(name, column.name)
            clause = _foreign_key_clause(
                [column.name], ref_.table, [ref_.column] if ref_.column else [], ref_.on_delete, ref_.on_update
            )
            constraints[key] = ConstraintState(key, "f", clause, (column.name,))
    for check in spec.spec.checks:
        constraints[check.name] = ConstraintState(check.name, "c", f"CHECK {expression(check.expression)}", ())
    for foreign in spec.spec.foreign_keys:
        key = foreign.name or naming.foreign_key(name, "_".join(foreign.columns))
        constraints[key] = ConstraintState(
            key,
            "f",
            _foreign_key_clause(
                foreign.columns, foreign.references.table, foreign.references.columns, foreign.on_delete,
                foreign.on_update,
            ),
            tuple(foreign.columns),
        )  # fmt: skip
    if keys:
        key = naming.primary_key(name)
        constraints[key] = ConstraintState(
            key, "p", f"PRIMARY KEY ({', '.join(naming.quote(k) for k in keys)})", tuple(keys)
        )
    indexes = {}
    for entry in spec.spec.indexes:
        index_name = entry.name or naming.index(name, entry.columns, entry.unique, entry.method, entry.where)
        indexes[index_name] = IndexState(index_name, entry.unique, tuple(entry.columns), entry.method, entry.where)
    return TableState(
        name=name,
        resource=ref,
        spec_hash=spec_hash(spec.spec),
        columns=columns,
        constraints=constraints,
        indexes=indexes,
        rls=spec.spec.row_level_security,
        audit=spec.spec.audit,
        comment=spec.spec.description,
        renamed_from=spec.spec.renamed_from,
        column_renames={c.name: c.renamed_from for c in spec.spec.columns if c.renamed_from},
        column_privileges={
            p.role: (
                None if p.insert is None else tuple(p.insert),
                None if p.update is None else tuple(p.update),
            )
            for p in spec.spec.column_privileges
        },
        retain=spec.spec.deletion_policy == "Retain",
    )


def _foreign_key_clause(columns: list[str], table: str, targets: list[str], on_delete: str, on_update: str) -> str:
    """``FOREIGN KEY (...) REFERENCES ...``, deferred to the end of the transaction (an apply creates
    rows' targets in any order)."""
    if table == AUTH_USERS:
        target = f"auth.users ({', '.join(naming.quote(c) for c in targets or ['id'])})"
    else:
        target = naming.quote(table) + (f" ({', '.join(naming.quote(c) for c in targets)})" if targets else "")
    return (
        f"FOREIGN KEY ({', '.join(naming.quote(c) for c in columns)}) REFERENCES {target} "
        f"ON DELETE {_ON_ACTION[on_delete]} ON UPDATE {_ON_ACTION[on_update]} DEFERRABLE INITIALLY DEFERRED"
    )


def _check_relation_names(tables: dict[str, TableState]) -> None:
    """Tables, indexes and key constraints (which are indexes) share one namespace in a schema."""
    owners: dict[str, str] = {name: f"table {name}" for name in tables}
    for table in tables.values():
        relations = [*table.indexes, *(c.name for c in table.constraints.values() if c.kind in ("p", "u"))]
        for relation in relations:
            owner = owners.setdefault(relation, f"an index of table {table.name}")
            if owner != f"an index of table {table.name}" or relations.count(relation) > 1:
                raise EngineError(
                    f"the name `{relation}` derived for an index of table {table.name} is also {owner}",
                    "rename the table, or give the index an explicit `name`",
                )


def desired_state(group: ProjectSpecs) -> DatabaseState:
    """The database a project's specs describe."""
    assert group.project is not None, "resolve() reports projects without a Project spec"
    project = group.project.resource
    database = project.database_name
    roles = {suffix: naming.role(database, suffix) for suffix in naming.ROLE_SUFFIXES}
    tables = {spec.resource.table_name: _cached_table(spec.resource) for spec in group.tables}
    policies = {}
    policy_resources = {}
    for spec in group.policies:
        policy = spec.resource
        state, policy_resources[policy.ref] = _cached_policy(policy, roles)
        policies[(policy.spec.table, policy.policy_name)] = state
    _check_relation_names(tables)
    owner = naming.role(database, naming.OWNER_SUFFIX)
    return DatabaseState(
        name=database,
        resource=project.ref,
        roles=roles,
        enums={e.name: tuple(e.values) for e in project.spec.enums},
        tables=tables,
        policies=policies,
        policy_resources=policy_resources,
        auditor=naming.role(database, naming.AUDITOR_SUFFIX),
        authenticator=naming.role(database, naming.AUTHENTICATOR_SUFFIX),
        owner=owner,
        functions={
            f.resource.function_name: routines.function_state(f.resource, roles, owner)
            for f in group.database_functions
        },
        triggers={
            (t.resource.spec.table, t.resource.trigger_name): routines.trigger_state(t.resource) for t in group.triggers
        },
        statement_timeout_ms=duration_ms(project.spec.database.statement_timeout),
    )


def outputs(desired: DatabaseState) -> dict[str, dict[str, str]]:
    """What the status of each resource shows: physical names, never credentials."""
    found: dict[str, dict[str, str]] = {
        desired.resource: {"database": desired.name, **{f"role_{k}": v for k, v in desired.roles.items()}}
    }
    for table in desired.tables.values():
        found[table.resource] = {"database": desired.name, "table": f"public.{table.name}"}
    for (table_name, name), policy in desired.policies.items():
        found[policy.resource] = {"table": f"public.{table_name}", "policy": name}
    for function in desired.functions.values():
        found[function.resource] = {"function": f"public.{function.name}({function.arguments})"}
    for trigger in desired.triggers.values():
        on = trigger.table if "." in trigger.table else f"public.{trigger.table}"
        found[trigger.resource] = {"table": on, "trigger": trigger.name}
    return found
