"""EmailTemplates stored in the project database: versions, access, and `kliv templates render`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import psycopg
import pytest
from postgres_projects import ROOT, Project, as_user
from typer.testing import CliRunner

from kliv.cli import app


def _rows(created: Project) -> list[tuple[str, int, bool]]:
    with created.connect() as connection:
        return connection.execute(
            "SELECT name, version, current FROM email.templates ORDER BY name, version"
        ).fetchall()  # type: ignore[return-value]


def _render(created: Project, *args: str) -> tuple[int, str]:
    env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": "x" * 32}
    result = CliRunner().invoke(app, ["templates", "render", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


class TestStoredTemplates:
    """Versions in email.templates, readable by the service_role only."""

    def test_versions(self, project: Callable[[str | Path], Project]) -> None:
        """Created as version 1; a change adds version 2 (1 kept, not current); removal retires it."""
        created = project(ROOT / "examples" / "storefront")
        created.apply()
        assert _rows(created) == [("order-receipt", 1, True)]
        assert created.plan().empty
        created.edit("EmailTemplate", "order-receipt", lambda d: d["spec"].update(subject="Order {{ order_number }}"))
        [change] = [c for c in created.plan().changes if c.action != "noop"]
        assert (change.action, change.summary) == ("update", ["store version 2 of template order-receipt"])
        created.apply()
        assert _rows(created) == [("order-receipt", 1, False), ("order-receipt", 2, True)]
        outputs = created.prepare().outputs[f"EmailTemplate/{created.namespace}/order-receipt"]
        assert outputs == {"table": "email.templates", "template": "order-receipt", "version": "2"}
        created.write([d for d in created.documents() if d["kind"] != "EmailTemplate"])
        created.apply()
        assert _rows(created) == [("order-receipt", 1, False), ("order-receipt", 2, False)]
        assert created.plan().empty

    def test_only_service_role_reads(self, project: Callable[[str | Path], Project]) -> None:
        """service_role selects the templates; anon and authenticated are refused."""
        created = project(ROOT / "examples" / "storefront")
        created.apply()
        with created.connect() as connection:
            as_user(connection, created.role("service_role"), None)
            assert connection.execute("SELECT count(*) FROM email.templates").fetchone() == (1,)
            for role in ("anon", "authenticated"):
                as_user(connection, created.role(role), None)
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    connection.execute("SELECT * FROM email.templates")


class TestRenderCommand:
    """`kliv templates render` from the database and from spec files."""

    VARS: ClassVar[dict[str, str]] = {
        "customer_name": "Ada",
        "order_number": "1042",
        "total": "€42.50",
        "order_url": "https://shop.example/o/1",
    }

    def test_render_stored(self, project: Callable[[str | Path], Project]) -> None:
        """The stored version renders: variables in, default filled, subject, HTML and text out."""
        created = project(ROOT / "examples" / "storefront")
        created.apply()
        code, output = _render(created, "order-receipt", "--vars", json.dumps(self.VARS), "-o", "json")
        assert code == 0, output
        rendered = json.loads(output)
        assert rendered["subject"] == "Your Storefront order #1042 is confirmed"
        assert "<strong>€42.50</strong>" in rendered["html"]
        assert '<a href="https://shop.example/o/1" rel="noopener noreferrer">View your order</a>' in rendered["html"]
        assert "within 1-2 working days" in rendered["text"]
        assert "View your order (https://shop.example/o/1)" in rendered["text"]
        assert rendered["sender"] == "Storefront <orders@shop.example>"

    def test_missing_required_variable(self, project: Callable[[str | Path], Project]) -> None:
        """A required variable left out: exit 1, naming it, from the database and from files."""
        created = project(ROOT / "examples" / "storefront")
        created.apply()
        partial = json.dumps({"customer_name": "Ada"})
        for source in ([], ["--from", str(created.folder)]):
            code, output = _render(created, "order-receipt", "--vars", partial, *source)
            assert code == 1
            assert "missing required variables: order_number, order_url, total" in output

    def test_script_never_survives(self, project: Callable[[str | Path], Project]) -> None:
        """A <script> in a variable comes out as text, escaped, in the rendered HTML."""
        created = project(ROOT / "examples" / "storefront")
        created.apply()
        values = {**self.VARS, "customer_name": "<script>alert(1)</script>"}
        code, output = _render(created, "order-receipt", "--vars", json.dumps(values), "-o", "json")
        rendered = json.loads(output)
        assert code == 0
        assert "<script" not in rendered["html"]
        assert "<script" not in rendered["text"]
        assert "&lt;script&gt;" in rendered["html"]
