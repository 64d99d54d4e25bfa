"""How large a value an accepted SQL fragment can build: bounded, so no fragment exhausts the server.

Called by :mod:`kliv.specs.expressions` once a fragment has passed the
allow-list. Policies run on every request of every user, on a server shared
by many projects; `length(lpad('', 100000000, 'x'))` in a policy made every
anonymous request allocate 100 MB per term, and `replace` nested in `replace`
grows exponentially with the fragment's length.

A fragment's value is bounded as ``k * S + c`` characters, where ``S`` is the
largest value it reads (a column, a claim): ``k`` is how many times over it
can repeat what it reads, ``c`` how much it can build from constants. The
checker refuses ``k`` over :data:`MAX_GROWTH` and ``c`` over :data:`MAX_BUILT`,
and every function that could grow a value without bound must have the
argument that sets its size written as a constant: the length of ``lpad`` /
``rpad`` (at most :data:`MAX_PAD`), the replacement of ``replace`` /
``regexp_replace`` and the separator of ``array_to_string`` / ``concat_ws``.
The estimate is conservative (a function's result counts as large as all its
arguments together); real fragments are far inside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

MAX_GROWTH = 100
MAX_BUILT = 1_000_000
MAX_PAD = 10_000
# Results that are a number, a boolean or a timestamp, whatever their arguments.
_SMALL = 64
_SMALL_FUNCTIONS = frozenset({
    "length", "char_length", "character_length", "octet_length", "strpos", "position", "starts_with",
    "num_nulls", "num_nonnulls", "array_length", "cardinality", "array_position", "jsonb_typeof", "jsonb_array_length",
    "now", "statement_timestamp", "transaction_timestamp", "clock_timestamp", "gen_random_uuid", "random",
    "date_trunc", "date_part", "extract", "age", "make_date", "make_interval", "isfinite", "md5", "timezone",
    "regexp_like", "uid", "role",
})  # fmt: skip
# A number, but possibly a numeric one: up to 131,072 digits before the point and 16,383 after
# (power(10::numeric, 131071) is 131,072 characters of text).
_NUMERIC = 131_072 + 16_384
_NUMERIC_FUNCTIONS = frozenset({"abs", "round", "floor", "ceil", "ceiling", "trunc", "mod", "sign", "sqrt", "power"})
_ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^"})
# function -> index of the argument that multiplies the size of the rest (written as a constant)
_REPLACING = {"replace": 2, "regexp_replace": 2, "array_to_string": 1, "concat_ws": 0}


@dataclasses.dataclass(frozen=True)
class Size:
    """At most ``growth * S + built`` characters."""

    growth: int
    built: int

    def __add__(self, other: Size) -> Size:
        return Size(self.growth + other.growth, self.built + other.built)

    def times(self, factor: int) -> Size:
        return Size(self.growth * factor, self.built * factor)

    def widest(self, other: Size) -> Size:
        return Size(max(self.growth, other.growth), max(self.built, other.built))


READ = Size(1, 0)
SMALL = Size(0, _SMALL)
NUMERIC = Size(0, _NUMERIC)
Reject = Callable[[str, dict[str, Any], str], Exception]


def bound(value: Any, reject: Reject) -> Size:
    """The size of a checked fragment's value; raises ``reject(message, node, hint)`` where any part
    of it passes a bound (a comparison's result is small, but what it compares was built first)."""
    return _Sizer(reject).size(value)


class _Sizer:
    def __init__(self, reject: Reject) -> None:
        self.reject = reject

    def size(self, value: Any) -> Size:
        found = self._size(value)
        body: Any = next(iter(value.values()), {}) if isinstance(value, dict) else {}
        node = body if isinstance(body, dict) else {}
        if found.growth > MAX_GROWTH:
            raise self.reject(
                f"the expression can repeat what it reads {found.growth:,} times over (at most {MAX_GROWTH})",
                node,
                "concatenate or replace less",
            )
        if found.built > MAX_BUILT:
            raise self.reject(
                f"the expression can build a value of {found.built:,} characters (at most {MAX_BUILT:,})",
                node,
                "use shorter constants, or fewer nested replace()",
            )
        return found

    def _size(self, value: Any) -> Size:
        if isinstance(value, list):
            total = Size(0, 0)
            for item in value:
                total += self.size(item)
            return total
        if not isinstance(value, dict) or len(value) != 1:
            return Size(0, 0)
        ((kind, body),) = value.items()
        if not isinstance(body, dict):
            return Size(0, 0)
        handler = getattr(self, f"size_{kind}", None)
        if handler is not None:
            found: Size = handler(body)
            return found
        # Any other node (a boolean, a comparison, a sub-query): its children are still bounded.
        for child in body.values():
            if isinstance(child, dict | list):
                self.size(child)
        return SMALL

    def size_A_Const(self, body: dict[str, Any]) -> Size:  # noqa: N802
        text = body.get("sval", {}).get("sval")
        return Size(0, len(text)) if isinstance(text, str) else Size(0, 32)

    def size_ColumnRef(self, body: dict[str, Any]) -> Size:  # noqa: N802
        return READ

    def size_TypeCast(self, body: dict[str, Any]) -> Size:  # noqa: N802
        return self.size(body.get("arg")).widest(Size(0, 32))

    def size_A_Expr(self, body: dict[str, Any]) -> Size:  # noqa: N802
        left, right = self.size(body.get("lexpr")), self.size(body.get("rexpr"))
        names = [n.get("String", {}).get("sval") for n in body.get("name", [])]
        if names == ["||"]:
            return left + right
        if names in (["->"], ["->>"], ["#>"], ["#>>"]):
            return left  # a part of the left side
        if len(names) == 1 and names[0] in _ARITHMETIC:
            return NUMERIC
        return SMALL

    def size_CaseExpr(self, body: dict[str, Any]) -> Size:  # noqa: N802
        self.size(body.get("arg"))
        widest = self.size(body.get("defresult"))
        for when in body.get("args", []):
            case = when.get("CaseWhen", {})
            self.size(case.get("expr"))
            widest = widest.widest(self.size(case.get("result")))
        return widest

    def size_CoalesceExpr(self, body: dict[str, Any]) -> Size:  # noqa: N802
        widest = Size(0, 0)
        for arg in body.get("args", []):
            widest = widest.widest(self.size(arg))
        return widest

    size_MinMaxExpr = size_CoalesceExpr  # noqa: N815

    def size_A_ArrayExpr(self, body: dict[str, Any]) -> Size:  # noqa: N802
        return self.size(body.get("elements", []))

    def size_SubLink(self, body: dict[str, Any]) -> Size:  # noqa: N802
        self.size(body.get("testexpr"))
        self.size(body.get("subselect"))
        return SMALL

    def size_FuncCall(self, body: dict[str, Any]) -> Size:  # noqa: N802
        name = [n.get("String", {}).get("sval") for n in body.get("funcname", [])][-1]
        args: list[Any] = body.get("args", [])
        sizes = [self.size(arg) for arg in args]
        if name in ("jwt",):
            return READ
        if name in _SMALL_FUNCTIONS:
            return SMALL
        if name in _NUMERIC_FUNCTIONS:
            return NUMERIC
        if name in ("lpad", "rpad"):
            length = _integer(args[1]) if len(args) > 1 else None
            if length is None or length > MAX_PAD:
                raise self.reject(
                    f"the length of {name}() must be a number written out, at most {MAX_PAD:,}",
                    body,
                    f"e.g. `{name}(code, 8, '0')`",
                )
            return Size(0, max(length, 0))
        if name in _REPLACING:
            index = _REPLACING[name]
            if index >= len(args):
                return sum(sizes, Size(0, 0))
            text = _text(args[index])
            if text is None:
                what = "replacement" if name.endswith("replace") else "separator"
                raise self.reject(
                    f"the {what} of {name}() must be text written out", body, "e.g. `replace(name, ' ', '_')`"
                )
            rest = sum((s for i, s in enumerate(sizes) if i != index), Size(0, 0))
            return rest.times(len(text) + 1)
        if name == "to_char":
            return sizes[1].times(16) if len(sizes) > 1 else SMALL  # a pattern letter prints a few characters
        return sum(sizes, Size(0, 0))


def _integer(value: Any) -> int | None:
    const = value.get("A_Const") if isinstance(value, dict) else None
    if const is None:
        return None
    number = const.get("ival", {})
    return int(number.get("ival", 0)) if "ival" in const else None


def _text(value: Any) -> str | None:
    const = value.get("A_Const") if isinstance(value, dict) else None
    if const is None or "sval" not in const:
        return None
    text = const["sval"].get("sval", "")
    return text if isinstance(text, str) else None
