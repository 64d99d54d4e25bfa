"""The differ's vocabulary: execution stages, the per-resource change builder, and which
column type changes keep every value (pure).

Used by :mod:`.diffing` and :mod:`.table_diffing`.
"""

from __future__ import annotations

from kliv.specs.column_types import INTEGER_TYPES, ColumnType, parse_column_type
from kliv.specs.errors import SpecValueError
from kliv.stacks.plans import RISK_ORDER, Action, Change, Phase, Risk, Step

BOOTSTRAP, ENUMS, RENAMES, DROP_POLICIES, DROP_CONSTRAINTS, CREATE_TABLES, COLUMNS = 0, 1, 2, 3, 4, 5, 6
CONSTRAINTS, FOREIGN_KEYS, INDEXES, SECURITY, FUNCTIONS, POLICIES, TRIGGERS, DROP_TABLES = 7, 8, 9, 10, 11, 12, 13, 14
# Triggers go with the policies (before the functions they run), functions with the constraints.
DROP_TRIGGERS, DROP_FUNCTIONS = DROP_POLICIES, DROP_CONSTRAINTS

_INTEGER_WIDTH = {"smallint": 2, "integer": 4, "bigint": 8}


def widening(old: str, new: str) -> bool:
    """Whether changing a column from type ``old`` to ``new`` keeps every value (format_type spellings)."""
    if old == new:
        return True
    try:
        before, after = _parse_formatted(old), _parse_formatted(new)
    except ValueError:
        return False
    if before.array_dims != after.array_dims:
        return False
    if before.base in INTEGER_TYPES and after.base in INTEGER_TYPES:
        return _INTEGER_WIDTH[after.base] >= _INTEGER_WIDTH[before.base]
    if before.base in INTEGER_TYPES and after.base == "numeric":
        return not after.params or after.params[0] - (after.params[1] if len(after.params) > 1 else 0) >= 19
    if before.base == after.base == "numeric":
        if not after.params:
            return True
        if not before.params:
            return False
        scale_before = before.params[1] if len(before.params) > 1 else 0
        scale_after = after.params[1] if len(after.params) > 1 else 0
        return after.params[0] - scale_after >= before.params[0] - scale_before and scale_after >= scale_before
    if before.base in ("varchar", "char", "text") and after.base in ("varchar", "text"):
        if after.base == "text" or not after.params:
            return True
        return bool(before.params) and before.base != "text" and after.params[0] >= before.params[0]
    return before.base == "real" and after.base == "double precision"


def _parse_formatted(text: str) -> ColumnType:
    spelled = (
        text.replace("character varying", "varchar")
        .replace("timestamp with time zone", "timestamptz")
        .replace("timestamp without time zone", "timestamp")
        .replace("time with time zone", "timetz")
        .replace("time without time zone", "time")
        .replace("character", "char")
    )
    try:
        return parse_column_type(spelled)
    except SpecValueError as exc:
        raise ValueError(str(exc)) from None


class _Resource:
    """Steps collected for one resource, with their risks and reasons."""

    def __init__(self, ref: str, action: Action) -> None:
        self.ref = ref
        self.action = action
        self.steps: list[Step] = []
        self.summary: list[str] = []
        self.risk: Risk = "safe"

    def add(self, why: str, sql: str, stage: int, risk: Risk = "safe", phase: Phase = "database") -> None:
        if not self.summary or self.summary[-1] != why:
            self.summary.append(why)
        transactional = phase in ("server", "database") and not sql.startswith("CREATE DATABASE")
        self.steps.append(Step(sql, phase=phase, transactional=transactional, stage=stage))
        if RISK_ORDER[risk] > RISK_ORDER[self.risk]:
            self.risk = risk

    def change(self) -> Change:
        action: Action = self.action if self.steps or self.action == "delete" else "noop"
        return Change(self.ref, action, self.risk, self.summary, self.steps)


_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000, "": 1}


def _milliseconds(setting: str | None) -> int | None:
    """A statement_timeout as Postgres keeps it (`30000ms`, `30s`, `30000`) in milliseconds."""
    if setting is None:
        return None
    number = setting.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = setting[len(number) :]
    if not number.isdigit() or unit not in _UNITS_MS:
        return None
    return int(number) * _UNITS_MS[unit]
