"""The Bucket kind: object storage (S3 or the local filesystem)."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, PlainValidator, WithJsonSchema

from kliv.specs.base import SET, DeletionPolicy, KlivModel, ProjectRef, Resource
from kliv.specs.errors import SpecValueError
from kliv.specs.names import bucket_name
from kliv.specs.quantities import parse_bytes

MAX_BUCKET_NAME = 63
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)$")
_ORIGIN = re.compile(r"^(\*|https?://(\*\.)?[a-z0-9.-]+(:\d{1,5})?)$")


def _size(value: object) -> str | int:
    if not isinstance(value, str | int):
        raise SpecValueError("expected a size such as `5Mi`", "write a number of bytes or `5Mi`")
    parse_bytes(value)
    return value


Quantity = Annotated[
    str | int,
    PlainValidator(_size),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    ),
]


def _content_type(value: str) -> str:
    if not _CONTENT_TYPE.fullmatch(value):
        raise SpecValueError(
            f"`{value[:60]}` is not a content type", "write `type/subtype` or `type/*`, e.g. `image/png`"
        )
    return value


def _origin(value: str) -> str:
    if not _ORIGIN.fullmatch(value):
        raise SpecValueError(
            f"`{value[:60]}` is not an origin",
            "write `https://host[:port]`, `https://*.host` or `*`, without a path",
        )
    return value


class CorsRule(KlivModel):
    """A CORS rule for browser access."""

    allowed_origins: list[Annotated[str, AfterValidator(_origin)]] = Field(
        min_length=1, description="Origins allowed, e.g. `https://app.example`."
    )
    allowed_methods: list[Literal["GET", "PUT", "POST", "DELETE", "HEAD"]] = Field(
        min_length=1, description="HTTP methods allowed."
    )
    allowed_headers: list[str] = Field(default_factory=list, description="Request headers allowed.")
    expose_headers: list[str] = Field(default_factory=list, description="Response headers exposed.")
    max_age_seconds: int | None = Field(default=None, ge=0, le=86400, description="Preflight cache time.")


class LifecycleRule(KlivModel):
    """Expire objects under a prefix."""

    prefix: str = Field(default="", max_length=1024, description="Key prefix; empty: the whole bucket.")
    expire_after_days: int = Field(ge=1, le=36500, description="Delete objects this many days after upload.")


class BucketSpec(KlivModel):
    """Desired state of a Bucket."""

    project_ref: ProjectRef
    name: Annotated[str, AfterValidator(bucket_name)] | None = Field(
        default=None, description="Physical bucket name (S3 naming rules); default: metadata.name."
    )
    public: bool = Field(default=False, description="Objects are readable by anyone.")
    versioning: bool = Field(default=False, description="Keep previous object versions.")
    max_object_size: Quantity | None = Field(default=None, description="Largest object accepted, e.g. `5Mi`.")
    allowed_content_types: list[Annotated[str, AfterValidator(_content_type)]] = Field(
        default_factory=list,
        max_length=100,
        description="Content types accepted on upload; empty: any.",
        json_schema_extra=SET,
    )
    cors: list[CorsRule] = Field(default_factory=list, max_length=100, description="CORS rules.")
    lifecycle: list[LifecycleRule] = Field(default_factory=list, max_length=100, description="Expiry rules.")
    deletion_policy: DeletionPolicy = Field(default="Retain", description="Retain or Delete on removal.")


class Bucket(Resource):
    """An object-storage bucket of a Project."""

    KIND: ClassVar[str] = "Bucket"
    PLURAL: ClassVar[str] = "buckets"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("kb", "klivbucket")
    COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("Project", ".spec.projectRef.name", "string"),
        ("Public", ".spec.public", "boolean"),
        ("Endpoint", ".status.outputs.endpoint", "string"),
    )

    kind: Literal["Bucket"]
    spec: BucketSpec

    @property
    def bucket_name(self) -> str:
        """The bucket's physical name: ``spec.name`` as written, else project-scoped.

        ``<project>-<name>`` (the name alone when it already starts with the project's
        name); past 63 characters it is cut and ends in a hash of the full identity,
        so two long names never meet. The resolver and the provider both use it.
        """
        if self.spec.name:
            return self.spec.name
        name, project = self.metadata.name, self.project_name
        full = name if name == project or name.startswith(project + "-") else f"{project}-{name}"
        if len(full) <= MAX_BUCKET_NAME:
            return full
        digest = hashlib.sha256(f"{self.namespace}/{project}/{name}".encode()).hexdigest()[:8]
        return full[: MAX_BUCKET_NAME - 9].rstrip("-.") + "-" + digest
