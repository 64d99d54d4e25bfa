"""The DatabaseFunction kind: a SQL or plpgsql function in a Project's database (schema ``public``).

Its body is untrusted code, checked by :mod:`kliv.specs.function_bodies` when the model is
built; the resolver checks what it names against the project.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from kliv.specs.base import (
    MAP_BY_NAME,
    SET,
    DefaultExpression,
    KlivModel,
    PgIdentifier,
    ProjectRef,
    Resource,
    cel,
)
from kliv.specs.column_types import parse_column_type
from kliv.specs.errors import SpecValueError
from kliv.specs.expressions import AUTH_FUNCTIONS, DENIED, FUNCTIONS, RESERVED_PREFIXES
from kliv.specs.function_bodies import AGGREGATES, MAX_BODY, Body, check_body
from kliv.specs.names import physical_postgres_name

_SETOF = re.compile(r"^setof\s+([a-z_][a-z0-9_]{0,62})$")


def _argument_type(value: str) -> str:
    parse_column_type(value)
    return value


def _returns(value: str) -> str:
    if value in ("trigger", "void") or _SETOF.fullmatch(value):
        return value
    try:
        parse_column_type(value)
    except SpecValueError as exc:
        table = value.split()[-1].rsplit(".", 1)[-1] if value.lower().startswith("setof") else "<table>"
        raise SpecValueError(
            f"`{value[:64]}` is not a return type: {exc.message}",
            f"write a column type (`boolean`, `uuid`, `text[]`...), `setof {table[:63]}` (a project table, no "
            "schema), `trigger` or `void`",
        ) from None
    return value


def own_function_name(value: str) -> str:
    """A name of the function's own: not a built-in's, which pg_catalog (first in every path) would win."""
    if value.startswith(RESERVED_PREFIXES) or value in FUNCTIONS or value in AGGREGATES or value in DENIED:
        raise SpecValueError(
            f"`{value}` is the name of a built-in function", "give the function a name of its own (`app_...`)"
        )
    if value in AUTH_FUNCTIONS:
        raise SpecValueError(f"`{value}` is reserved for `auth.{value}()`", "give the function a name of its own")
    return value


ArgumentType = Annotated[str, Field(max_length=64), AfterValidator(_argument_type)]
ReturnType = Annotated[str, Field(max_length=80), AfterValidator(_returns)]
FunctionName = Annotated[PgIdentifier, AfterValidator(own_function_name)]


class Argument(KlivModel):
    """A named argument."""

    name: PgIdentifier = Field(description="Argument name, usable in the body (`authorize.requested_permission`).")
    type: ArgumentType = Field(description="Postgres type, as a column's (`text`, `uuid`, a project enum...).")
    default: DefaultExpression | None = Field(default=None, description="Default value: a SQL fragment.")


class DatabaseFunctionSpec(KlivModel):
    """Desired state of a DatabaseFunction."""

    project_ref: ProjectRef
    name: FunctionName | None = Field(
        default=None, description="Function name in schema public; default: metadata.name with '-' turned into '_'."
    )
    language: Literal["sql", "plpgsql"] = Field(description="sql: statements; plpgsql: a `begin ... end;` block.")
    arguments: list[Argument] = Field(
        default_factory=list, max_length=32, description="Arguments, in order.", json_schema_extra=MAP_BY_NAME
    )
    returns: ReturnType = Field(description="A type, `setof <table>`, `trigger` (for a Trigger) or `void`.")
    volatility: Literal["volatile", "stable", "immutable"] = Field(
        default="volatile", description="What Postgres may assume: stable and immutable functions do not write."
    )
    security: Literal["invoker", "definer"] = Field(
        default="invoker",
        description="invoker: runs with the caller's rights and RLS; definer: as the project's owner role, "
        "which sees every row (keep lookup tables unreadable by users and ask through the function).",
    )
    body: str = Field(
        max_length=MAX_BODY,
        description="The text between the dollar quotes; for plpgsql the whole `declare ... begin ... end;` block. "
        "Project tables and functions are written unqualified; `auth.users`, `auth.uid()` qualified.",
    )
    expose: list[Literal["anon", "authenticated"]] = Field(
        default_factory=list,
        description="Project roles granted EXECUTE (service_role always is); default: none.",
        json_schema_extra=SET,
    )
    model_config = cel(
        ("self.returns != 'trigger' || self.language == 'plpgsql'", "a trigger function is written in plpgsql"),
        (
            "self.returns != 'trigger' || !has(self.arguments) || size(self.arguments) == 0",
            "a trigger function takes no arguments",
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.returns == "trigger" and self.language != "plpgsql":
            raise SpecValueError("a trigger function is written in plpgsql", "set `language: plpgsql`", "language")
        if self.returns == "trigger" and self.arguments:
            raise SpecValueError(
                "a trigger function takes no arguments", "read the row from `new` and `old`", "arguments"
            )
        names = [a.name for a in self.arguments]
        for index, name in enumerate(names):
            if names.index(name) != index:
                raise SpecValueError(f"argument `{name}` is listed twice", "rename one", f"arguments/{index}/name")
        if len(set(self.expose)) != len(self.expose):
            raise SpecValueError("a role is listed twice", "list every role once", "expose")
        checked_body(self.body, self.language, self.header)
        return self

    @property
    def header(self) -> str:
        """``"name"(arguments) RETURNS type``, for parsing the body (the name does not matter there)."""
        arguments = ", ".join(f'"{a.name}" {a.type}' for a in self.arguments)
        returns = self.returns.replace("setof ", "SETOF ")
        return f"f({arguments}) RETURNS {returns}"


@functools.lru_cache(maxsize=4096)
def checked_body(body: str, language: Literal["sql", "plpgsql"], header: str) -> Body:
    """Cached: the resolver asks again for what the model checked."""
    try:
        return check_body(body, language, header)
    except SpecValueError as exc:
        raise SpecValueError(exc.message, exc.hint, "body") from None


class DatabaseFunction(Resource):
    """A SQL or plpgsql function in the project's database, for policies, triggers and RPC."""

    KIND: ClassVar[str] = "DatabaseFunction"
    PLURAL: ClassVar[str] = "databasefunctions"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("kdf", "klivfunction")
    COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("Project", ".spec.projectRef.name", "string"),
        ("Returns", ".spec.returns", "string"),
        ("Security", ".spec.security", "string"),
    )

    kind: Literal["DatabaseFunction"]
    spec: DatabaseFunctionSpec

    @property
    def function_name(self) -> str:
        return self.spec.name or physical_postgres_name(self.metadata.name)

    @property
    def body(self) -> Body:
        spec = self.spec
        return checked_body(spec.body, spec.language, spec.header)
