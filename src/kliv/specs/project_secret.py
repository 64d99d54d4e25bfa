"""The ProjectSecret kind: a secret value, never written in a spec in plain text."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from kliv.specs.base import EnvName, K8sName, KlivModel, ProjectRef, Resource, cel
from kliv.specs.errors import SpecValueError
from kliv.specs.names import secret_source_env


class SecretKeyRef(KlivModel):
    """A key of a Kubernetes Secret in the same namespace."""

    name: K8sName = Field(description="Secret name.")
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key in the Secret.")


class ValueFrom(KlivModel):
    """Where the value comes from: a Kubernetes Secret (operator) or an environment variable (CLI)."""

    model_config = cel(("has(self.secretKeyRef) != has(self.env)", "exactly one of secretKeyRef or env"))

    secret_key_ref: SecretKeyRef | None = Field(default=None, description="A key of a Kubernetes Secret.")
    env: Annotated[EnvName, AfterValidator(secret_source_env)] | None = Field(
        default=None,
        description="An environment variable of the `kliv` process (never one of kliv's own, KLIV_*, PG*, AWS_*...).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.secret_key_ref is None) == (self.env is None):
            raise SpecValueError(
                "valueFrom needs exactly one of `secretKeyRef` or `env`",
                "in a cluster use `secretKeyRef: {name, key}`; with the CLI `env: VARIABLE`",
            )
        return self


class Generate(KlivModel):
    """Generate a random value once; it is kept until the spec changes."""

    length: int = Field(default=32, ge=16, le=4096, description="Number of characters.")
    charset: Literal["alphanumeric", "hex", "base64url"] = Field(
        default="alphanumeric", description="Characters to draw from."
    )


class ProjectSecretSpec(KlivModel):
    """Desired state of a ProjectSecret: exactly one of valueFrom or generate."""

    model_config = cel(("has(self.valueFrom) != has(self.generate)", "exactly one of valueFrom or generate"))

    project_ref: ProjectRef
    name: EnvName | None = Field(
        default=None,
        description="Secret name, as exposed to functions; default: metadata.name upper-cased, '-' -> '_'.",
    )
    value_from: ValueFrom | None = Field(default=None, description="Read the value from elsewhere.")
    generate: Generate | None = Field(default=None, description="Generate a random value.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.value_from is None) == (self.generate is None):
            raise SpecValueError(
                "a ProjectSecret needs exactly one of `valueFrom` or `generate`",
                "never write the value itself: reference it with `valueFrom` or use `generate: {length: 32}`",
                field="valueFrom" if self.value_from is not None else None,
            )
        return self


class ProjectSecret(Resource):
    """An encrypted secret of a Project, exposed to its functions."""

    KIND: ClassVar[str] = "ProjectSecret"
    PLURAL: ClassVar[str] = "projectsecrets"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ks", "klivsecret")
    COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("Project", ".spec.projectRef.name", "string"),
        ("Version", ".status.outputs.version", "string"),
    )

    kind: Literal["ProjectSecret"]
    spec: ProjectSecretSpec

    @property
    def secret_name(self) -> str:
        return self.spec.name or self.metadata.name.upper().replace("-", "_")
