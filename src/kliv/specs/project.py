"""The Project kind: one isolated backend with its own database and roles."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from kliv.specs.base import (
    MAP_BY_NAME,
    PG_IDENTIFIER_SCHEMA,
    DeletionPolicy,
    K8sName,
    KlivModel,
    PgIdentifier,
    Resource,
    cel,
)
from kliv.specs.column_types import BUILTIN_TYPES
from kliv.specs.errors import SpecValueError
from kliv.specs.names import printable, type_name


def _enum_label(value: str) -> str:
    if not value or len(value.encode()) > 63:
        raise SpecValueError("enum labels must be 1-63 bytes long", "shorten the label")
    return printable(value)


def _enum_name(value: str) -> str:
    type_name(value)
    if value in BUILTIN_TYPES:
        raise SpecValueError(
            f"type name `{value}` is a built-in column type", f"pick another name, e.g. `{value}_kind`"
        )
    return value


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise SpecValueError(f"`{value}` is listed twice", "list every value once")
        seen.add(value)
    return values


class SecretRef(KlivModel):
    """A Kubernetes Secret in the Project's namespace."""

    name: K8sName = Field(description="Name of the Secret; its key `url` holds the Postgres URL.")


_DURATION = re.compile(r"^([1-9][0-9]{0,6})(ms|s|min)$")
_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000}
MIN_STATEMENT_TIMEOUT_MS = 100
MAX_STATEMENT_TIMEOUT_MS = 600_000


def duration_ms(value: str) -> int:
    """Milliseconds of a duration such as `30s`, `500ms` or `2min`."""
    match = _DURATION.fullmatch(value)
    if match is None:
        raise SpecValueError(f"`{value[:40]}` is not a duration", "write a number and a unit: `30s`, `500ms`, `2min`")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def _statement_timeout(value: str) -> str:
    milliseconds = duration_ms(value)
    if not MIN_STATEMENT_TIMEOUT_MS <= milliseconds <= MAX_STATEMENT_TIMEOUT_MS:
        raise SpecValueError(
            f"statementTimeout must be between {MIN_STATEMENT_TIMEOUT_MS}ms and "
            f"{MAX_STATEMENT_TIMEOUT_MS // 60_000}min",
            "the database is shared: a query may not run without bound",
        )
    return value


class Database(KlivModel):
    """Where the Project's database lives."""

    name: PgIdentifier | None = Field(
        default=None,
        description="Database name; default: metadata.name with '-' turned into '_'. Immutable.",
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "database.name is immutable"}]
        },
    )
    connection_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret whose key `url` names another Postgres server; absent: the default server.",
    )
    statement_timeout: Annotated[str, AfterValidator(_statement_timeout)] = Field(
        default="30s",
        description="Longest a query of the application may run (`30s`, `500ms`, `2min`; 100ms to 10min): "
        "the database's default statement_timeout.",
        json_schema_extra={"pattern": _DURATION.pattern},
    )


class EnumType(KlivModel):
    """A Postgres enum type usable as a column type."""

    name: Annotated[str, AfterValidator(_enum_name), WithJsonSchema(PG_IDENTIFIER_SCHEMA)] = Field(
        description="Type name, usable as `type:` of a column (not a Postgres type's name)."
    )
    values: Annotated[
        list[Annotated[str, AfterValidator(_enum_label)]],
        Field(min_length=1, max_length=1000),
        AfterValidator(_unique),
    ] = Field(description="The labels, in sort order.")


class ProjectSpec(KlivModel):
    """Desired state of a Project."""

    model_config = cel(
        (
            "(has(self.database) && has(self.database.name)) == (has(oldSelf.database) && has(oldSelf.database.name))",
            "database.name cannot be added or removed after creation: the database would change",
        ),
    )

    display_name: str | None = Field(default=None, max_length=200, description="Human-readable name.")
    database: Database = Field(default_factory=Database, description="The Project's database.")
    enums: list[EnumType] = Field(
        default_factory=list, max_length=200, description="Enum types.", json_schema_extra=MAP_BY_NAME
    )
    deletion_policy: DeletionPolicy = Field(
        default="Retain", description="Retain: deleting the Project forgets it; Delete: drops the database."
    )

    @model_validator(mode="after")
    def _unique_enums(self) -> Self:
        seen: set[str] = set()
        for index, enum in enumerate(self.enums):
            if enum.name in seen:
                raise SpecValueError(f"enum `{enum.name}` is declared twice", "declare it once", f"enums/{index}/name")
            seen.add(enum.name)
        return self


class Project(Resource):
    """One isolated backend: its own database, roles, buckets, secrets and functions."""

    KIND: ClassVar[str] = "Project"
    PLURAL: ClassVar[str] = "projects"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("kp", "klivproject")
    COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = (("Database", ".status.outputs.database", "string"),)

    kind: Literal["Project"]
    spec: ProjectSpec = Field(default_factory=ProjectSpec)

    @property
    def database_name(self) -> str:
        return self.spec.database.name or self.metadata.name.replace("-", "_")
