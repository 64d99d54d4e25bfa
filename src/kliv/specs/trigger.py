"""The Trigger kind: a DatabaseFunction run on a table's row changes (a project table or ``auth.users``)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from kliv.specs.base import SET, CheckExpression, KlivModel, PgIdentifier, ProjectRef, Resource, cel
from kliv.specs.errors import SpecValueError
from kliv.specs.names import physical_postgres_name
from kliv.specs.table import ReferencedTable

Event = Literal["insert", "update", "delete"]


def _function_reference(value: object) -> object:
    """`public.handle_new_user()` (as SQL writes it): say what a Trigger names."""
    if isinstance(value, str) and ("." in value or "(" in value):
        bare = value.split("(", 1)[0].rsplit(".", 1)[-1].strip().strip('"')
        raise SpecValueError(
            f"`{value[:80]}`: a Trigger names its DatabaseFunction by physical name, without schema or parentheses",
            f"write `function: {bare[:63]}`",
        )
    return value


def _unique_events(values: list[Event]) -> list[Event]:
    if len(set(values)) != len(values):
        raise SpecValueError("an event is listed twice", "list every event once")
    return values


class TriggerSpec(KlivModel):
    """Desired state of a Trigger."""

    model_config = cel(
        ("!has(self.when) || !has(self.forEach) || self.forEach == 'row'", "only a row trigger may have `when`"),
    )

    project_ref: ProjectRef
    table: ReferencedTable = Field(description="Physical name of a project table, or `auth.users`.")
    timing: Literal["before", "after"] = Field(description="Run before the change (and may alter `new`) or after.")
    events: Annotated[list[Event], AfterValidator(_unique_events)] = Field(
        min_length=1, max_length=3, description="The changes that fire it.", json_schema_extra=SET
    )
    for_each: Literal["row", "statement"] = Field(default="row", description="Once per row, or per statement.")
    when: CheckExpression | None = Field(
        default=None, description="Condition over `old` and `new` (e.g. `old.email is distinct from new.email`)."
    )
    function: Annotated[PgIdentifier, BeforeValidator(_function_reference)] = Field(
        description="Physical name of a DatabaseFunction returning `trigger` (no schema, no parentheses)."
    )

    @model_validator(mode="after")
    def _when_on_rows(self) -> Self:
        if self.when is not None and self.for_each != "row":
            raise SpecValueError("only a row trigger may have `when`", "set `forEach: row`", "when")
        return self


class Trigger(Resource):
    """A trigger on a table of the project (or `auth.users`), running a DatabaseFunction."""

    KIND: ClassVar[str] = "Trigger"
    PLURAL: ClassVar[str] = "triggers"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ktr", "klivtrigger")
    COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("Project", ".spec.projectRef.name", "string"),
        ("Table", ".spec.table", "string"),
        ("Function", ".spec.function", "string"),
    )

    kind: Literal["Trigger"]
    spec: TriggerSpec

    @property
    def trigger_name(self) -> str:
        return physical_postgres_name(self.metadata.name)
