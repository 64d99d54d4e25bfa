"""What a Bucket spec asks of a bucket, in a backend-neutral shape (pure: no I/O).

Called by the bucket provider; the S3 and filesystem backends read reality into
the same :class:`Settings`, so comparing is equality per setting.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from kliv.specs import Bucket
from kliv.specs.quantities import parse_bytes
from kliv.stacks.hashing import spec_hash

TAG_PREFIX = "kliv:"
_TAG_VALUE = 256


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting kliv manages on a bucket, in comparable form."""

    public: bool | None  # None (observed only): neither, e.g. a stray policy on a private bucket
    versioning: bool
    cors: tuple[tuple[tuple[str, Any], ...], ...]
    lifecycle: tuple[tuple[str, int], ...]  # (prefix, days)
    tags: tuple[tuple[str, str], ...]

    def cors_rules(self) -> list[dict[str, Any]]:
        return [dict(rule) for rule in self.cors]

    def tag_map(self) -> dict[str, str]:
        return dict(self.tags)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (a planned change carries the settings it applies)."""
        return {
            "public": self.public,
            "versioning": self.versioning,
            "cors": [[[key, list(value) if isinstance(value, tuple) else value] for key, value in rule]
                     for rule in self.cors],
            "lifecycle": [list(rule) for rule in self.lifecycle],
            "tags": [list(tag) for tag in self.tags],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        return cls(
            public=data["public"],
            versioning=bool(data["versioning"]),
            cors=tuple(tuple((str(key), tuple(value) if isinstance(value, list) else value) for key, value in rule)
                       for rule in data["cors"]),
            lifecycle=tuple((str(prefix), int(days)) for prefix, days in data["lifecycle"]),
            tags=tuple((str(key), str(value)) for key, value in data["tags"]),
        )  # fmt: skip


def cors_rule(
    origins: list[str], methods: list[str], headers: list[str], expose: list[str], max_age: int | None
) -> tuple[tuple[str, Any], ...]:
    """One CORS rule, normalized: sorted lists, empty parts left out."""
    rule: dict[str, Any] = {"origins": tuple(sorted(origins)), "methods": tuple(sorted(methods))}
    if headers:
        rule["headers"] = tuple(sorted(headers))
    if expose:
        rule["expose"] = tuple(sorted(expose))
    if max_age is not None:
        rule["maxAge"] = max_age
    return tuple(sorted(rule.items()))


_TAG_SAFE = re.compile(r"^[A-Za-z0-9 +\-=._:/@]*$")


def _tag_list(values: list[str]) -> str:
    """S3 tag values allow letters, digits, spaces and ``+ - = . _ : / @``: a space-separated
    list, ``*`` written as ``any`` (``image/any``); a type with other characters (``!#$&^``)
    is left out of the tag (the outputs keep every one)."""
    text = ""
    for value in sorted(v.replace("*", "any") for v in values):
        if not _TAG_SAFE.fullmatch(value):
            continue
        if len(text) + len(value) + 1 > _TAG_VALUE:
            break  # the full list is in the Bucket's status outputs
        text = f"{text} {value}".strip()
    return text


def settings(namespace: str, project: str, bucket: Bucket) -> Settings:
    spec = bucket.spec
    tags = {
        TAG_PREFIX + "namespace": namespace,
        TAG_PREFIX + "project": project,
        TAG_PREFIX + "resource": bucket.name,
        TAG_PREFIX + "spec-hash": spec_hash(spec),
    }
    if spec.max_object_size is not None:
        tags[TAG_PREFIX + "max-object-size"] = str(parse_bytes(spec.max_object_size))
    if spec.allowed_content_types:
        tags[TAG_PREFIX + "allowed-content-types"] = _tag_list(spec.allowed_content_types)
    return Settings(
        public=spec.public,
        versioning=spec.versioning,
        cors=tuple(
            cors_rule(
                r.allowed_origins, list(r.allowed_methods), r.allowed_headers, r.expose_headers, r.max_age_seconds
            )
            for r in spec.cors
        ),
        lifecycle=tuple((rule.prefix, rule.expire_after_days) for rule in spec.lifecycle),
        tags=tuple(sorted(tags.items())),
    )


def kliv_project(tags: dict[str, str]) -> tuple[str, str] | None:
    """The (namespace, project) kliv tagged a bucket for, if it carries kliv's tags."""
    namespace, project = tags.get(TAG_PREFIX + "namespace"), tags.get(TAG_PREFIX + "project")
    return (namespace, project) if namespace is not None and project is not None else None


def owned_by(tags: dict[str, str], namespace: str, project: str, resource: str) -> bool:
    return (
        tags.get(TAG_PREFIX + "namespace"),
        tags.get(TAG_PREFIX + "project"),
        tags.get(TAG_PREFIX + "resource"),
    ) == (namespace, project, resource)


def outputs(bucket: Bucket, physical: str, endpoint: str, provider: str) -> dict[str, str]:
    """The Bucket's status outputs: where it is and what the upload path must enforce."""
    spec = bucket.spec
    found = {
        "bucket": physical,
        "provider": provider,
        "endpoint": endpoint,
        "public": str(spec.public).lower(),
        "versioning": str(spec.versioning).lower(),
    }
    if spec.max_object_size is not None:
        found["maxObjectSize"] = str(parse_bytes(spec.max_object_size))
    if spec.allowed_content_types:
        found["allowedContentTypes"] = ",".join(spec.allowed_content_types)
    return found
