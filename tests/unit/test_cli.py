"""The `kliv` command: exit codes, text and JSON output, examples, configuration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kliv.cli import app
from kliv.specs import KINDS

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

    def test_the_blogs_sign_up_trigger_is_a_note(self) -> None:
        """An `info` finding is a note: in `notes`, counted as such, never a warning (README's tour)."""
        code, output = _run("validate", str(ROOT / "examples" / "blog"), "--output", "json")
        report = json.loads(output)
        assert (code, [n["rule"] for n in report["notes"]], report["warnings"]) == (0, ["trigger-writes-past-rls"], [])
        code, output = _run("validate", str(ROOT / "examples" / "blog"))
        assert "✓ valid: 15 documents, 1 project, 1 note" in output

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

    @pytest.fixture(autouse=True)
    def _no_config_override(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("KLIV_CONFIG", raising=False)  # a developer's own KLIV_CONFIG must not decide

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
        assert len(list(tmp_path.glob("*.yaml"))) == len(list((tmp_path / "schemas").glob("*.json"))) == len(KINDS) == 9

    def test_the_deploy_kind_lists_are_rewritten_from_the_kinds(self, tmp_path: Path) -> None:
        """A stale list of kinds in the RBAC and admission manifests is brought up to date."""
        deploy = tmp_path / "deploy"
        deploy.mkdir()
        for name in ("rbac.yaml", "webhook.yaml"):
            text = (ROOT / "deploy" / name).read_text()
            (deploy / name).write_text(text.replace(", emailtemplates]", "]").replace(", emailtemplates/status]", "]"))
        code, _ = _run("crds", "--out", str(tmp_path / "crds"), "--deploy", str(deploy))
        assert code == 0
        for name in ("rbac.yaml", "webhook.yaml"):
            assert (deploy / name).read_text() == (ROOT / "deploy" / name).read_text()

    def test_a_deploy_folder_named_but_absent_is_an_error(self, tmp_path: Path) -> None:
        code, output = _invoke("crds", "--out", str(tmp_path / "crds"), "--deploy", str(tmp_path / "nope"))
        assert code == 1
        assert "no such folder" in output
        assert not (tmp_path / "crds").exists()  # nothing written


class TestOperatorOptions:
    """`kliv operator` refuses bad options before it connects to anything."""

    def test_adoption_consent_reaches_the_operators_engine(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """KLIV_ADOPT_BUCKETS is the operator's consent: the engine `kliv operator` runs with carries it;
        its secret provider reads the Kubernetes Secrets the handlers track, never the environment."""
        import kopf

        import kliv.operator.running as running

        engines: list[object] = []
        tracked: list[object] = []
        original = running.make_registry

        def recording(engine: object, *args: object, **kwargs: object) -> object:
            engines.append(engine)
            tracked.append(kwargs.get("secrets"))
            return original(engine, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(running, "make_registry", recording)
        monkeypatch.setattr(kopf, "run", lambda **kwargs: None)
        result = CliRunner().invoke(
            app,
            ["operator", "--log-format", "text"],
            env={"KLIV_CONFIG": "/nonexistent", "KLIV_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x",
                 "KLIV_ADOPT_BUCKETS": "legacy-*,old-assets"},
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        [engine] = engines
        [buckets] = [p for p in engine.providers if p.kind == "Bucket"]  # type: ignore[attr-defined]
        assert buckets.adoptable == ("legacy-*", "old-assets")
        [secrets] = [p for p in engine.providers if p.kind == "ProjectSecret"]  # type: ignore[attr-defined]
        [cluster_secrets] = tracked
        assert secrets.values == cluster_secrets.value  # type: ignore[attr-defined]

    def test_unknown_log_format_is_refused(self) -> None:
        """--log-format xml: usage error naming the option and the choices; nothing is started."""
        code, output = _run("operator", "--log-format", "xml")
        assert code == 1  # a usage error is invalid input (1), never "refused" (2)
        assert "--log-format" in output
        assert "json or text" in output


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"KLIV_CONFIG": "/nonexistent", **(env or {})})
    assert isinstance(result.exception, SystemExit), result.exception  # a clean exit, never a traceback
    return result.exit_code, result.output


class TestBadInputNeverTraces:
    """Every bad input the review tried: a clear error, a non-zero exit, nothing started or changed."""

    def _spec(self, tmp_path: Path, value: str) -> str:
        path = tmp_path / "p.yaml"
        path.write_text(f"apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {{name: p}}\n"
                        f"spec: {{displayName: {value}}}\n")  # fmt: skip
        return str(path)

    def test_a_5000_digit_integer(self, tmp_path: Path) -> None:
        code, output = _invoke("validate", self._spec(tmp_path, "9" * 5000))
        assert code == 1
        assert "cannot read this value: Exceeds the limit (4300 digits)" in output

    def test_an_impossible_date(self, tmp_path: Path) -> None:
        code, output = _invoke("validate", self._spec(tmp_path, "2001-13-45"))
        assert code == 1
        assert "cannot read this value: month must be in 1..12" in output
        assert "quote it" in output

    @pytest.mark.parametrize(
        ("args", "option"),
        [(("events", "--limit", "-5"), "--limit"), (("operator", "--metrics-port", "99999999"), "--metrics-port"),
         (("apply", ".", "--allow-dataloss"), "--allow-data-loss")],
    )  # fmt: skip
    def test_bad_options_are_usage_errors(self, args: tuple[str, ...], option: str) -> None:
        code, output = _invoke(*args)
        assert code == 1
        assert option in output

    def test_unwritable_crds_folder(self) -> None:
        code, output = _invoke("crds", "--out", "/proc/kliv-crds")
        assert code == 1
        assert "cannot write the CRDs" in output

    def test_malformed_endpoint_is_not_echoed(self, tmp_path: Path) -> None:
        code, output = _invoke("apply", self._spec(tmp_path, "x"), env={"KLIV_S3_ENDPOINT": "http://[::1:secretpart"})
        assert code == 1
        assert "KLIV_S3_ENDPOINT: Value error, not a http or https URL with a host" in output
        assert "secretpart" not in output

    def test_malformed_key_for_rotation(self) -> None:
        env = {"KLIV_SECRET_KEY": "short", "KLIV_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}
        code, output = _invoke("secrets", "rotate-key", env=env)
        assert code == 1
        assert "KLIV_SECRET_KEY is too short" in output

    def test_deeply_nested_vars(self, tmp_path: Path) -> None:
        code, output = _invoke("templates", "render", "x", "--vars", "[" * 30000 + "]" * 30000)
        assert code == 1
        assert "nested too deeply" in output

    def test_terminal_control_characters_are_shown_escaped(self, tmp_path: Path) -> None:
        path = tmp_path / "p.yaml"
        path.write_text('apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: p}\n'
                        'spec: {"\\e]0;owned\\a\\e[2J": 1}\n')  # fmt: skip
        code, output = _invoke("validate", str(path))
        assert code == 1
        assert "\x1b" not in output
        assert "\\x1b]0;owned\\x07\\x1b[2J" in output

    def test_an_unforeseen_error_is_one_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The console script's last resort (kliv.cli.main): no traceback, exit 3, a hint to see one."""
        import kliv.cli

        def boom(*args: object, **kwargs: object) -> None:
            raise RuntimeError("postgresql://u:hunter2@db/x went away")

        monkeypatch.setattr(kliv.cli, "app", boom)
        monkeypatch.delenv("KLIV_TRACEBACK", raising=False)
        with pytest.raises(SystemExit) as exited:
            kliv.cli.main()
        assert exited.value.code == 3
        err = capsys.readouterr().err
        assert "unexpected error: RuntimeError" in err
        assert "hunter2" not in err
        assert "Traceback" not in err


class TestEngineChoice:
    """Without the `pulumi` CLI the Pulumi engine exits 3, naming what to install; nothing is touched."""

    @pytest.fixture(autouse=True)
    def _no_pulumi(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("PATH", str(tmp_path))  # wherever `pulumi` is installed, it is not found here
        # An address nothing listens on: reaching for it would fail differently (and slowly).
        monkeypatch.setenv("KLIV_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
        monkeypatch.setenv("KLIV_CONFIG", "/nonexistent")

    @pytest.mark.parametrize("how", ["KLIV_ENGINE", "--engine"])
    @pytest.mark.parametrize("command", ["plan", "apply"])
    def test_pulumi_exits_3(self, command: str, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
        from kliv.stacks.pulumi.engine import versions

        args = [command, str(ROOT / "examples" / "blog"), "-o", "json"]
        if how == "KLIV_ENGINE":
            monkeypatch.setenv("KLIV_ENGINE", "pulumi")
        else:
            args += ["--engine", "pulumi"]
        code, output = _run(*args)
        assert code == 3
        error = json.loads(output)
        assert (error["error"], error["code"]) == ("engine not available", "pulumi-missing")
        assert "needs the `pulumi` CLI on PATH" in error["message"]
        assert "nothing was changed" in error["message"]
        found = versions()
        for name, version in (("CLI", found["pulumi"]), ("postgresql", found["pulumi-postgresql"]),
                              ("aws", found["pulumi-aws"])):  # fmt: skip
            assert f"{name} {version}" in error["hint"]
        assert "KLIV_ENGINE" in error["hint"]

    def test_the_option_overrides_the_setting(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KLIV_ENGINE", "pulumi")
        code, output = _run("plan", str(ROOT / "examples" / "blog"), "-o", "json", "--engine", "native")
        assert code == 3
        assert "cannot connect to Postgres" in json.loads(output)["message"]  # the native engine tried the server

    def _fake_pulumi(self, folder: Path, version: str) -> None:
        """A `pulumi` that answers `pulumi version` only (what the engine asks first)."""
        script = folder / "pulumi"
        script.write_text(f"#!/bin/sh\necho v{version}\n")
        script.chmod(0o755)

    def test_a_cli_older_than_the_sdk_exits_3(self, tmp_path: Path) -> None:
        self._fake_pulumi(tmp_path, "3.0.0")
        code, output = _run("plan", str(ROOT / "examples" / "blog"), "-o", "json", "--engine", "pulumi")
        assert code == 3
        error = json.loads(output)
        assert (error["code"], "too old" in error["message"]) == ("pulumi-missing", True)

    def test_no_secret_key_exits_3_with_its_hint(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from kliv.stacks.pulumi.engine import versions

        self._fake_pulumi(tmp_path, versions()["pulumi"])
        monkeypatch.delenv("KLIV_SECRET_KEY", raising=False)
        code, output = _run("plan", str(ROOT / "examples" / "blog"), "-o", "json", "--engine", "pulumi")
        assert code == 3
        error = json.loads(output)
        assert "KLIV_SECRET_KEY" in error["message"]
        assert "set KLIV_SECRET_KEY" in error["hint"]

    def test_up_exits_3_before_starting_anything(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("KLIV_ENGINE", "pulumi")
        monkeypatch.delenv("KLIV_DATABASE_URL")  # kliv up would start the embedded Postgres...
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
        code, output = _run("up", str(ROOT / "examples" / "blog"), "-o", "json")
        assert code == 3
        assert json.loads(output)["code"] == "pulumi-missing"
        assert not (tmp_path / "data").exists()  # ... and keep its data there: nothing was started

    @pytest.mark.parametrize("command", [["events", "--limit", "1"], ["secrets", "list"], ["functions", "list"]])
    def test_commands_that_do_not_plan_keep_the_native_engine(self, command: list[str]) -> None:
        """They work on the control database with either engine: here they reach for it (unreachable)."""
        import subprocess
        import sys

        env = {**os.environ, "KLIV_ENGINE": "pulumi"}
        found = subprocess.run([sys.executable, "-m", "kliv", *command, "-o", "json"], env=env, capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        assert found.returncode == 3
        assert "pulumi" not in found.stdout + found.stderr
        assert "connect" in found.stdout + found.stderr
        assert "this is a bug" not in found.stderr

    def test_operator_exits_3(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KLIV_ENGINE", "pulumi")
        code, output = _run("operator", "--log-format", "text")
        assert code == 3
        assert "needs the `pulumi` CLI on PATH" in " ".join(output.split())


class TestHelp:
    """Help texts say what to type, never Python annotations."""

    @pytest.mark.parametrize(
        "command", [["plan"], ["apply"], ["up"], ["events"], ["operator"], ["secrets", "list"], ["templates", "render"]]
    )
    def test_no_python_types(self, command: list[str]) -> None:
        code, output = _run(*command, "--help")
        assert code == 0
        for python in ("<bool>", "list[", "<Path>", "<str>", "<int>", "range"):
            assert python not in output, output

    def test_paths_and_choices(self) -> None:
        output = " ".join(_run("plan", "--help")[1].split())
        assert "PATH..." in output
        assert "text|json" in output


class TestFolderWalk:
    """A folder's hidden entries and other APIs' manifests are not specs; a named file always is."""

    def test_repository_root_validates(self) -> None:
        """The repository itself (.venv, crds/, deploy/ beside examples/) is a valid spec folder."""
        code, output = _run("validate", ".", "-o", "json", cwd=ROOT)
        assert code == 0, output
        document = json.loads(output)
        [skipped] = [w for w in document["warnings"] if w["message"].startswith("skipped ")]
        assert "apiextensions.k8s.io/v1" in skipped["message"]
        assert "rbac.authorization.k8s.io/v1" in skipped["message"]
        assert not any(".venv" in w["file"] for w in document["warnings"])

    def test_named_manifest_is_an_error(self) -> None:
        code, output = _run("validate", str(ROOT / "deploy" / "rbac.yaml"), "-o", "json")
        assert code == 1
        assert json.loads(output)["errors"][0]["path"] == "/apiVersion"

    def test_misspelt_kind_of_ours_is_not_skipped(self, tmp_path: Path) -> None:
        """`kliv.dev/v1alpha1` with kind Table is a typo of a spec, not someone else's manifest."""
        (tmp_path / "t.yaml").write_text("apiVersion: kliv.dev/v1alpha1\nkind: Table\nmetadata: {name: x}\n")
        code, output = _run("validate", str(tmp_path), "-o", "json")
        assert code == 1
        assert any(e["path"] == "/apiVersion" for e in json.loads(output)["errors"])

    def test_hidden_folder_is_skipped(self, tmp_path: Path) -> None:
        (tmp_path / ".cache").mkdir()
        (tmp_path / ".cache" / "junk.yaml").write_text("kind: Table\n")
        (tmp_path / "node_modules" / "pkg").mkdir(parents=True)
        (tmp_path / "node_modules" / "pkg" / ".travis.yml").write_text("language: node_js\n")
        (tmp_path / "node_modules" / "pkg" / "config.yaml").write_text("kind: Table\n")
        (tmp_path / "p.yaml").write_text(BAD.replace('default: "pg_sleep(5)"', "default: '0'"))
        code, output = _run("validate", str(tmp_path), "-o", "json")
        assert code == 0, output
