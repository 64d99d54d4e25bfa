"""Deleting a Project through its plan: gated like any data loss, idempotent, never reaching what is not ours."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from postgres_projects import ROOT, Project

from kliv.stacks import RefusedError
from kliv.stacks.postgres import outbox


def _exists(created: Project) -> bool:
    with created.engine.control_session().cursor() as cursor:
        row = cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [created.database]).fetchone()
    return row is not None


class TestProjectDeletion:
    def test_drop_without_consent_is_refused_and_changes_nothing(
        self, project: Callable[[str | Path], Project]
    ) -> None:
        created = project(ROOT / "examples" / "blog")
        created.apply()
        deletion = created.engine.plan_deletion(created.namespace, "blog", created.database, drop=True)
        assert {c.risk for c in deletion.plan.changes if c.resource.startswith("Table/")} == {"data-loss"}
        with pytest.raises(RefusedError) as refused:
            created.engine.apply_deletion(deletion, allow_data_loss=False, actor="bob")
        assert f"Project/{created.namespace}/blog" in refused.value.message
        assert _exists(created)
        assert created.plan().empty  # the inventory is whole: nothing to re-create
        events = [r.event for r in outbox.read(created.url, f"{created.namespace}/blog", limit=20)]
        refusals = [e for e in events if e["type"].endswith(".refused")]
        assert {e["subject"].split("/")[0] for e in refusals} == {"Table", "Project"}

    def test_drop_then_again_is_idempotent(self, project: Callable[[str | Path], Project]) -> None:
        created = project(ROOT / "examples" / "blog")
        created.apply()
        deletion = created.engine.plan_deletion(created.namespace, "blog", created.database, drop=True)
        created.engine.apply_deletion(deletion, allow_data_loss=True, actor="bob")
        assert not _exists(created)
        again = created.engine.plan_deletion(created.namespace, "blog", created.database, drop=True)
        assert [c.resource for c in again.plan.changes] == [f"Project/{created.namespace}/blog"]
        assert not again.drop  # nobody claims the database any more: forgetting is all that is left
        created.engine.apply_deletion(again, allow_data_loss=False, actor="bob")

    def test_never_drops_another_projects_database(self, project: Callable[[str | Path], Project]) -> None:
        owner = project(ROOT / "examples" / "blog")
        owner.apply()
        deletion = owner.engine.plan_deletion(owner.namespace, "impostor", owner.database, drop=True)
        assert not deletion.drop
        assert deletion.plan.changes[-1].summary == [
            f"forget: database {owner.database} belongs to Project {owner.namespace}/blog, left untouched"
        ]
        owner.engine.apply_deletion(deletion, allow_data_loss=True, actor="mallory")
        assert _exists(owner)
        assert owner.plan().empty
