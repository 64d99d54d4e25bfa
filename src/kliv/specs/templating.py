"""The template language of EmailTemplates: a small, checked subset of Jinja2.

Called by :mod:`kliv.specs.email_template` at validation and by
:mod:`kliv.stacks.emails` before every render (a stored version may predate a
rule). Templates come from untrusted specs, so the check only *parses* (Jinja's
code generator folds constants, which once ran ``'x' * 1500000000`` inside
``kliv validate``) and walks the tree against an allow-list:

- text, ``{{ expression }}``, ``{% if %}`` / ``{% elif %}`` / ``{% else %}``,
  ``{% for x in variable %}`` (or over a literal list; ``loop.index`` and its
  siblings), comments and ``{% raw %}``;
- expressions of declared variables, loop variables, constants, comparisons,
  ``and``/``or``/``not``, ``if``-``else``, ``~``, ``+``, ``-``, ``/``, ``//``,
  ``%``, tests such as ``is defined``, and the filters in :data:`FILTERS`.

Everything that could reach Python internals or build without bound is
refused with its line: attribute and item access (``''.__class__``), calls
(``range()``, ``lipsum()``), ``*`` and ``**``, ``{% set %}``, macros, blocks,
includes and imports. What remains renders in time linear in the output,
except loops, which the renderer counts (:mod:`kliv.stacks.emails`).
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import TYPE_CHECKING

from kliv.specs.errors import SpecValueError
from kliv.specs.sizes import Size

if TYPE_CHECKING:
    from jinja2 import nodes
    from jinja2.sandbox import SandboxedEnvironment

# Filters whose output is never much larger than their input, with no Python object reachable.
FILTERS = frozenset({
    "abs", "capitalize", "count", "d", "default", "e", "escape", "first", "float", "int", "last", "length",
    "lower", "round", "string", "striptags", "title", "trim", "truncate", "upper", "urlencode", "wordcount",
})  # fmt: skip
TESTS = frozenset({
    "defined", "undefined", "none", "number", "string", "integer", "float", "boolean", "true", "false",
    "lower", "upper", "even", "odd", "divisibleby", "eq", "ne", "lt", "le", "gt", "ge", "in",
})  # fmt: skip
LOOP_ATTRIBUTES = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length"})
MAX_LIST_ITEMS = 100
_OPERATORS = {"Add": "+", "Sub": "-", "Div": "/", "FloorDiv": "//", "Neg": "-", "Pos": "+"}
# Bounds a render keeps (kliv.stacks.emails enforces the first two; the checker proves the rest).
MAX_VALUE_LENGTH = 65_536
MAX_OUTPUT = 1_048_576
MAX_NESTING = 10  # blocks inside blocks (Python refuses more than 20 nested loops)
# filter -> how many times its input its output can be (0: a number or a few characters)
_FILTER_GROWTH = {"length": 0, "count": 0, "wordcount": 0, "int": 0, "float": 0, "round": 0, "abs": 0,
                  "urlencode": 3, "e": 6, "escape": 6}  # fmt: skip
_REFUSED = {
    "Mul": ("`*` is not allowed in templates", "repeat text by writing it out"),
    "Mod": ("`%` is not allowed in templates (on text it formats: `'%999999999s' % name`)", "use the filters"),
    "Pow": ("`**` is not allowed in templates", "write the number out"),
    "Call": ("calling functions is not allowed in templates", "use the filters: `{{ name | upper }}`"),
    "Getattr": (
        "attribute access is not allowed in templates",
        "variables are text: use filters such as `{{ name | title }}`",
    ),
    "Getitem": ("indexing is not allowed in templates", "use `first`, `last` or `truncate`"),
    "Assign": ("`{% set %}` is not allowed in templates", "write the expression where it is used"),
    "AssignBlock": ("`{% set %}` is not allowed in templates", "write the content where it is used"),
    "Macro": ("macros are not allowed in templates", "write the content out"),
    "CallBlock": ("`{% call %}` is not allowed in templates", "write the content out"),
    "FilterBlock": ("`{% filter %}` blocks are not allowed in templates", "apply the filter to each value"),
    "With": ("`{% with %}` is not allowed in templates", "use the variables directly"),
    "Block": ("blocks are not allowed in templates", "templates are self-contained"),
    "Extends": ("`extends` is not allowed in templates", "templates are self-contained: inline the content"),
    "Include": ("`include` is not allowed in templates", "templates are self-contained: inline the content"),
    "Import": ("`import` is not allowed in templates", "templates are self-contained: inline the content"),
    "FromImport": ("`import` is not allowed in templates", "templates are self-contained: inline the content"),
}


@cache
def parser() -> SandboxedEnvironment:
    """The environment templates are parsed with (never rendered with: see kliv.stacks.emails)."""
    # Imported on first use: jinja2 costs more to import than most spec sets cost to validate.
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(autoescape=False)


@dataclasses.dataclass(frozen=True)
class CheckedTemplate:
    """A parsed template that passed the allow-list, and the variables it reads."""

    tree: nodes.Template
    variables: frozenset[str]


def check_template(source: str, field: str) -> CheckedTemplate:
    """Parse ``source`` (never run it) and check it; raises SpecValueError naming ``field`` and the line."""
    from jinja2 import TemplateSyntaxError

    try:
        tree = parser().parse(source)
    except TemplateSyntaxError as exc:
        raise SpecValueError(
            f"template syntax error on line {exc.lineno}: {exc.message}",
            "check `{{ ... }}` and `{% ... %}` pairs",
            field=field,
        ) from None
    except RecursionError:
        raise SpecValueError("the template is nested too deeply", "simplify it", field=field) from None
    checker = _Checker(field)
    try:
        checker.body(tree.body, frozenset())
        _Measure(field).body(tree.body, 0)
    except RecursionError:
        raise SpecValueError("the template is nested too deeply", "simplify it", field=field) from None
    return CheckedTemplate(tree, frozenset(checker.variables))


class _Checker:
    def __init__(self, field: str) -> None:
        self.field = field
        self.variables: set[str] = set()

    def refuse(self, node: nodes.Node, message: str, hint: str) -> SpecValueError:
        return SpecValueError(f"{message} (line {node.lineno})", hint, field=self.field)

    def body(self, statements: list[nodes.Node], loop_names: frozenset[str]) -> None:
        from jinja2 import nodes

        for node in statements:
            if isinstance(node, nodes.Output):
                for child in node.nodes:
                    if not isinstance(child, nodes.TemplateData):
                        self.expression(child, loop_names)
            elif isinstance(node, nodes.If):
                self.expression(node.test, loop_names)
                self.body(node.body, loop_names)
                for branch in node.elif_:
                    self.body([branch], loop_names)
                self.body(node.else_, loop_names)
            elif isinstance(node, nodes.For):
                self.loop(node, loop_names)
            else:
                raise self._unsupported(node)

    def loop(self, node: nodes.For, loop_names: frozenset[str]) -> None:
        from jinja2 import nodes

        if node.recursive:
            raise self.refuse(node, "recursive loops are not allowed in templates", "loop over a variable once")
        if not isinstance(node.target, nodes.Name):
            raise self.refuse(node, "a loop takes one variable (`{% for item in list %}`)", "unpack nothing")
        iterable = node.iter
        if isinstance(iterable, nodes.Name | nodes.List | nodes.Tuple):
            self.expression(iterable, loop_names)
        else:
            raise self.refuse(node, "a loop runs over a variable or a written list", "`{% for c in name %}`")
        inner = loop_names | {node.target.name, "loop"}
        if node.test is not None:
            self.expression(node.test, inner)
        self.body(node.body, inner)
        self.body(node.else_, loop_names)

    def expression(self, node: nodes.Node, loop_names: frozenset[str]) -> None:
        from jinja2 import nodes

        if isinstance(node, nodes.Name):
            if node.name == "loop" and "loop" not in loop_names:
                raise self.refuse(node, "`loop` is only defined inside a loop", "use it inside `{% for %}`")
            if node.name not in loop_names:
                self.variables.add(node.name)
        elif isinstance(node, nodes.Const):
            if not isinstance(node.value, str | int | float | bool | type(None)):
                raise self.refuse(node, "this constant is not allowed in templates", "write text or a number")
        elif isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "loop":
            if "loop" not in loop_names or node.attr not in LOOP_ATTRIBUTES:
                shown = ", ".join(f"loop.{name}" for name in sorted(LOOP_ATTRIBUTES))
                raise self.refuse(node, f"`loop.{node.attr}` is not allowed", f"use one of {shown}")
        elif isinstance(node, nodes.List | nodes.Tuple):
            if len(node.items) > MAX_LIST_ITEMS:
                raise self.refuse(node, f"a written list may hold at most {MAX_LIST_ITEMS} items", "shorten it")
            for item in node.items:
                self.expression(item, loop_names)
        elif isinstance(node, nodes.Filter | nodes.Test):
            self.call(node, loop_names)
        elif isinstance(node, nodes.Compare):
            self.expression(node.expr, loop_names)
            for operand in node.ops:
                self.expression(operand.expr, loop_names)
        elif isinstance(node, nodes.And | nodes.Or):
            self.expression(node.left, loop_names)
            self.expression(node.right, loop_names)
        elif isinstance(node, nodes.Not):
            self.expression(node.node, loop_names)
        elif isinstance(node, nodes.CondExpr):
            self.expression(node.test, loop_names)
            self.expression(node.expr1, loop_names)
            if node.expr2 is not None:
                self.expression(node.expr2, loop_names)
        elif isinstance(node, nodes.Concat):
            for child in node.nodes:
                self.expression(child, loop_names)
        elif isinstance(node, nodes.BinExpr):
            self.operator(node)
            self.expression(node.left, loop_names)
            self.expression(node.right, loop_names)
        elif isinstance(node, nodes.UnaryExpr):
            self.operator(node)
            self.expression(node.node, loop_names)
        else:
            raise self._unsupported(node)

    def operator(self, node: nodes.Node) -> None:
        if type(node).__name__ not in _OPERATORS:
            raise self._unsupported(node)

    def call(self, node: nodes.Filter | nodes.Test, loop_names: frozenset[str]) -> None:
        from jinja2 import nodes

        allowed, what = (FILTERS, "filter") if isinstance(node, nodes.Filter) else (TESTS, "test")
        if node.name not in allowed:
            raise self.refuse(
                node, f"{what} `{node.name}` is not allowed in templates", f"allowed: {', '.join(sorted(allowed))}"
            )
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            raise self.refuse(node, f"`*args` or `**kwargs` in a {what} are not allowed", "pass arguments by name")
        if node.node is not None:
            self.expression(node.node, loop_names)
        for argument in (*node.args, *(k.value for k in node.kwargs)):
            self.expression(argument, loop_names)

    def _unsupported(self, node: nodes.Node) -> SpecValueError:
        name = type(node).__name__
        message, hint = _REFUSED.get(
            name, (f"`{name}` is not allowed in templates", "use text, `{{ variable }}`, `{% if %}` and `{% for %}`")
        )
        return self.refuse(node, message, hint)


class _Measure:
    """How large a value each expression of a checked template can build (``k`` values plus ``c``
    characters), so that no render builds more than :data:`MAX_OUTPUT` before it can be stopped: a
    loop variable over a written list of ``x ~ x ~ ...`` nested four deep built 800 MB."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.loops: dict[str, Size] = {}

    def refuse(self, node: nodes.Node, message: str, hint: str) -> SpecValueError:
        return SpecValueError(f"{message} (line {node.lineno})", hint, field=self.field)

    def body(self, statements: list[nodes.Node], depth: int) -> None:
        from jinja2 import nodes

        for node in statements:
            if isinstance(node, nodes.Output):
                for child in node.nodes:
                    if not isinstance(child, nodes.TemplateData):
                        self.size(child)
            elif isinstance(node, nodes.If):
                self.nested(node, depth)
                for branch in (node, *node.elif_):
                    self.size(branch.test)
                    self.body(branch.body, depth + 1)
                self.body(node.else_, depth + 1)
            elif isinstance(node, nodes.For):
                self.nested(node, depth)
                saved = dict(self.loops)
                assert isinstance(node.target, nodes.Name)
                self.loops[node.target.name] = self.item(node.iter)
                self.loops["loop"] = Size(0, 16)
                if node.test is not None:
                    self.size(node.test)
                self.body(node.body, depth + 1)
                self.loops = saved
                self.body(node.else_, depth + 1)

    def nested(self, node: nodes.Node, depth: int) -> None:
        if depth >= MAX_NESTING:
            raise self.refuse(node, f"blocks are nested more than {MAX_NESTING} deep", "flatten the template")

    def item(self, iterable: nodes.Node) -> Size:
        """What a loop variable holds: a character of a value, or one of the written items."""
        from jinja2 import nodes

        if isinstance(iterable, nodes.List | nodes.Tuple):
            widest = Size(0, 0)
            for item in iterable.items:
                widest = widest.widest(self.size(item))
            return widest
        self.size(iterable)
        return Size(0, 4)

    def size(self, node: nodes.Node) -> Size:
        found = self._size(node)
        if found.growth * MAX_VALUE_LENGTH + found.built > MAX_OUTPUT:
            raise self.refuse(
                node,
                f"this expression can build {found.growth * MAX_VALUE_LENGTH + found.built:,} characters "
                f"(values may hold {MAX_VALUE_LENGTH:,}; at most {MAX_OUTPUT:,})",
                "repeat values less",
            )
        return found

    def _size(self, node: nodes.Node) -> Size:
        from jinja2 import nodes

        if isinstance(node, nodes.Name):
            return self.loops.get(node.name, Size(1, 0))
        if isinstance(node, nodes.Const):
            return Size(0, len(node.value)) if isinstance(node.value, str) else Size(0, 32)
        if isinstance(node, nodes.Concat):
            total = Size(0, 0)
            for child in node.nodes:
                total += self.size(child)
            return total
        if isinstance(node, nodes.Add):
            return self.size(node.left) + self.size(node.right)
        if isinstance(node, nodes.CondExpr):
            self.size(node.test)
            other = self.size(node.expr2) if node.expr2 is not None else Size(0, 0)
            return self.size(node.expr1).widest(other)
        if isinstance(node, nodes.Filter):
            sizes = [self.size(a) for a in (*node.args, *(k.value for k in node.kwargs))]
            value = self.size(node.node) if node.node is not None else Size(0, 0)
            if node.name in ("default", "d"):
                return value.widest(sizes[0]) if sizes else value
            growth = _FILTER_GROWTH.get(node.name, 1)
            return value.times(growth) if growth else Size(0, 32)
        for part in node.iter_child_nodes():
            self.size(part)
        return Size(0, 32)  # a comparison, a test, arithmetic, loop.index: a few characters
