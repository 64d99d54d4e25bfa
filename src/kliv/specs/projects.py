"""Specs grouped by project: the unit that validation, guardrails and engines work on.

Built by :mod:`kliv.specs.loading`; read by :mod:`kliv.specs.resolving`, the
guardrails in :mod:`kliv.policies`, the engines and their providers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from kliv.specs.base import Resource
from kliv.specs.bucket import Bucket
from kliv.specs.database_function import DatabaseFunction
from kliv.specs.documents import Document
from kliv.specs.email_template import EmailTemplate
from kliv.specs.function import Function
from kliv.specs.project import Project
from kliv.specs.project_secret import ProjectSecret
from kliv.specs.table import Table
from kliv.specs.table_policy import TablePolicy
from kliv.specs.trigger import Trigger

R = TypeVar("R", bound=Resource, covariant=True)


@dataclasses.dataclass(frozen=True)
class Spec(Generic[R]):
    """A validated resource and the document it was read from."""

    resource: R
    document: Document


@dataclasses.dataclass
class ProjectSpecs:
    """Every spec of one project (the Project itself may be missing: a dangling reference)."""

    namespace: str
    name: str
    project: Spec[Project] | None = None
    tables: list[Spec[Table]] = dataclasses.field(default_factory=list)
    policies: list[Spec[TablePolicy]] = dataclasses.field(default_factory=list)
    database_functions: list[Spec[DatabaseFunction]] = dataclasses.field(default_factory=list)
    triggers: list[Spec[Trigger]] = dataclasses.field(default_factory=list)
    buckets: list[Spec[Bucket]] = dataclasses.field(default_factory=list)
    secrets: list[Spec[ProjectSecret]] = dataclasses.field(default_factory=list)
    functions: list[Spec[Function]] = dataclasses.field(default_factory=list)
    templates: list[Spec[EmailTemplate]] = dataclasses.field(default_factory=list)
    # Kinds without a list of their own above (a kind added later needs no change here).
    others: dict[str, list[Spec[Resource]]] = dataclasses.field(default_factory=dict)

    def add(self, spec: Spec[Resource]) -> None:
        resource = spec.resource
        if isinstance(resource, Project):
            self.project = spec  # type: ignore[assignment]
            return
        lists: dict[type[Resource], list[Any]] = {
            Table: self.tables,
            TablePolicy: self.policies,
            DatabaseFunction: self.database_functions,
            Trigger: self.triggers,
            Bucket: self.buckets,
            ProjectSecret: self.secrets,
            Function: self.functions,
            EmailTemplate: self.templates,
        }
        target = lists.get(type(resource))
        if target is None:
            target = self.others.setdefault(resource.KIND, [])
        target.append(spec)

    def __iter__(self) -> Iterator[Spec[Resource]]:
        if self.project is not None:
            yield self.project
        for group in (self.tables, self.policies, self.database_functions, self.triggers, self.buckets,
                      self.secrets, self.functions, self.templates):  # fmt: skip
            yield from group
        for others in self.others.values():
            yield from others

    def of_kind(self, kind: str) -> list[Spec[Resource]]:
        """The specs of one kind (for code that is told a kind, as providers are)."""
        return [spec for spec in self if kind == spec.resource.KIND]

    def table(self, name: str) -> Spec[Table] | None:
        """The table with physical name ``name``."""
        return next((t for t in self.tables if t.resource.table_name == name), None)

    def policies_on(self, table: str) -> list[Spec[TablePolicy]]:
        return [p for p in self.policies if p.resource.spec.table == table]


@dataclasses.dataclass
class SpecSet:
    """All valid specs that were loaded, grouped by (namespace, project name)."""

    projects: dict[tuple[str, str], ProjectSpecs] = dataclasses.field(default_factory=dict)
    documents: int = 0
    # (kind, namespace, name) of documents that failed validation: references to them are
    # not reported again as dangling, since their own error already says what is wrong.
    broken: set[tuple[str, str, str]] = dataclasses.field(default_factory=set)
    # (first, again): a second document of the same kind and name in the same project, left out.
    duplicates: list[tuple[Spec[Resource], Spec[Resource]]] = dataclasses.field(default_factory=list)
    _identities: dict[tuple[str, str, str, str], Spec[Resource]] = dataclasses.field(default_factory=dict)

    def is_broken(self, kind: str, namespace: str, name: str) -> bool:
        return (kind, namespace, name) in self.broken

    def add(self, spec: Spec[Resource]) -> None:
        """Add a spec to its project; one of a (kind, namespace, project, name) already added is a duplicate.

        Identity is per project: two projects of one namespace may both have a Table `notes`.
        """
        resource = spec.resource
        identity = (resource.KIND, resource.namespace, resource.project_name, resource.name)
        first = self._identities.setdefault(identity, spec)
        if first is not spec:
            self.duplicates.append((first, spec))
            return
        key = (resource.namespace, resource.project_name)
        group = self.projects.get(key)
        if group is None:
            group = self.projects[key] = ProjectSpecs(*key)
        group.add(spec)

    def __iter__(self) -> Iterator[Spec[Resource]]:
        for group in self.projects.values():
            yield from group

    def __len__(self) -> int:
        return sum(1 for _ in self)
