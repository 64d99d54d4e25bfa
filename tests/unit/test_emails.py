"""Rendering EmailTemplates: substitution, escaping, sanitizing, the text part, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from kliv.specs import parse_text
from kliv.specs.loading import validate_documents
from kliv.stacks.emails import RenderError, check_values, render

TEMPLATE: dict[str, Any] = {
    "subject": "Welcome, {{ name }}",
    "markdown": "Hi **{{ name }}**, [confirm]({{ url }}).\n\n1. one\n2. two\n",
    "variables": {"name": {"required": True}, "url": {"required": True}, "team": {"default": "the team"}},
    "sender": {"name": "Blog", "address": "noreply@blog.example"},
    "reply_to": None,
}


def _template(markdown: str) -> dict[str, Any]:
    return {**TEMPLATE, "markdown": markdown}


class TestRender:
    """emails.render: what goes in, what comes out."""

    def test_substitutes_variables(self) -> None:
        """Subject, HTML and text carry the values; the sender is formatted."""
        rendered = render(TEMPLATE, {"name": "Ada", "url": "https://blog.example/c?t=1&u=2"})
        assert rendered.subject == "Welcome, Ada"
        assert "<strong>Ada</strong>" in rendered.html
        assert 'href="https://blog.example/c?t=1&amp;u=2"' in rendered.html
        assert rendered.text == "Hi Ada, confirm (https://blog.example/c?t=1&u=2).\n\n1. one\n2. two\n"
        assert rendered.sender == "Blog <noreply@blog.example>"

    def test_script_in_variable_is_text(self) -> None:
        """A <script> value is escaped in the HTML and stripped from subject and text."""
        rendered = render(TEMPLATE, {"name": "<script>alert(1)</script>", "url": "https://x.example"})
        assert "<script" not in rendered.html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
        assert "<script" not in rendered.subject
        assert "<script" not in rendered.text

    def test_script_in_markdown_never_survives(self) -> None:
        """Raw HTML in the template itself is not passed through."""
        markdown = "Hello <script>steal()</script> <img src=x onerror=alert(1)>"
        rendered = render(_template(markdown), {"name": "A", "url": "u"})
        assert "<script" not in rendered.html
        assert "<img" not in rendered.html
        assert "<img" not in rendered.text

    def test_markdown_in_variable_is_literal(self) -> None:
        """A value cannot add markup: `**x**` and a link stay text."""
        rendered = render(TEMPLATE, {"name": "**boss** [x](https://evil.example)", "url": "https://ok.example"})
        assert "<strong>**boss**" in rendered.html
        assert "evil.example</strong>" not in rendered.html
        assert 'href="https://evil.example"' not in rendered.html

    def test_javascript_links_are_dropped(self) -> None:
        """A javascript: URL never becomes a link, in HTML or text."""
        rendered = render(TEMPLATE, {"name": "A", "url": "javascript:alert(1)"})
        assert "href" not in rendered.html
        assert "confirm (javascript:" not in rendered.text

    def test_subject_is_one_line(self) -> None:
        """Line breaks in a value cannot add mail headers."""
        rendered = render(TEMPLATE, {"name": "Ada\r\nBcc: all@example.com", "url": "u"})
        assert "\n" not in rendered.subject
        assert "\r" not in rendered.subject

    def test_sender_is_one_quoted_header(self) -> None:
        """A display name with line breaks or commas cannot add headers or recipients."""
        rendered = render({**TEMPLATE, "sender": {"name": "Shop,\r\nBcc: x@evil.example", "address": "a@b.example"}},
                          {"name": "A", "url": "u"})  # fmt: skip
        assert rendered.sender == '"Shop, Bcc: x@evil.example" <a@b.example>'

    def test_value_cannot_make_a_heading(self) -> None:
        """A value with a setext underline stays a paragraph."""
        rendered = render(_template("{{ name }}"), {"name": "Title\n===", "url": "u"})
        assert "<h1>" not in rendered.html

    def test_missing_required_variable(self) -> None:
        """Every missing required variable is named, with a fix hint."""
        with pytest.raises(RenderError) as raised:
            render(TEMPLATE, {})
        assert raised.value.message == "missing required variables: name, url"
        assert "--vars" in raised.value.hint

    def test_unknown_variable(self) -> None:
        """A variable the template does not declare is refused (a typo, usually)."""
        with pytest.raises(RenderError, match="unknown variable: nmae"):
            render(TEMPLATE, {"name": "A", "url": "u", "nmae": "B"})

    def test_structured_value_refused(self) -> None:
        """Values are text or numbers."""
        with pytest.raises(RenderError, match="must be text or a number"):
            render(TEMPLATE, {"name": {"first": "A"}, "url": "u"})

    def test_undeclared_variable_in_stored_template(self) -> None:
        """StrictUndefined backs the declaration check up: never an empty hole."""
        broken = {**TEMPLATE, "subject": "Hi {{ ghost }}"}
        with pytest.raises(RenderError, match="undeclared variable"):
            render(broken, {"name": "A", "url": "u"})

    def test_sandbox_blocks_attribute_escape(self) -> None:
        """The sandbox refuses Python internals reached through a value."""
        evil = {**TEMPLATE, "subject": "{{ name.__class__.__mro__ }}"}
        with pytest.raises(RenderError):
            render(evil, {"name": "A", "url": "u"})

    def test_defaults_fill_in(self) -> None:
        """An optional variable not given takes its default."""
        assert check_values(TEMPLATE["variables"], {"name": "A", "url": "u"})["team"] == "the team"


class TestValidation:
    """A template using a variable it does not declare is refused at validation."""

    def test_undeclared_variable_refused(self) -> None:
        """`kliv validate` names the variable and the field."""
        documents, _ = parse_text(
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: EmailTemplate\nmetadata: {name: t}\n"
            "spec: {projectRef: {name: p}, subject: 'Hi {{ who }}', markdown: body}\n",
            "t.yaml",
        )
        validation = validate_documents(documents)
        [error] = validation.errors
        assert error.path == "/spec/subject"
        assert "`{{ who }}` is used in `subject` but not declared" in error.message
