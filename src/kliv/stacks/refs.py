"""How kliv identifies a resource: kind, namespace, project and name.

Used by the inventory and the providers. Two projects in one namespace may both
hold ``Table/default/notes`` (two CLI folders; in a cluster, names are unique
per namespace anyway): each is its own resource, so the project is part of the
identity. People, plans and events see the shorter ``Kind/namespace/name``
(:attr:`Ref.shown`), with the project beside it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Ref:
    """One resource of one project."""

    kind: str
    namespace: str
    project: str
    name: str

    @classmethod
    def parse(cls, shown: str, project: str) -> Ref:
        """A ref from its ``Kind/namespace/name`` spelling and the project it belongs to."""
        kind, namespace, name = shown.split("/", 2)
        return cls(kind, namespace, project, name)

    @property
    def shown(self) -> str:
        """``Kind/namespace/name``: how plans, events and messages name it."""
        return f"{self.kind}/{self.namespace}/{self.name}"

    def describe(self) -> str:
        """The ref with its project, for messages about another project's resource."""
        return f"{self.shown} (Project {self.namespace}/{self.project})"

    def __str__(self) -> str:
        return self.shown
