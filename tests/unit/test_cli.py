"""The `kliv` command: exit codes, text and JSON output, examples, configuration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kliv.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_dir())
BAD = """apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: shop}
spec:
  displayName: Shop
  enums: [{name: state, values: [a]}]
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: items}
spec:
  projectRef: {name: shop}
  columns:
    - {name: id, type: uuid, primaryKey: true}
    - {name: price, type: "numeric(12,2)", default: "pg_sleep(5)"}
"""


def _run(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(previous)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


class TestExamples:
    """Every example project validates clean."""

    def test_at_least_three(self) -> None:
        """The blog, SaaS and storefront examples exist."""
        assert {"blog", "saas", "storefront"} <= set(EXAMPLES)

    @pytest.mark.parametrize("example", EXAMPLES)
    def test_validates_clean(self, example: str) -> None:
        """Exit 0, no errors and no warnings."""
        code, output = _run("validate", str(ROOT / "examples" / example), "--output", "json")
        report = json.loads(output)
        assert (code, report["valid"], report["errors"], report["warnings"]) == (0, True, [], [])
        assert report["projects"] == 1

    def test_all_together(self) -> None:
        """The examples claim no physical name twice."""
        code, output = _run("validate", str(ROOT / "examples"))
        assert code == 0, output


class TestValidateOutput:
    """The design's JSON shape and readable text."""

    def test_json_shape(self, tmp_path: Path) -> None:
        """Errors carry file, document, line, column, kind, name, pointer, message, hint."""
        (tmp_path / "shop.yaml").write_text(BAD)
        code, output = _run("validate", str(tmp_path), "--output", "json")
        report = json.loads(output)
        assert code == 1
        assert report["valid"] is False
        [error] = report["errors"]
        assert error == {
            "file": str(tmp_path / "shop.yaml"),
            "document": 1,
            "line": 15,
            "column": 44,
            "kind": "Table",
            "name": "items",
            "path": "/spec/columns/1/default",
            "message": "function `pg_sleep()` is not allowed (at character 1)",
            "hint": "expressions may not sleep",
            "severity": "error",
        }

    def test_text(self, tmp_path: Path) -> None:
        """Text output shows location, resource, pointer, message and hint."""
        (tmp_path / "shop.yaml").write_text(BAD)
        code, output = _run("validate", str(tmp_path / "shop.yaml"))
        assert code == 1
        assert "shop.yaml:15:44  Table/items  /spec/columns/1/default" in output
        assert "hint: expressions may not sleep" in output
        assert "✗ invalid: 1 error in 2 documents, 1 project" in output

    def test_missing_path(self, tmp_path: Path) -> None:
        """A path that does not exist is an invalid input, exit 1."""
        code, output = _run("validate", str(tmp_path / "nope"), "-o", "json")
        assert code == 1
        assert json.loads(output)["errors"][0]["message"] == "no such file or folder"

    def test_warnings_do_not_fail(self, tmp_path: Path) -> None:
        """Warnings are reported with their rule and exit 0."""
        (tmp_path / "p.yaml").write_text(BAD.replace('default: "pg_sleep(5)"', "default: '0'"))
        code, output = _run("validate", str(tmp_path), "-o", "json")
        report = json.loads(output)
        assert (code, report["valid"]) == (0, True)
        assert [w["rule"] for w in report["warnings"]] == ["rls-without-policies"]


class TestConfiguration:
    """kliv.toml is read from the working directory."""

    def test_severity_override(self, tmp_path: Path) -> None:
        """A warning promoted to error fails validation."""
        (tmp_path / "p.yaml").write_text(BAD.replace('default: "pg_sleep(5)"', "default: '0'"))
        (tmp_path / "kliv.toml").write_text('[policies]\nseverity = {rls-without-policies = "error"}\n')
        code, output = _run("validate", "p.yaml", "-o", "json", cwd=tmp_path)
        assert code == 1
        assert json.loads(output)["errors"][0]["rule"] == "rls-without-policies"

    def test_unknown_rule_in_config(self, tmp_path: Path) -> None:
        """A misspelt rule id in kliv.toml is a clear error, exit 1."""
        (tmp_path / "p.yaml").write_text(BAD)
        (tmp_path / "kliv.toml").write_text('[policies]\ndisable = ["rls-disable"]\n')
        code, output = _run("validate", "p.yaml", cwd=tmp_path)
        assert code == 1
        assert "did you mean `rls-disabled`?" in output


class TestCrds:
    """`kliv crds` writes the manifests."""

    def test_writes_files(self, tmp_path: Path) -> None:
        """One CRD per kind plus its JSON Schema."""
        code, _ = _run("crds", "--out", str(tmp_path))
        assert code == 0
        assert len(list(tmp_path.glob("*.yaml"))) == len(list((tmp_path / "schemas").glob("*.json"))) == 7


class TestOperatorOptions:
    """`kliv operator` refuses bad options before it connects to anything."""

    def test_unknown_log_format_is_refused(self) -> None:
        """--log-format xml: usage error naming the option and the choices; nothing is started."""
        code, output = _run("operator", "--log-format", "xml")
        assert code == 2
        assert "--log-format" in output
        assert "json or text" in output
