"""Shared fixtures: validate YAML text in-process, and the repository's paths."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kliv import policies
from kliv.specs import Validation, parse_text, validate_documents

ROOT = Path(__file__).resolve().parents[1]

PROJECT = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: demo}
spec:
  enums: [{name: post_status, values: [draft, published]}]
"""

Validate = Callable[..., Validation]


@pytest.fixture
def validate() -> Validate:
    """Validate YAML text (with the demo Project prepended unless ``project=False``) plus guardrails."""

    def run(text: str, project: bool = True) -> Validation:
        source = (PROJECT + "---\n" + text) if project else text
        documents, problems = parse_text(source, "test.yaml")
        validation = validate_documents(documents)
        validation.problems[:0] = problems
        validation.problems += policies.evaluate(validation.specs)
        return validation

    return run


@pytest.fixture
def root() -> Path:
    return ROOT
