"""Rendering an EmailTemplate: subject, sanitized HTML and a plain-text part.

Called by ``kliv templates render`` (from a spec file or from the version stored
in the project database) and by whatever sends mail. Variables are substituted
by a sandboxed Jinja2 environment with ``StrictUndefined``; in the body each
value is escaped for Markdown first, so a value is always text, never markup.
Markdown becomes HTML through markdown-it-py with raw HTML disabled, and the
HTML is then cleaned by nh3 (an allow-list sanitizer): a ``<script>`` survives
neither in a variable nor in the template itself.
"""

from __future__ import annotations

import dataclasses
import re
from email.utils import formataddr
from functools import cache
from typing import TYPE_CHECKING, Any

from kliv.stacks.errors import EngineError

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>&=])")
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
URL_SCHEMES = frozenset({"http", "https", "mailto"})


class RenderError(EngineError):
    """The variables do not fit the template."""


@dataclasses.dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    sender: str | None
    reply_to: str | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _escape_markdown(value: Any) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(value))


@cache
def _environment(markdown: bool) -> SandboxedEnvironment:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        finalize=_escape_markdown if markdown else None,
        keep_trailing_newline=True,
    )


@cache
def _markdown() -> MarkdownIt:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def _strip_tags(text: str) -> str:
    while True:
        stripped = _TAG.sub("", text)
        if stripped == text:
            return stripped
        text = stripped


def check_values(variables: dict[str, dict[str, Any]], values: dict[str, Any]) -> dict[str, str]:
    """The values to render with: defaults filled in; unknown or missing required ones refused."""
    unknown = sorted(set(values) - set(variables))
    if unknown:
        raise RenderError(
            f"unknown variable{'s' * (len(unknown) > 1)}: {', '.join(unknown)}",
            f"the template declares: {', '.join(sorted(variables)) or 'none'}",
        )
    missing = sorted(n for n, v in variables.items() if v.get("required") and n not in values)
    if missing:
        raise RenderError(
            f"missing required variable{'s' * (len(missing) > 1)}: {', '.join(missing)}",
            "pass them with --vars '{" + ", ".join(f'"{n}": "..."' for n in missing) + "}'",
        )
    found: dict[str, str] = {}
    for name, variable in variables.items():
        value = values.get(name, variable.get("default"))
        if isinstance(value, dict | list):
            raise RenderError(f"variable {name} must be text or a number, not a {type(value).__name__}")
        found[name] = "" if value is None else str(value)
    return found


def render(template: dict[str, Any], values: dict[str, Any]) -> RenderedEmail:
    """Render a template (the columns :func:`kliv.stacks.postgres.templates.stored` gives)."""
    import nh3
    from jinja2 import TemplateError, UndefinedError

    context = check_values(template.get("variables") or {}, values)
    try:
        subject = _environment(False).from_string(template["subject"]).render(context)
        markdown = _environment(True).from_string(template["markdown"]).render(context)
    except UndefinedError as exc:
        raise RenderError(f"the template uses an undeclared variable: {exc.message}", "declare it") from None
    except TemplateError as exc:
        raise RenderError(f"the template cannot be rendered: {exc.message}") from None
    subject = " ".join(_strip_tags(subject).split())  # one line: no header injection
    tokens = _markdown().parse(markdown)
    html = nh3.clean(
        _markdown().renderer.render(tokens, _markdown().options, {}),
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer",
    )
    sender = template.get("sender")
    shown_sender = None
    if sender:
        # formataddr quotes what needs quoting; the name is one line (no header injection).
        shown_sender = formataddr((" ".join(str(sender.get("name") or "").split()), sender["address"]))
    return RenderedEmail(subject, html, _strip_tags(_text(tokens)), shown_sender, template.get("reply_to"))


def _text(tokens: list[Token]) -> str:
    """The plain-text part: the document's text, links followed by their address."""
    parts: list[str] = []
    ordered: list[int] = []
    for token in tokens:
        if token.type == "inline":
            parts.append(_inline(token.children or []))
        elif token.type in ("paragraph_close", "heading_close", "blockquote_close"):
            parts.append("\n" if token.hidden else "\n\n")
        elif token.type == "ordered_list_open":
            ordered.append(0)
        elif token.type == "ordered_list_close":
            ordered.pop()
            parts.append("\n")
        elif token.type == "bullet_list_close":
            parts.append("\n")
        elif token.type == "list_item_open":
            if ordered:
                ordered[-1] += 1
                parts.append(f"{ordered[-1]}. ")
            else:
                parts.append("- ")
        elif token.type in ("fence", "code_block"):
            parts.append(token.content + "\n")
        elif token.type == "hr":
            parts.append("----\n\n")
    return "".join(parts).strip() + "\n"


def _inline(children: list[Token]) -> str:
    parts: list[str] = []
    links: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif child.type == "image":
            parts.append(child.content)
        elif child.type == "link_open":
            links.append(str(child.attrGet("href") or ""))
        elif child.type == "link_close":
            href = links.pop() if links else ""
            if href.split(":", 1)[0].lower() in URL_SCHEMES:
                parts.append(f" ({href.removeprefix('mailto:')})")
    return "".join(parts)
