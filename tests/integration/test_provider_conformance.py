"""Every real provider keeps the one contract (``kliv.stacks.testing.check_provider``).

Observe twice gives the same plan, every change is JSON data, applying converges and
is idempotent, removal plans a delete for each resource and deleting twice succeeds:
for filesystem buckets, email templates in a real project database and secrets in
the postgres store, each driven through ``apply(ref, change)`` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from postgres_projects import ROTATED_KEY, TEST_KEY, Project

from kliv.specs import load
from kliv.specs.projects import ProjectSpecs
from kliv.stacks.buckets.filesystem import FilesystemBuckets
from kliv.stacks.buckets.provider import BucketProvider
from kliv.stacks.contract import Observation, Record
from kliv.stacks.plans import Change
from kliv.stacks.postgres.templates import TemplateProvider
from kliv.stacks.secrets.keys import Keyring
from kliv.stacks.secrets.provider import SecretProvider
from kliv.stacks.testing import check_provider

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: shop}
spec: {}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Bucket
metadata: {name: images}
spec:
  projectRef: {name: shop}
  versioning: true
  deletionPolicy: Delete
  cors: [{allowedOrigins: ["*"], allowedMethods: [GET]}]
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: EmailTemplate
metadata: {name: welcome}
spec:
  projectRef: {name: shop}
  subject: "Hello {{ name }}"
  markdown: "Hi {{ name }}"
  variables: {name: {required: true}}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: ProjectSecret
metadata: {name: token}
spec: {projectRef: {name: shop}, generate: {length: 24}}
"""


def group_of(created: Project) -> ProjectSpecs:
    validation = load([created.folder])
    assert validation.valid, [(p.path, p.message) for p in validation.errors]
    [group] = [g for g in validation.specs.projects.values() if g.project]
    return group


class InControlTransaction:
    """Applies as the engine does: inside a control-database transaction (the secret's version
    commits with its inventory row and event)."""

    def __init__(self, provider: SecretProvider, control: Callable[[], Any]) -> None:
        self.provider, self.control = provider, control
        self.kind, self.in_database = provider.kind, provider.in_database

    def observe(self, group: ProjectSpecs, applied: dict[str, Record]) -> list[Observation]:
        return self.provider.observe(group, applied)

    def apply(self, ref: str, change: Change) -> dict[str, str]:
        with self.control().transaction():
            return self.provider.apply(ref, change)


class TestProviderConformance:
    def test_filesystem_buckets(self, project: Callable[[str], Project], tmp_path: Path) -> None:
        created = project(SPECS)
        provider = BucketProvider(FilesystemBuckets(tmp_path / "buckets"), created.engine.control_session)
        check_provider(provider, group_of(created))
        assert provider.backend.read(f"{created.namespace}-images") is None  # deleted by the check

    def test_email_templates(self, project: Callable[[str], Project]) -> None:
        created = project(SPECS)
        created.write([d for d in created.documents() if d["kind"] == "Project"])
        created.apply()  # the project database, with email.templates
        group = group_of(project_with(created, SPECS))
        check_provider(TemplateProvider(created.engine.database_session), group)
        with created.connect() as connection:
            rows = connection.execute("SELECT name, version, current FROM email.templates").fetchall()
        assert rows == [("welcome", 1, False)]  # stored once (idempotent), retired by the removal

    def test_postgres_secrets(self, project: Callable[[str], Project]) -> None:
        created = project(SPECS)
        control = created.engine.control_session
        provider = SecretProvider(control, lambda _: None, Keyring(TEST_KEY, [ROTATED_KEY]))
        check_provider(InControlTransaction(provider, control), group_of(created))
        row = (
            control()
            .execute("SELECT count(*) FROM secrets.versions WHERE namespace = %s", [created.namespace])
            .fetchone()
        )
        assert row == (0,)  # written once, deleted by the removal


def project_with(created: Project, text: str) -> Project:
    """``created`` with its spec folder holding ``text`` again (names rewritten as the fixture does)."""
    import yaml

    created.write([d for d in yaml.safe_load_all(text) if d])
    return created
