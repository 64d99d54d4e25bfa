"""Rendering an EmailTemplate: subject, sanitized HTML and a plain-text part.

Called by ``kliv templates render`` (from a spec file or from the version stored
in the project database) and by whatever sends mail. The template is checked
again first (:mod:`kliv.specs.templating`: a stored version may predate a
rule), then rendered from the checked tree by a sandboxed Jinja2 environment
with ``StrictUndefined`` and no globals; in the body each value is escaped for
Markdown first, so a value is always text, never markup. Markdown becomes HTML
through markdown-it-py with raw HTML disabled, and the HTML is then cleaned by
nh3 (an allow-list sanitizer): a ``<script>`` survives neither in a variable
nor in the template itself.

Rendering is bounded, since templates come from untrusted specs: each value
at most :data:`MAX_VALUE_LENGTH` characters, at most :data:`MAX_LOOP_ITERATIONS`
loop iterations and :data:`MAX_OUTPUT` characters per part, and
:data:`MAX_SECONDS` in all; past any bound the render stops with a RenderError.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
import time
from collections.abc import Iterable, Iterator
from email.utils import formataddr
from functools import cache
from typing import TYPE_CHECKING, Any

from kliv.specs.errors import SpecValueError
from kliv.specs.templating import MAX_OUTPUT, MAX_VALUE_LENGTH, check_template
from kliv.stacks.errors import EngineError

if TYPE_CHECKING:
    from jinja2 import nodes
    from jinja2.sandbox import SandboxedEnvironment
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

MAX_LOOP_ITERATIONS = 10_000
MAX_SECONDS = 2.0
_LOOP_FILTER = "kliv_counted_loop"

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>&=])")
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
URL_SCHEMES = frozenset({"http", "https", "mailto"})


class RenderError(EngineError):
    """The variables do not fit the template, or rendering went past a bound."""


@dataclasses.dataclass
class _Budget:
    """What one render may still spend."""

    deadline: float
    iterations: int = 0

    def spend(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise RenderError(
                f"the template's loops ran more than {MAX_LOOP_ITERATIONS:,} times", "loop over less, or nest fewer"
            )
        if time.monotonic() > self.deadline:
            raise RenderError(f"rendering took longer than {MAX_SECONDS:g} s", "simplify the template")


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("kliv_render_budget")


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _BUDGET.get()
    for item in iterable:
        budget.spend()
        yield item


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

    environment = SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        finalize=_escape_markdown if markdown else None,
        keep_trailing_newline=True,
    )
    environment.globals.clear()  # no range(), lipsum(), cycler(), namespace(), dict()
    environment.filters[_LOOP_FILTER] = _counted
    return environment


def _counting_loops(tree: nodes.Template) -> nodes.Template:
    """The checked tree with every loop's iterable passed through the iteration counter."""
    from jinja2 import nodes

    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.lineno)
    return tree


def _render_part(source: str, field: str, context: dict[str, str], markdown: bool, budget: _Budget) -> str:
    try:
        tree = check_template(source, field).tree
    except SpecValueError as exc:
        raise RenderError(f"the stored template is not allowed: {exc.message}", exc.hint) from None
    template = _environment(markdown).from_string(_counting_loops(tree))
    parts: list[str] = []
    size = 0
    token = _BUDGET.set(budget)
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise RenderError(f"the rendered {field} is longer than {MAX_OUTPUT:,} characters", "shorten it")
            if time.monotonic() > budget.deadline:
                raise RenderError(f"rendering took longer than {MAX_SECONDS:g} s", "simplify the template")
            parts.append(chunk)
    finally:
        _BUDGET.reset(token)
    return "".join(parts)


@cache
def _markdown() -> MarkdownIt:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


_STRIP_PASSES = 4


def _strip_tags(text: str) -> str:
    """Text without tags. Removing a tag can join a new one (``<a<b>>``): after a few passes
    text that still holds one loses every ``<``, so the work stays linear in the text."""
    for _ in range(_STRIP_PASSES):
        stripped = _TAG.sub("", text)
        if stripped == text:
            return stripped
        text = stripped
    return text.replace("<", "") if _TAG.search(text) else text


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
        text = "" if value is None else str(value)
        if len(text) > MAX_VALUE_LENGTH:
            raise RenderError(f"variable {name} is longer than {MAX_VALUE_LENGTH:,} characters", "shorten it")
        found[name] = text
    return found


def render(template: dict[str, Any], values: dict[str, Any]) -> RenderedEmail:
    """Render a template (the columns :func:`kliv.stacks.postgres.templates.stored` gives)."""
    import nh3
    from jinja2 import TemplateError, UndefinedError

    context = check_values(template.get("variables") or {}, values)
    budget = _Budget(time.monotonic() + MAX_SECONDS)
    try:
        subject = _render_part(template["subject"], "subject", context, False, budget)
        markdown = _render_part(template["markdown"], "markdown", context, True, budget)
    except UndefinedError as exc:
        raise RenderError(f"the template uses an undeclared variable: {exc.message}", "declare it") from None
    except TemplateError as exc:
        raise RenderError(f"the template cannot be rendered: {exc.message}") from None
    except (ArithmeticError, ValueError, TypeError, LookupError) as exc:
        # {{ 1/0 }}, {{ name | int }} of a word: the template's own mistake, told plainly.
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RenderError(f"the template failed while rendering: {reason}", "check the expressions") from None
    except (RecursionError, SyntaxError):
        raise RenderError("the template is nested too deeply to render", "simplify it") from None
    except MemoryError:
        raise RenderError("the template needed more memory than this process has", "simplify it") from None
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
