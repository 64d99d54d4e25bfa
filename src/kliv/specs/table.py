"""The Table kind: a Postgres table with columns, indexes, RLS and an audit trail."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema, model_validator
from pydantic.config import JsonDict

from kliv.specs import names
from kliv.specs.base import (
    MAP_BY_NAME,
    SET,
    CheckExpression,
    DefaultExpression,
    DeletionPolicy,
    GeneratedExpression,
    IndexPredicate,
    KlivModel,
    PgColumnName,
    PgIdentifier,
    PgTableName,
    ProjectRef,
    Resource,
    cel,
)
from kliv.specs.column_types import ColumnType, parse_column_type
from kliv.specs.errors import SpecValueError
from kliv.specs.names import physical_postgres_name, printable

# Spelled out in the CEL rule of Column below, which must stay in step.
IDENTITY_TYPES = frozenset({"smallint", "integer", "bigint", "int", "int2", "int4", "int8"})


def _column_type(value: str) -> str:
    parse_column_type(value)
    return value


ColumnTypeText = Annotated[str, Field(max_length=64), AfterValidator(_column_type)]
Description = Annotated[str, Field(max_length=1024), AfterValidator(printable)]


AUTH_USERS = "auth.users"
# GoTrue's columns that applications read (the platform writes id, email, raw_user_meta_data).
AUTH_USERS_COLUMNS: dict[str, str] = {
    "id": "uuid", "email": "text", "phone": "text", "role": "text",
    "raw_user_meta_data": "jsonb", "raw_app_meta_data": "jsonb",
    "email_confirmed_at": "timestamptz", "last_sign_in_at": "timestamptz",
    "created_at": "timestamptz", "updated_at": "timestamptz", "deleted_at": "timestamptz",
}  # fmt: skip
REFERENCE_SCHEMA: JsonDict = {
    "type": "string",
    "maxLength": 63,
    "pattern": f"^(auth\\.users|{names.PG_IDENTIFIER_PATTERN[1:-1]})$",
}


def _same_project_table(value: object) -> object:
    """`auth.users` (the platform's users) or a Table of the same project; any other
    `schema.table`: say what is true here."""
    if isinstance(value, str) and "." in value:
        if value.strip().lower() in (AUTH_USERS, '"auth"."users"'):
            return AUTH_USERS
        raise SpecValueError(
            f"`{value[:80]}`: name a Table of the same project (or `auth.users`), without a schema",
            f"write `table: {value.rsplit('.', 1)[-1][:63]}` (the referenced Table's physical name)",
        )
    return value


def _reference_target(value: str) -> str:
    return value if value == AUTH_USERS else names.postgres_identifier(value)


ReferencedTable = Annotated[
    str,
    BeforeValidator(_same_project_table),
    AfterValidator(_reference_target),
    WithJsonSchema(REFERENCE_SCHEMA),
]


class ForeignKey(KlivModel):
    """A foreign key to another Table of the same Project, or to `auth.users`."""

    table: ReferencedTable = Field(
        description="Physical name of the referenced Table of the project, or `auth.users` (the platform's users)."
    )
    column: PgIdentifier | None = Field(
        default=None, description="Referenced column; default: the target's primary key."
    )
    on_delete: Literal["noAction", "restrict", "cascade", "setNull", "setDefault"] = Field(
        default="noAction", description="What happens to this row when the referenced row is deleted."
    )
    on_update: Literal["noAction", "restrict", "cascade", "setNull", "setDefault"] = Field(
        default="noAction", description="What happens when the referenced key changes."
    )


class Column(KlivModel):
    """A table column."""

    model_config = cel(
        ("!has(self.identity) || !has(self.default)", "identity columns cannot have a default"),
        (
            "!has(self.identity) || self.type in ['smallint', 'integer', 'bigint', 'int', 'int2', 'int4', 'int8']",
            "identity columns must be smallint, integer or bigint",
        ),
        (
            "!(has(self.primaryKey) && self.primaryKey && has(self.nullable) && self.nullable)",
            "primary-key columns cannot be nullable",
        ),
        ("!(has(self.identity) && has(self.nullable) && self.nullable)", "identity columns cannot be nullable"),
        ("!has(self.renamedFrom) || self.renamedFrom != self.name", "a column cannot be renamed from itself"),
        (
            "!has(self.generated) || (!has(self.default) && !has(self.identity))",
            "a generated column cannot have a default or an identity",
        ),
    )

    name: PgColumnName = Field(description="Column name (not a system column such as `ctid`).")
    type: ColumnTypeText = Field(
        description="Postgres type: text, varchar(n), integer, bigint, numeric(p,s), boolean, uuid, "
        "timestamptz, date, jsonb, ..., a project enum, or an array of one (`text[]`)."
    )
    primary_key: bool = Field(default=False, description="Part of the primary key.")
    nullable: bool | None = Field(
        default=None, description="Whether NULL is allowed; default: false for primary keys, else true."
    )
    unique: bool = Field(default=False, description="Values must be unique.")
    default: DefaultExpression | None = Field(
        default=None, description="SQL default expression, e.g. `now()` or `'draft'`."
    )
    identity: Literal["always", "byDefault"] | None = Field(
        default=None, description="Generate values as an identity column (integer types only)."
    )
    check: CheckExpression | None = Field(
        default=None, description="SQL check expression over this column (the constraint is `<table>_<column>_check`)."
    )
    generated: GeneratedExpression | None = Field(
        default=None,
        description="Stored generated column: an immutable SQL expression over the table's other columns, "
        "e.g. `lower(email)`.",
    )
    references: ForeignKey | None = Field(default=None, description="Foreign key.")
    renamed_from: PgIdentifier | None = Field(
        default=None, description="Previous name: rename the column instead of dropping it."
    )
    description: Description | None = Field(default=None, description="Column comment.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.primary_key and self.nullable:
            raise SpecValueError(
                f"primary-key column `{self.name}` cannot be nullable", "remove `nullable: true`", "nullable"
            )
        if self.identity is not None:
            if self.default is not None:
                raise SpecValueError(
                    f"identity column `{self.name}` cannot have a default",
                    "remove `default` (identity generates the values)",
                    "default",
                )
            # Exact spelling, as the CRD's CEL twin of this rule compares it.
            if self.type not in IDENTITY_TYPES:
                raise SpecValueError(
                    f"identity column `{self.name}` must be smallint, integer or bigint, not `{self.type}`",
                    "use `type: bigint`",
                    "identity",
                )
            if self.nullable:
                raise SpecValueError(
                    f"identity column `{self.name}` cannot be nullable", "remove `nullable: true`", "nullable"
                )
        if self.renamed_from == self.name:
            raise SpecValueError(f"column `{self.name}` is renamed from itself", "remove `renamedFrom`", "renamedFrom")
        if self.generated is not None and (self.default is not None or self.identity is not None):
            raise SpecValueError(
                f"generated column `{self.name}` cannot have a default or an identity",
                "remove `default` and `identity` (the expression computes the value)",
                "generated",
            )
        return self

    @property
    def parsed_type(self) -> ColumnType:
        return parse_column_type(self.type)

    @property
    def is_nullable(self) -> bool:
        if self.nullable is not None:
            return self.nullable
        return not (self.primary_key or self.identity)


class Index(KlivModel):
    """A secondary index."""

    name: PgIdentifier | None = Field(default=None, description="Index name; default: derived.")
    columns: list[PgIdentifier] = Field(min_length=1, max_length=32, description="Indexed columns.")
    unique: bool = Field(default=False, description="Enforce uniqueness.")
    where: IndexPredicate | None = Field(default=None, description="Partial-index predicate.")
    method: Literal["btree", "hash", "gin", "gist", "brin"] = Field(default="btree", description="Access method.")


class TableCheck(KlivModel):
    """A named check constraint over one or more columns."""

    name: PgIdentifier = Field(description="Constraint name: the name Postgres reports when a row violates it.")
    expression: CheckExpression = Field(description="SQL condition over the table's columns, e.g. `starts < ends`.")


class ReferencedKey(KlivModel):
    """The key a composite foreign key references."""

    table: ReferencedTable = Field(description="Physical name of the referenced Table of the project, or `auth.users`.")
    columns: list[PgIdentifier] = Field(
        min_length=1, max_length=32, description="Referenced columns: its primary key or a unique key, in order."
    )


class TableForeignKey(KlivModel):
    """A foreign key over one or more columns."""

    name: PgIdentifier | None = Field(
        default=None, description="Constraint name; default: Postgres' own, `<table>_<columns>_fkey`."
    )
    columns: list[PgIdentifier] = Field(min_length=1, max_length=32, description="Referencing columns, in order.")
    references: ReferencedKey
    on_delete: Literal["noAction", "restrict", "cascade", "setNull", "setDefault"] = Field(
        default="noAction", description="What happens to this row when the referenced row is deleted."
    )
    on_update: Literal["noAction", "restrict", "cascade", "setNull", "setDefault"] = Field(
        default="noAction", description="What happens when the referenced key changes."
    )
    model_config = cel(
        ("size(self.columns) == size(self.references.columns)", "as many referencing as referenced columns"),
    )

    @model_validator(mode="after")
    def _same_arity(self) -> Self:
        if len(self.columns) != len(self.references.columns):
            raise SpecValueError(
                f"the foreign key has {len(self.columns)} columns but references {len(self.references.columns)}",
                "list as many `references.columns` as `columns`, pairwise",
                "references/columns",
            )
        return self


class ColumnPrivilege(KlivModel):
    """Which columns a project role may insert or update (service_role is never restricted)."""

    role: Literal["anon", "authenticated"] = Field(description="The project role restricted.")
    insert: list[PgIdentifier] | None = Field(
        default=None,
        max_length=1600,
        description="Columns this role may insert (`[]`: none); left out: every column.",
        json_schema_extra=SET,
    )
    update: list[PgIdentifier] | None = Field(
        default=None,
        max_length=1600,
        description="Columns this role may update (`[]`: none); left out: every column.",
        json_schema_extra=SET,
    )


class TableSpec(KlivModel):
    """Desired state of a Table."""

    project_ref: ProjectRef
    name: PgTableName | None = Field(
        default=None, description="Table name; default: metadata.name with '-' turned into '_'."
    )
    renamed_from: PgIdentifier | None = Field(
        default=None, description="Previous table name: rename instead of drop+create."
    )
    description: Description | None = Field(default=None, description="Table comment.")
    model_config = cel(
        (
            "!has(self.renamedFrom) || !has(self.name) || self.renamedFrom != self.name",
            "a table cannot be renamed from itself",
        ),
    )

    columns: list[Column] = Field(
        min_length=1, max_length=1600, description="Columns, in order.", json_schema_extra=MAP_BY_NAME
    )
    indexes: list[Index] = Field(default_factory=list, max_length=100, description="Secondary indexes.")
    checks: list[TableCheck] = Field(
        default_factory=list,
        max_length=100,
        description="Named check constraints over several columns.",
        json_schema_extra=MAP_BY_NAME,
    )
    foreign_keys: list[TableForeignKey] = Field(
        default_factory=list, max_length=100, description="Foreign keys over one or more columns (composite)."
    )
    column_privileges: list[ColumnPrivilege] = Field(
        default_factory=list,
        max_length=2,
        description="Column-level insert and update privileges of anon and authenticated.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["role"]},
    )
    row_level_security: bool = Field(default=True, description="Enable and force row-level security.")
    audit: bool = Field(default=True, description="Record row changes in the audit log.")
    deletion_policy: DeletionPolicy = Field(default="Retain", description="Retain or Delete on removal.")

    @model_validator(mode="after")
    def _unique_columns(self) -> Self:
        seen: dict[str, int] = {}
        for index, column in enumerate(self.columns):
            for name, field in ((column.name, "name"), (column.renamed_from, "renamedFrom")):
                if name is None:
                    continue
                if name in seen:
                    raise SpecValueError(
                        f"column name `{name}` is used twice (also by column {seen[name]})",
                        "every column name and renamedFrom must be distinct",
                        f"columns/{index}/{field}",
                    )
                seen[name] = index
        if self.renamed_from is not None and self.renamed_from == self.name:
            raise SpecValueError("the table is renamed from itself", "remove `renamedFrom`", "renamedFrom")
        keyed: tuple[tuple[str, list[str | None]], ...] = (
            ("checks", [c.name for c in self.checks]),
            ("foreignKeys", [k.name for k in self.foreign_keys]),
            ("columnPrivileges", [str(p.role) for p in self.column_privileges]),
        )
        for field, keys in keyed:
            for index, key in enumerate(keys):
                if key is not None and keys.index(key) != index:
                    what = "role" if field == "columnPrivileges" else "name"
                    raise SpecValueError(
                        f"{what} `{key}` is used twice (also by entry {keys.index(key)})",
                        f"merge the entries or give each its own {what}",
                        f"{field}/{index}/{what}",
                    )
        return self


class Table(Resource):
    """A Postgres table in a Project's database."""

    KIND: ClassVar[str] = "Table"
    PLURAL: ClassVar[str] = "tables"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("kt", "klivtable")
    COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("Project", ".spec.projectRef.name", "string"),
        ("Table", ".status.outputs.table", "string"),
    )

    kind: Literal["Table"]
    spec: TableSpec

    @property
    def table_name(self) -> str:
        return self.spec.name or physical_postgres_name(self.metadata.name)

    @property
    def primary_key(self) -> list[Column]:
        return [c for c in self.spec.columns if c.primary_key]
