"""EmailTemplates from untrusted specs: validation never runs template code, rendering is bounded.

The attacks the review found: `{{ 'x' * 1500000000 }}` took 3 GB and 12 s inside
`kliv validate` (Jinja's code generator folds constants); nested `range` loops
rendered forever; Python internals were only stopped by the sandbox at render.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest
from spec_validation import Validate
from typer.testing import CliRunner

from kliv.cli import app
from kliv.specs.errors import SpecValueError
from kliv.specs.templating import check_template
from kliv.stacks import emails
from kliv.stacks.emails import RenderError, render


def _spec(markdown: str, subject: str = "Hello") -> str:
    return (
        "apiVersion: cloud.kliv.dev/v1alpha1\nkind: EmailTemplate\nmetadata: {name: welcome}\n"
        f"spec:\n  projectRef: {{name: demo}}\n  subject: {json.dumps(subject)}\n"
        f"  markdown: {json.dumps(markdown)}\n  variables: {{name: {{required: true}}}}\n"
    )


def _template(markdown: str, subject: str = "Hi") -> dict[str, Any]:
    return {"subject": subject, "markdown": markdown, "variables": {"name": {"required": True}}}


ESCAPES = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "calling functions is not allowed"),
    ("{{ name.__class__ }}", "attribute access is not allowed"),
    ("{{ name | attr('__class__') }}", "filter `attr` is not allowed"),
    ("{{ cycler.__init__.__globals__ }}", "attribute access is not allowed"),
    ("{{ lipsum.__globals__['os'] }}", "indexing is not allowed"),
    ("{{ self._TemplateReference__context }}", "attribute access is not allowed"),
    ("{{ namespace() }}", "calling functions is not allowed"),
    ("{{ name | map('upper') | list }}", "filter `list` is not allowed"),
    ("{{ name | format(name) }}", "filter `format` is not allowed"),
    ("{% set x = name %}{{ x }}", "`{% set %}` is not allowed"),
    ("{% macro m() %}x{% endmacro %}", "macros are not allowed"),
    ("{% include 'x' %}", "`include` is not allowed"),
    ("{% extends 'x' %}", "`extends` is not allowed"),
    ("{% with a = name %}{% endwith %}", "`{% with %}` is not allowed"),
]


class TestValidationNeverRuns:
    @pytest.mark.parametrize(("markdown", "message"), ESCAPES)
    def test_python_internals_refused_with_path_and_line(self, validate: Validate, markdown: str, message: str) -> None:
        [problem] = validate(_spec("line one\n" + markdown)).errors
        assert problem.path == "/spec/markdown"
        assert message in problem.message
        assert "(line 2)" in problem.message

    def test_in_the_subject_too(self, validate: Validate) -> None:
        [problem] = validate(_spec("Hi", subject="{{ name.__class__ }}")).errors
        assert problem.path == "/spec/subject"

    def test_string_multiplication_is_refused_without_running(self) -> None:
        """Parsed and refused, never folded: peak memory stays far below the 1.5 GB the string would take."""
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(SpecValueError, match=r"`\*` is not allowed"):
            check_template("{{ 'x' * 1500000000 }}", "markdown")
        with pytest.raises(SpecValueError, match=r"`\*\*` is not allowed"):
            check_template("{{ 10 ** 10 ** 10 }}", "markdown")
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert grown_kib < 100_000

    def test_range_loops_are_refused(self) -> None:
        nested = "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}"
        with pytest.raises(SpecValueError, match="a loop runs over a variable or a written list"):
            check_template(nested, "markdown")

    def test_kliv_validate_command(self, tmp_path: Path) -> None:
        spec = tmp_path / "t.yaml"
        spec.write_text(
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: demo}\n---\n"
            + _spec("{{ 'x' * 1500000000 }}")
        )
        result = CliRunner().invoke(app, ["validate", str(spec), "--output", "json"], env={"KLIV_CONFIG": "/none"})
        assert result.exit_code == 1
        [error] = json.loads(result.output)["errors"]
        assert (error["path"], error["kind"]) == ("/spec/markdown", "EmailTemplate")

    def test_what_real_templates_use_still_works(self) -> None:
        checked = check_template(
            "Hi {{ name | title }}{% if name is defined and name != '' %}!{% else %}.{% endif %}\n"
            "{% for c in ['a', 'b'] %}{{ loop.index }}{{ c | upper }}{% endfor %}"
            "{{ name ~ ' and ' ~ (name | truncate(10)) | default('x') }}{{ 1 + 2 - 1 }}",
            "markdown",
        )
        assert checked.variables == {"name"}


class TestRenderingIsBounded:
    def test_nested_loops_over_a_value_stop(self) -> None:
        nested = "{% for a in name %}{% for b in name %}{% for c in name %}{% endfor %}{% endfor %}{% endfor %}"
        with pytest.raises(RenderError, match="loops ran more than 10,000 times"):
            render(_template(nested), {"name": "x" * 1000})

    def test_output_is_bounded(self) -> None:
        with pytest.raises(RenderError, match="the rendered markdown is longer than 1,048,576 characters"):
            render(_template("{% for c in name %}" + "x" * 60_000 + "{% endfor %}"), {"name": "y" * 100})

    def test_values_are_bounded(self) -> None:
        with pytest.raises(RenderError, match="variable name is longer than 65,536 characters"):
            render(_template("{{ name }}"), {"name": "y" * 70_000})

    def test_time_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(emails, "MAX_SECONDS", 0.0)
        with pytest.raises(RenderError, match="rendering took longer than"):
            render(_template("{% for c in name %}{{ c }}{% endfor %}"), {"name": "abc"})

    @pytest.mark.parametrize(
        ("markdown", "message"),
        [("{{ 1/0 }}", "division by zero"), ("{{ name | int + 1/0 }}", "division by zero"),
         ("{{ 10 // 0 }}", "by zero")],
    )  # fmt: skip
    def test_runtime_mistakes_are_errors_not_tracebacks(self, markdown: str, message: str) -> None:
        with pytest.raises(RenderError, match=message):
            render(_template(markdown), {"name": "7"})

    def test_a_stored_version_is_checked_again(self) -> None:
        """A version stored before a rule existed is refused at render, never run."""
        with pytest.raises(RenderError, match=r"the stored template is not allowed: `\*` is not allowed"):
            render(_template("{{ 'x' * 1500000000 }}"), {"name": "a"})

    def test_cli_render_of_a_bad_expression_exits_1(self, tmp_path: Path) -> None:
        spec = tmp_path / "t.yaml"
        spec.write_text(
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: demo}\n---\n" + _spec("{{ 1/0 }}")
        )
        result = CliRunner().invoke(
            app, ["templates", "render", "welcome", "--from", str(spec), "--vars", '{"name": "A"}'],
            env={"KLIV_CONFIG": "/none"},
        )  # fmt: skip
        assert result.exit_code == 1
        assert isinstance(result.exception, SystemExit)
        assert "division by zero" in result.output

    def test_tag_stripping_is_linear(self) -> None:
        """Nested tag fragments in a subject would need one pass per level: they lose their `<` instead."""
        subject = "<a" * 100_000 + ">" * 100_000
        rendered = render(_template("body", subject=subject), {"name": "a"})
        assert "<" not in rendered.subject


class TestReviewFindings:
    """What the attacker's review of the template language found: values built before any bound applied."""

    @pytest.mark.parametrize(
        ("markdown", "message"),
        [
            ('{{ "%1500000000s" % name }}', "`%` is not allowed in templates"),
            ("{% for a in [" + " ~ ".join(["name"] * 100) + "] %}{{ a | length }}{% endfor %}",
             "this expression can build 6,553,600 characters"),
            ("{% for a in name %}" * 28 + "{% endfor %}" * 28, "blocks are nested more than 10 deep"),
            ("{{ " + " ~ ".join(["name"] * 17) + " }}", "this expression can build 1,114,112 characters"),
        ],
    )  # fmt: skip
    def test_refused_at_validation(self, validate: Validate, markdown: str, message: str) -> None:
        [problem] = validate(_spec(markdown)).errors
        assert problem.path == "/spec/markdown"
        assert message in problem.message

    def test_a_stored_version_that_formats_is_refused_at_render(self) -> None:
        with pytest.raises(RenderError, match="`%` is not allowed"):
            render(_template('{{ "%999999999999s" % name }}'), {"name": "a"})
