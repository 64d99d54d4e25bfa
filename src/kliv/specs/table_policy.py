"""The TablePolicy kind: a Postgres row-level-security policy."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from kliv.specs.base import SET, KlivModel, PgIdentifier, PolicyExpression, ProjectRef, Resource, cel
from kliv.specs.errors import SpecValueError
from kliv.specs.names import physical_postgres_name

Role = Literal["anon", "authenticated", "service_role"]
ALL_ROLES: tuple[Role, ...] = ("anon", "authenticated", "service_role")
WRITE_COMMANDS = frozenset({"insert", "update", "delete", "all"})


def _unique_roles(values: list[Role]) -> list[Role]:
    if len(set(values)) != len(values):
        raise SpecValueError("a role is listed twice", "list every role once")
    return values


class TablePolicySpec(KlivModel):
    """Desired state of a TablePolicy."""

    model_config = cel(
        ("self.command != 'insert' || !has(self.using)", "an insert policy cannot have `using`"),
        (
            "!(self.command in ['select', 'delete']) || !has(self.withCheck)",
            "select and delete policies cannot have `withCheck`",
        ),
        ("self.command != 'insert' || has(self.withCheck)", "an insert policy needs `withCheck`"),
        ("!(self.command in ['select', 'delete']) || has(self.using)", "select and delete policies need `using`"),
        ("has(self.using) || has(self.withCheck)", "a policy needs `using` or `withCheck`"),
    )

    project_ref: ProjectRef
    table: PgIdentifier = Field(description="Physical name of the table the policy applies to.")
    name: PgIdentifier | None = Field(
        default=None, description="Policy name; default: metadata.name with '-' turned into '_'."
    )
    command: Literal["select", "insert", "update", "delete", "all"] = Field(
        default="all", description="The command the policy applies to."
    )
    mode: Literal["permissive", "restrictive"] = Field(
        default="permissive",
        description="permissive: a row passes if any permissive policy lets it; restrictive: every "
        "restrictive policy must also let it (a restrictive policy alone lets nothing through).",
    )
    roles: Annotated[list[Role], AfterValidator(_unique_roles)] = Field(
        default_factory=lambda: list(ALL_ROLES),
        min_length=1,
        description="Project roles the policy applies to; default: all three.",
        json_schema_extra=SET,
    )
    using: PolicyExpression | None = Field(
        default=None, description="Rows visible/affected: SQL expression over the table's columns."
    )
    with_check: PolicyExpression | None = Field(
        default=None, description="Rows that may be written: SQL expression over the new row."
    )

    @model_validator(mode="after")
    def _expressions_fit_command(self) -> Self:
        command = self.command
        if command == "insert" and self.using is not None:
            raise SpecValueError("an insert policy cannot have `using`", "move the condition to `withCheck`", "using")
        if command in ("select", "delete") and self.with_check is not None:
            raise SpecValueError(
                f"a {command} policy cannot have `withCheck`", "move the condition to `using`", "withCheck"
            )
        if command == "insert" and self.with_check is None:
            raise SpecValueError("an insert policy needs `withCheck`", "e.g. `withCheck: owner_id = auth.uid()`")
        if command in ("select", "delete") and self.using is None:
            raise SpecValueError(f"a {command} policy needs `using`", "e.g. `using: owner_id = auth.uid()`")
        if self.using is None and self.with_check is None:
            raise SpecValueError(
                f"a {command} policy needs `using` or `withCheck`", "e.g. `using: owner_id = auth.uid()`"
            )
        return self


class TablePolicy(Resource):
    """A row-level-security policy on a Table."""

    KIND: ClassVar[str] = "TablePolicy"
    PLURAL: ClassVar[str] = "tablepolicies"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ktp", "klivpolicy")
    COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("Project", ".spec.projectRef.name", "string"),
        ("Table", ".spec.table", "string"),
        ("Command", ".spec.command", "string"),
    )

    kind: Literal["TablePolicy"]
    spec: TablePolicySpec

    @property
    def policy_name(self) -> str:
        return self.spec.name or physical_postgres_name(self.metadata.name)
