"""Every example applies cleanly from empty, and applying again plans nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from postgres_projects import ROOT, Project

EXAMPLES = ["blog", "saas", "storefront", "user-management"]


class TestExamplesApply:
    """From empty to the example and back to an empty plan."""

    @pytest.mark.parametrize("example", EXAMPLES)
    def test_apply_then_empty_plan(self, project: Callable[[str | Path], Project], example: str) -> None:
        """The first apply creates every resource; a second plan is empty."""
        created = project(ROOT / "examples" / example)
        first = created.apply()
        assert first.summary()["create"] >= 3
        again = created.plan()
        assert again.empty, [(c.resource, c.summary) for c in again.changes if c.action != "noop"]

    def test_tables_policies_and_audit_exist(self, project: Callable[[str | Path], Project]) -> None:
        """The blog's tables carry forced RLS, their policies and the audit trigger."""
        created = project(ROOT / "examples" / "blog")
        created.apply()
        with created.connect() as connection:
            rows = connection.execute(
                "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
                "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid), "
                "EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'kliv_audit') "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1"
            ).fetchall()
        assert rows == [
            ("comments", True, True, 3, True),
            ("posts", True, True, 4, True),
            ("profiles", True, True, 2, True),
        ]
