"""Project-level validation: every name a spec mentions must resolve.

Called by :mod:`kliv.specs.loading` once all documents parsed. Checks what no
single document can: projectRefs, table and column references (in checks,
index predicates, policies and their ``EXISTS`` sub-queries), foreign-key
targets and their types, enum types, function secrets, and that no two specs
claim the same physical name. Every problem names the field and, where a name
is close to a known one, suggests it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from kliv.specs.base import Resource, checked_expression
from kliv.specs.column_types import BUILTIN_TYPES, FOREIGN_TYPES, ColumnType
from kliv.specs.errors import DANGLING_REFERENCE, Problem, SpecValueError
from kliv.specs.expressions import CAST_TYPES, Context, Expression
from kliv.specs.function_references import FunctionReferences
from kliv.specs.names import postgres_identifier
from kliv.specs.parsing import problem_for
from kliv.specs.projects import ProjectSpecs, Spec, SpecSet
from kliv.specs.rechecking import Lookups, check_once
from kliv.specs.recursion import recursive_policies
from kliv.specs.suggestions import did_you_mean
from kliv.specs.table import Table
from kliv.specs.table_policy import TablePolicy
from kliv.specs.table_references import TableReferences


def resolve(spec_set: SpecSet) -> list[Problem]:
    """All cross-reference problems in ``spec_set``."""
    problems: list[Problem] = []
    problems += _duplicate_objects(spec_set)
    problems += _claims(
        ((s, s.resource.bucket_name, _name_path(s)) for g in spec_set.projects.values() for s in g.buckets),
        "bucket",
    )
    projects_by_namespace: dict[str, list[str]] = defaultdict(list)
    for (namespace, name), group in spec_set.projects.items():
        if group.project is not None:
            projects_by_namespace[namespace].append(name)
    problems += _databases(spec_set)
    for group in spec_set.projects.values():
        if group.project is None:
            if not spec_set.is_broken("Project", group.namespace, group.name):
                problems += _dangling(group, projects_by_namespace[group.namespace])
            continue
        problems += _Project(group, spec_set).check()
    return problems


def _duplicate_objects(spec_set: SpecSet) -> list[Problem]:
    problems = []
    for first, spec in spec_set.duplicates:
        resource = spec.resource
        where = first.document.source
        problems.append(
            problem_for(
                spec.document,
                "/metadata/name",
                f"{resource.KIND} `{resource.name}` is defined twice (first in {where.file}, "
                f"document {where.document})",
                "rename or remove one of them: the second would silently replace the first",
            )
        )
    return problems


def _claims(items: Iterable[tuple[Spec[Resource], str, str]], what: str) -> list[Problem]:
    """Problems for every spec whose physical name another spec already claims."""
    owners: dict[str, Spec[Resource]] = {}
    problems = []
    for spec, name, path in items:
        owner = owners.setdefault(name, spec)
        # (The same object defined twice never gets here: SpecSet reports it as a duplicate.)
        if owner is not spec:
            problems.append(
                problem_for(
                    spec.document,
                    path,
                    f"{what} name `{name}` is already claimed by {owner.resource.ref}",
                    f"give this {what} another `name`",
                )
            )
    return problems


def _databases(spec_set: SpecSet) -> list[Problem]:
    problems = []
    items = []
    for group in spec_set.projects.values():
        spec = group.project
        if spec is None:
            continue
        project = spec.resource
        path = "/spec/database/name" if project.spec.database.name else "/metadata/name"
        if project.spec.database.name is None:
            problems += _derived_identifier(spec, project.database_name, "database", "spec.database.name")
        secret = project.spec.database.connection_secret_ref
        server = f"{project.namespace}/{secret.name}" if secret else ""
        items.append((spec, f"{project.database_name}@{server}" if server else project.database_name, path))
    claims = _claims(items, "database")
    return problems + claims


def _derived_identifier(spec: Spec[Resource], name: str, what: str, field: str) -> list[Problem]:
    try:
        postgres_identifier(name, what)
    except SpecValueError as exc:
        return [
            problem_for(
                spec.document,
                "/metadata/name",
                f"the {what} name derived from metadata.name is invalid: {exc.message}",
                f"set `{field}` explicitly",
            )
        ]
    return []


def _dangling(group: ProjectSpecs, known: list[str]) -> list[Problem]:
    return [
        problem_for(
            spec.document,
            "/spec/projectRef/name",
            f"Project `{group.name}` does not exist in namespace `{group.namespace}`",
            did_you_mean(group.name, known, "projects") or "add a Project spec with this name",
            code=DANGLING_REFERENCE,
        )
        for spec in group
    ]


class _Project(TableReferences, FunctionReferences):
    """Checks within one project."""

    def __init__(self, group: ProjectSpecs, spec_set: SpecSet) -> None:
        self.group = group
        self.spec_set = spec_set
        assert group.project is not None
        self.enums = {enum.name for enum in group.project.resource.spec.enums}
        self.tables = Lookups({spec.resource.table_name: spec.resource for spec in group.tables})
        self.problems: list[Problem] = []

    def error(self, spec: Spec[Resource], path: str, message: str, hint: str = "", code: str = "") -> None:
        self.problems.append(problem_for(spec.document, path, message, hint, code=code))

    def broken(self, kind: str, name: str) -> bool:
        """Whether ``name`` belongs to a spec that failed validation (already reported)."""
        self.tables.everything = True  # an input rechecking does not follow
        return self.spec_set.is_broken(kind, self.group.namespace, name)

    def check(self) -> list[Problem]:
        group = self.group
        project = group.project
        assert project is not None
        for index, enum in enumerate(project.resource.spec.enums):
            if enum.name in BUILTIN_TYPES:
                self.error(
                    project,
                    f"/spec/enums/{index}/name",
                    f"enum `{enum.name}` shadows a built-in type",
                    "rename the enum",
                )
        self.problems += _claims(
            ((t, t.resource.table_name, _name_path(t)) for t in group.tables),
            "table",
        )
        enums = frozenset(self.enums)
        for spec in group.tables:
            check_once(spec, self.tables, enums, self.problems, self._table)
        self._index_names()
        for policy in group.policies:
            check_once(policy, self.tables, enums, self.problems, self._policy)
        for routine in group.database_functions:
            if routine.resource.spec.name is None:
                self.problems += _derived_identifier(routine, routine.resource.function_name, "function", "spec.name")
            self._database_function(routine)
        for trigger in group.triggers:
            self.problems += _derived_identifier(trigger, trigger.resource.trigger_name, "trigger", "metadata.name")
            self._trigger(trigger)
        self.problems += _claims(
            ((f, f.resource.function_name, _name_path(f)) for f in group.database_functions), "database function"
        )
        self.problems += _claims(
            ((t, f"{t.resource.spec.table}.{t.resource.trigger_name}", "/metadata/name") for t in group.triggers),
            "trigger",
        )
        if not self.problems:
            # Expansion loops only make sense to look for once every reference resolves.
            self.problems += recursive_policies(group)
        self.problems += _claims(
            (
                (
                    p,
                    f"{p.resource.spec.table}.{p.resource.policy_name}",
                    _name_path(p),
                )
                for p in group.policies
            ),
            "policy",
        )
        self.problems += _claims(((s, s.resource.secret_name, _name_path(s)) for s in group.secrets), "secret")
        self.problems += _claims(((f, f.resource.function_name, _name_path(f)) for f in group.functions), "function")
        secrets = [s.resource.secret_name for s in group.secrets]
        for function in group.functions:
            for index, name in enumerate(function.resource.spec.secrets):
                if name not in secrets and not self.broken("ProjectSecret", name):
                    self.error(
                        function,
                        f"/spec/secrets/{index}",
                        f"ProjectSecret `{name}` does not exist",
                        did_you_mean(name, secrets, "secrets") or "add a ProjectSecret with this name",
                        DANGLING_REFERENCE,
                    )
        return self.problems

    # -- tables --------------------------------------------------------------------------------

    def _table(self, spec: Spec[Table]) -> None:
        table = spec.resource
        if table.spec.name is None:
            self.problems += _derived_identifier(spec, table.table_name, "table", "spec.name")
        renamed = table.spec.renamed_from
        if renamed is not None and renamed in self.tables:
            self.error(
                spec,
                "/spec/renamedFrom",
                f"cannot rename from `{renamed}`: that table is still declared",
                "remove `renamedFrom` or the other table",
            )
        name = table.table_name
        columns = [c.name for c in table.spec.columns]
        for index, column in enumerate(table.spec.columns):
            path = f"/spec/columns/{index}"
            self._column_type(spec, f"{path}/type", column.parsed_type)
            if column.default is not None:
                self._expression(spec, f"{path}/default", column.default, "default", columns, name)
            if column.check is not None:
                self._expression(spec, f"{path}/check", column.check, "check", columns, name)
            if column.references is not None:
                self._foreign_key(spec, path, index)
            if column.generated is not None:
                self._generated(spec, path, index)
        for index, entry in enumerate(table.spec.indexes):
            for position, name in enumerate(entry.columns):
                if name not in columns:
                    self.error(
                        spec,
                        f"/spec/indexes/{index}/columns/{position}",
                        f"column `{name}` does not exist on table `{table.table_name}`",
                        did_you_mean(name, columns, "columns"),
                    )
            if entry.where is not None:
                self._expression(spec, f"/spec/indexes/{index}/where", entry.where, "index", columns, name)
        self._table_constraints(spec)

    def _index_names(self) -> None:
        """Index names share the schema's namespace with tables: each may be claimed once."""
        owners: dict[str, str] = {name: f"table `{name}`" for name in self.tables}
        for spec in self.group.tables:
            table = spec.resource
            for index, entry in enumerate(table.spec.indexes):
                if entry.name is None:
                    continue
                if entry.name in owners:
                    self.error(
                        spec,
                        f"/spec/indexes/{index}/name",
                        f"index name `{entry.name}` is already used by {owners[entry.name]}",
                        "index names share one namespace with tables: pick another name",
                    )
                    continue
                owners[entry.name] = f"an index of table `{table.table_name}`"

    def _column_type(self, spec: Spec[Table], path: str, parsed: ColumnType) -> None:
        if not parsed.is_builtin and parsed.base not in self.enums:
            postgres = FOREIGN_TYPES.get(parsed.base)
            self.error(
                spec,
                path,
                f"type `{parsed.base}` is neither a built-in type nor an enum of the project",
                f"in Postgres, `{parsed.base}` is {postgres}"
                if postgres
                else did_you_mean(parsed.base, sorted(BUILTIN_TYPES | self.enums), "types"),
            )

    # -- expressions ---------------------------------------------------------------------------

    def _expression(
        self, spec: Spec[Resource], path: str, text: str, context: Context, columns: list[str], table: str
    ) -> None:
        expression = checked_expression(text, context)
        for cast in expression.casts:
            if cast not in self.enums and cast not in CAST_TYPES:
                self.error(
                    spec,
                    path,
                    f"cast to unknown type `{cast}`",
                    did_you_mean(cast, sorted(BUILTIN_TYPES | self.enums), "types"),
                )
        scope_tables = self._scope_tables(spec, path, expression)
        for use in expression.columns:
            self._resolve_column(
                spec, path, expression, use.scope, use.qualifier, use.column, columns, table, scope_tables
            )

    def _scope_tables(self, spec: Spec[Resource], path: str, expression: Expression) -> dict[str, list[str]]:
        """Columns of every table a sub-query names (missing tables reported once)."""
        found: dict[str, list[str]] = {}
        for table in sorted(expression.tables):
            target = self.tables.get(table)
            if target is None:
                if not self.broken("Table", table):
                    self.error(
                        spec,
                        path,
                        f"table `{table}` does not exist in the project",
                        did_you_mean(table, self.tables, "tables"),
                        DANGLING_REFERENCE,
                    )
                found[table] = []
            else:
                found[table] = [c.name for c in target.spec.columns]
        return found

    def _resolve_column(
        self,
        spec: Spec[Resource],
        path: str,
        expression: Expression,
        scope: int | None,
        qualifier: str | None,
        column: str,
        own_columns: list[str],
        own_table: str,
        tables: dict[str, list[str]],
    ) -> None:
        candidates: list[str] = []
        while scope is not None:
            current = expression.scopes[scope]
            entries = [(own_table, own_table)] if scope == 0 else list(current.tables)
            for alias, table in entries:
                names = own_columns if scope == 0 else tables.get(table, [])
                if qualifier is not None and qualifier != alias:
                    continue
                if scope != 0 and not names:
                    return  # missing table already reported
                if column in names:
                    return
                candidates += names
                if qualifier is not None:
                    self.error(
                        spec,
                        path,
                        f"column `{qualifier}.{column}` does not exist on table `{table}`",
                        did_you_mean(column, names, "columns"),
                    )
                    return
            scope = current.parent
        if qualifier is not None:
            hint = f"qualify with the sub-query's table or alias, or with `{own_table}`"
            if qualifier == "auth":
                hint = f"`auth.{column}` is not a column: call the function, `auth.{column}()`"
            self.error(spec, path, f"`{qualifier}.{column}`: no table or alias `{qualifier}` is in scope", hint)
            return
        self.error(
            spec,
            path,
            f"column `{column}` does not exist on table `{own_table}`",
            did_you_mean(column, candidates or own_columns, "columns"),
        )

    # -- policies ------------------------------------------------------------------------------

    def _policy(self, spec: Spec[TablePolicy]) -> None:
        policy = spec.resource
        table_name = policy.spec.table
        if policy.spec.name is None:
            self.problems += _derived_identifier(spec, policy.policy_name, "policy", "spec.name")
        table = self.tables.get(table_name)
        if table is None:
            if self.broken("Table", table_name):
                return
            self.error(
                spec,
                "/spec/table",
                f"table `{table_name}` does not exist in project `{self.group.name}`",
                did_you_mean(table_name, self.tables, "tables"),
                DANGLING_REFERENCE,
            )
            return
        columns = [c.name for c in table.spec.columns]
        for field, text in (("using", policy.spec.using), ("withCheck", policy.spec.with_check)):
            if text is not None:
                self._expression(spec, f"/spec/{field}", text, "policy", columns, table_name)
                self._policy_calls(spec, f"/spec/{field}", checked_expression(text, "policy"))


def _name_path(spec: Spec[Resource]) -> str:
    """Where a physical name comes from: ``spec.name`` if set, else ``metadata.name``."""
    return "/spec/name" if getattr(spec.resource.spec, "name", None) else "/metadata/name"  # type: ignore[attr-defined]
