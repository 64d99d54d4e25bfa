"""Problems found in specs, shaped for agents and people alike.

Every layer that inspects specs (YAML loading, model validation, project-level
resolution, guardrails) reports a :class:`Problem`; the CLI and the operator's
admission handler render them. A problem always carries a JSON pointer into its
document and, when the document came from a file, the line and column.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]  # info: worth knowing, nothing to fix
# Stable causes that callers branch on (the operator, admission, agents), never the message's wording.
DANGLING_REFERENCE = "dangling-reference"  # names an object of the project that does not exist (yet)


class SpecValueError(ValueError):
    """A field-level validation failure that knows how to fix itself.

    Raised from pydantic validators; the parser unwraps it so that the hint
    reaches the user next to the message instead of being flattened into it.
    """

    def __init__(self, message: str, hint: str = "", field: str | int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Raised by a model-level validator: the field (alias) the problem is about, so the
        # JSON pointer names it rather than the enclosing object.
        self.field = field


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a document came from: a file (or ``<stdin>``/``<cluster>``) and its index in it."""

    file: str
    document: int


@dataclasses.dataclass(frozen=True)
class Problem:
    """One finding: an error makes specs invalid, a warning does not."""

    message: str
    path: str = ""
    hint: str = ""
    file: str = ""
    document: int = 0
    line: int | None = None
    column: int | None = None
    kind: str = ""
    name: str = ""
    severity: Severity = "error"
    rule: str = ""
    code: str = ""  # a stable cause, e.g. DANGLING_REFERENCE ("" when no caller needs one)

    @property
    def location(self) -> str:
        """``file:line:column`` (or as much of it as is known)."""
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The design's JSON error shape, plus position, severity and rule id."""
        data: dict[str, Any] = {
            "file": self.file,
            "document": self.document,
            "line": self.line,
            "column": self.column,
            "kind": self.kind,
            "name": self.name,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
            "severity": self.severity,
        }
        if self.rule:
            data["rule"] = self.rule
        if self.code:
            data["code"] = self.code
        return data


def pointer(*parts: str | int) -> str:
    """Build a JSON pointer (RFC 6901) from path segments."""
    escaped = (str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return "".join("/" + p for p in escaped)
