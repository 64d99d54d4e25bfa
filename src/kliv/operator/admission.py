"""Admission: the same validation as ``kliv validate``, at ``kubectl apply`` time.

Called by the kopf ``on.validate`` handler with the incoming object and the
other objects of its project the operator already holds, so cross references
(a policy's table, a foreign key's target) are checked too. Only problems of
the incoming object reject it; a reference to an object that does not exist
yet is allowed (GitOps tools apply in any order: the operator then reports
WaitingForDependency).
"""

from __future__ import annotations

from typing import Any

from kliv import policies
from kliv.specs import Document, Problem, Source, validate_documents
from kliv.specs.errors import DANGLING_REFERENCE


def admission_problems(body: dict[str, Any], others: list[dict[str, Any]]) -> list[Problem]:
    """Errors (not warnings) the incoming object has, in the design's field-path form."""
    metadata: dict[str, Any] = body["metadata"] if isinstance(body.get("metadata"), dict) else {}
    kind, name = body.get("kind"), metadata.get("name")
    # Kubernetes names are unique per kind and namespace: the stored version is replaced.
    documents = [
        Document(Source("<cluster>", i), other)
        for i, other in enumerate(others)
        if (other.get("kind"), (other.get("metadata") or {}).get("name")) != (kind, name)
    ]
    documents.append(Document(Source("<admission>", len(documents)), body))
    validation = validate_documents(documents)
    validation.problems += policies.evaluate(validation.specs)
    # A reference to an object that may simply come later (GitOps applies in any order) is admitted.
    return [p for p in validation.errors if p.file == "<admission>" and p.code != DANGLING_REFERENCE]


def rejection(problems: list[Problem]) -> str:
    """One message for kubectl, one line per problem: pointer, message, hint."""
    return "; ".join(f"{p.path or '/'}: {p.message}" + (f" (hint: {p.hint})" if p.hint else "") for p in problems)
