"""Shared fixtures: validate YAML text in-process, and the repository's paths."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kliv import policies
from kliv.specs import Validation, parse_text, validate_documents

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _test_keyring_opens() -> None:
    """The long-running test server's keyring must open with the test keys.

    A keyring left by something else (an older key derivation, a developer's own key)
    would fail every secret test: on the test server only, it is replaced, and the
    secret versions of earlier test runs (namespaces `test-*`) go with it.
    """
    url = os.environ.get("KLIV_TEST_DATABASE_URL")
    if not url:
        return
    import psycopg
    from psycopg.conninfo import make_conninfo

    from keyrings import ROTATED_KEY, TEST_KEY
    from kliv.stacks.secrets.keys import Keyring, SecretKeyError

    try:
        connection = psycopg.connect(make_conninfo(url, dbname="kliv"), autocommit=True)
    except psycopg.OperationalError:
        return  # no control database yet: the first test creates it
    with connection:
        if connection.execute("SELECT to_regclass('secrets.keyring')").fetchone() == (None,):
            return
        keyring = Keyring(TEST_KEY, [ROTATED_KEY])
        for key_id, wrapped in connection.execute("SELECT key_id, wrapped FROM secrets.keyring").fetchall():
            try:
                keyring.unwrap(key_id, bytes(wrapped), b"kliv fingerprint key")
            except SecretKeyError:
                with connection.transaction():
                    connection.execute("DELETE FROM secrets.keyring")
                    connection.execute("DELETE FROM secrets.versions WHERE namespace LIKE 'test-%'")


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
