"""Building blocks shared by every spec kind: the model base, metadata, references.

Each kind module (``project.py``, ``table.py``, ...) builds on these; the
parser (:mod:`kliv.specs.parsing`) and the CRD generator (:mod:`kliv.specs.crds`)
only ever see :class:`Resource` subclasses.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from kliv.specs import names
from kliv.specs.expressions import MAX_LENGTH, Context, Expression, check_expression

GROUP = "cloud.kliv.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_NAMESPACE = "default"

ANNOTATION_PREFIX = f"{GROUP}/"


def cel(*rules: tuple[str, str]) -> ConfigDict:
    """Model config carrying CEL rules (``x-kubernetes-validations``) into the CRD schema.

    Each rule mirrors a pydantic validator of the same model, so the API server
    rejects what ``kliv validate`` rejects for rules that need no other object.
    """
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]})


MAP_BY_NAME: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
SET: JsonDict = {"x-kubernetes-list-type": "set"}


class KlivModel(BaseModel):
    """camelCase aliases, unknown fields are errors, no silent type coercion."""

    # No populate_by_name: `project_ref` in a document must be an unknown field, not a synonym.
    # defer_build: a model's validator is built on its first use, so a command reading two kinds
    # never builds the other five (measured: ~40 models cost ~0.1 s at every start-up).
    model_config = ConfigDict(
        alias_generator=to_camel,
        extra="forbid",
        strict=True,
        frozen=True,
        defer_build=True,
    )


K8sName = Annotated[
    str,
    AfterValidator(names.kubernetes_name),
    WithJsonSchema({"type": "string", "maxLength": 63, "pattern": names.K8S_NAME_PATTERN}),
]
PG_IDENTIFIER_SCHEMA: JsonDict = {"type": "string", "maxLength": 63, "pattern": names.PG_IDENTIFIER_PATTERN}
PgIdentifier = Annotated[str, AfterValidator(names.postgres_identifier), WithJsonSchema(PG_IDENTIFIER_SCHEMA)]
PgColumnName = Annotated[str, AfterValidator(names.column_name), WithJsonSchema(PG_IDENTIFIER_SCHEMA)]
PgTableName = Annotated[str, AfterValidator(names.table_name), WithJsonSchema(PG_IDENTIFIER_SCHEMA)]
EnvName = Annotated[
    str,
    AfterValidator(names.env_name),
    WithJsonSchema({"type": "string", "maxLength": 128, "pattern": names.ENV_NAME_PATTERN}),
]


@lru_cache(maxsize=16384)
def checked_expression(text: str, context: Context) -> Expression:
    """Cached: the resolver asks again for what the models already checked."""
    return check_expression(text, context)


def _sql_scalar(value: Any) -> Any:
    # YAML reads `default: 0` or `default: true` as numbers/booleans; as SQL they are the same text.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return value


def _expression(context: Context) -> AfterValidator:
    def check(value: str) -> str:
        checked_expression(value, context)
        return value

    return AfterValidator(check)


_SQL = BeforeValidator(_sql_scalar)
_SQL_LENGTH = StringConstraints(max_length=MAX_LENGTH)
DefaultExpression = Annotated[str, _SQL, _SQL_LENGTH, _expression("default")]
CheckExpression = Annotated[str, _SQL, _SQL_LENGTH, _expression("check")]
IndexPredicate = Annotated[str, _SQL, _SQL_LENGTH, _expression("index")]
PolicyExpression = Annotated[str, _SQL, _SQL_LENGTH, _expression("policy")]
GeneratedExpression = Annotated[str, _SQL, _SQL_LENGTH, _expression("generated")]

DeletionPolicy = Literal["Retain", "Delete"]


class ObjectMeta(KlivModel):
    """Kubernetes object metadata; the server-managed fields are accepted and ignored."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True, defer_build=True)

    name: K8sName = Field(description="Object name: lowercase letters, digits and '-'.")
    namespace: K8sName = DEFAULT_NAMESPACE
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # Set by the API server; present when specs are read back from a cluster.
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: Any = None
    deletion_timestamp: Any = None
    deletion_grace_period_seconds: int | None = None
    finalizers: list[str] | None = None
    owner_references: list[Any] | None = None
    managed_fields: list[Any] | None = None
    generate_name: str | None = None
    self_link: str | None = None


class ProjectRef(KlivModel):
    """The Project (in the same namespace) this resource belongs to."""

    name: K8sName = Field(description="metadata.name of the Project.")


class Resource(KlivModel):
    """A custom resource of group cloud.kliv.dev: apiVersion, kind, metadata, spec."""

    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    # (name, JSON path, type) printer columns besides Ready/Synced/Age.
    COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    api_version: Literal["cloud.kliv.dev/v1alpha1"] = Field(alias="apiVersion")
    metadata: ObjectMeta
    status: dict[str, Any] | None = Field(default=None, description="Observed state, written by the operator.")

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def project_name(self) -> str:
        """metadata.name of the Project this resource belongs to."""
        spec = getattr(self, "spec", None)
        ref = getattr(spec, "project_ref", None)
        return ref.name if isinstance(ref, ProjectRef) else self.metadata.name

    @property
    def ref(self) -> str:
        """``Kind/namespace/name``: how plans and events name a resource."""
        return f"{self.KIND}/{self.namespace}/{self.name}"

    def annotation(self, key: str) -> str | None:
        return self.metadata.annotations.get(ANNOTATION_PREFIX + key)
