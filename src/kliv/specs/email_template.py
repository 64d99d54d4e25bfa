"""The EmailTemplate kind: a Markdown email with Jinja2 variables."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from kliv.specs.base import KlivModel, ProjectRef, Resource, cel
from kliv.specs.errors import SpecValueError
from kliv.specs.names import template_variable
from kliv.specs.suggestions import closest
from kliv.specs.templating import check_template


def _email(value: str) -> str:
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise SpecValueError(
            f"`{value[:80]}` is not a valid email address: {exc}", "e.g. `noreply@example.com`"
        ) from None


EmailAddress = Annotated[str, Field(max_length=254, json_schema_extra={"format": "email"}), AfterValidator(_email)]


def _subject(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise SpecValueError("the subject spans several lines", "write the subject on one line")
    return value


def template_variables(source: str, field: str) -> set[str]:
    """Variables a template uses; raises SpecValueError naming ``field`` on anything the language refuses."""
    return set(check_template(source, field).variables)


class Variable(KlivModel):
    """A template variable."""

    model_config = cel(
        ("!(has(self.required) && self.required && has(self.default))", "a required variable cannot have a default"),
    )

    required: bool = Field(default=False, description="Rendering fails without it.")
    default: str | None = Field(default=None, max_length=4096, description="Value when not given.")
    description: str | None = Field(default=None, max_length=1024, description="What it is for.")


class Sender(KlivModel):
    """The From header."""

    name: str | None = Field(default=None, max_length=200, description="Display name.")
    address: EmailAddress = Field(description="Email address.")


class EmailTemplateSpec(KlivModel):
    """Desired state of an EmailTemplate."""

    project_ref: ProjectRef
    subject: Annotated[str, Field(min_length=1, max_length=998), AfterValidator(_subject)] = Field(
        description="Subject line; may use `{{ variable }}`."
    )
    markdown: str = Field(min_length=1, max_length=262144, description="Body in Markdown with `{{ variables }}`.")
    variables: dict[Annotated[str, AfterValidator(template_variable)], Variable] = Field(
        default_factory=dict, description="Every variable the subject and body use."
    )
    sender: Sender | None = Field(default=None, alias="from", description="The From header.")
    reply_to: EmailAddress | None = Field(default=None, description="Reply-To address.")

    @model_validator(mode="after")
    def _variables_are_declared(self) -> Self:
        for field, source in (("subject", self.subject), ("markdown", self.markdown)):
            for name in sorted(template_variables(source, field)):
                if name not in self.variables:
                    near = closest(name, self.variables)
                    raise SpecValueError(
                        f"`{{{{ {name} }}}}` is used in `{field}` but not declared",
                        f"did you mean `{{{{ {near} }}}}`? (else add `{name}: {{required: true}}` under `variables`)"
                        if near
                        else f"add `{name}: {{required: true}}` under `variables`",
                        field=field,
                    )
        for name, variable in self.variables.items():
            if variable.required and variable.default is not None:
                raise SpecValueError(
                    f"variable `{name}` is required and has a default",
                    "drop the default or set `required: false`",
                    field=f"variables/{name}",
                )
        return self


class EmailTemplate(Resource):
    """A transactional email template of a Project."""

    KIND: ClassVar[str] = "EmailTemplate"
    PLURAL: ClassVar[str] = "emailtemplates"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ket", "klivemail")
    COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("Project", ".spec.projectRef.name", "string"),
        ("Subject", ".spec.subject", "string"),
    )

    kind: Literal["EmailTemplate"]
    spec: EmailTemplateSpec
