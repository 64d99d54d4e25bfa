"""From a YAML document to a typed resource, with pydantic's errors made precise.

Called by :mod:`kliv.specs.loading` for each document. Validation errors are
translated into :class:`~kliv.specs.errors.Problem` values with a JSON pointer
in the document's own (camelCase) field names, its line and column, a message
that says what is wrong with the field and a hint that says how to fix it.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from kliv.specs.base import API_VERSION, Resource
from kliv.specs.documents import Document
from kliv.specs.errors import Problem, SpecValueError, pointer
from kliv.specs.expressions import ExpressionError
from kliv.specs.kinds import KINDS
from kliv.specs.suggestions import did_you_mean

MAX_PROBLEMS_PER_DOCUMENT = 100
# An unknown "field" like `2)` is the tail of a value that a flow-mapping comma cut off.
_FLOW_SPLIT = re.compile(r"[()\[\]'\"]|^\d+$")

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "float_type": "a number",
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def problem_for(document: Document, path: str, message: str, hint: str = "", **extra: Any) -> Problem:
    """A problem located in ``document`` at ``path``."""
    line, column = document.position(path)
    data = document.data if isinstance(document.data, dict) else {}
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    kind = data.get("kind")
    return Problem(
        message=message,
        path=path,
        hint=hint,
        file=document.source.file,
        document=document.source.document,
        line=line,
        column=column,
        kind=kind if isinstance(kind, str) else "",
        name=name if isinstance(name, str) else "",
        **extra,
    )


def parse_document(document: Document) -> tuple[Resource | None, list[Problem]]:
    """Validate one document against its kind's model."""
    data = document.data
    if not isinstance(data, dict):
        return None, [
            problem_for(document, "", f"a spec must be a mapping, not {_describe(data)}", "start with `apiVersion:`")
        ]
    nul = _nul_path(data, ())
    if nul is not None:
        # Postgres text cannot hold NUL: such a value would pass validation and fail half-way through apply.
        return None, [problem_for(document, pointer(*nul), "the value contains a NUL character (`\\0`)",
                                  "remove it: no kliv field can store it")]  # fmt: skip
    problems: list[Problem] = []
    api_version = data.get("apiVersion")
    if api_version != API_VERSION:
        message = "`apiVersion` is missing" if api_version is None else f"unsupported apiVersion `{api_version}`"
        problems.append(problem_for(document, "/apiVersion", message, f"write `apiVersion: {API_VERSION}`"))
    kind = data.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        message = "`kind` is missing" if kind is None else f"unknown kind `{kind}`"
        hint = did_you_mean(str(kind), KINDS, "kinds") if isinstance(kind, str) else f"one of {', '.join(KINDS)}"
        problems.append(problem_for(document, "/kind", message, hint))
        return None, problems
    try:
        resource = model.model_validate(data)
    except ValidationError as exc:
        seen: set[tuple[str, str]] = set()
        errors = exc.errors(include_url=False)
        hidden, without_unknown = _hidden_by_unknown_fields(model, data, errors)
        errors += hidden
        for index, error in enumerate(errors):
            if len(problems) >= MAX_PROBLEMS_PER_DOCUMENT:
                # Locating a problem walks its mapping: reporting 200,000 unknown keys one by one
                # would take minutes (and say nothing the first ones do not).
                problems.append(problem_for(document, "", f"... and {len(errors) - index:,} more problems in this "
                                            "document", "fix the ones above first"))  # fmt: skip
                break
            problem = _translate(document, model, error)
            if (problem.path, problem.message) not in seen and not (problems and problem.path == "/apiVersion"):
                seen.add((problem.path, problem.message))
                problems.append(problem)
        # Valid but for its unknown fields: resolved with the others (column types, references),
        # so those problems come back in the same run; the unknown fields keep it invalid.
        return without_unknown, problems
    return (resource, problems) if not problems else (None, problems)


def _hidden_by_unknown_fields(
    model: type[Resource], data: dict[str, Any], errors: list[ErrorDetails]
) -> tuple[list[Any], Resource | None]:
    """The errors an unknown field hid: pydantic skips a model's own checks (a column's type, a
    policy's expression) once any field of it failed, so an agent would need a second try to
    see them. Validated again without the unknown keys, the rest of the document speaks too."""
    unknown = [e["loc"] for e in errors if e["type"] == "extra_forbidden"]
    if not unknown or len(unknown) > MAX_PROBLEMS_PER_DOCUMENT:
        return [], None
    stripped = copy.deepcopy(data)
    for loc in unknown:
        parent: Any = stripped
        for part in loc[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if isinstance(parent, dict):
            parent.pop(loc[-1], None)
    try:
        resource = model.model_validate(stripped)
    except ValidationError as again:
        known = {(tuple(e["loc"]), e["type"]) for e in errors}
        return [e for e in again.errors(include_url=False) if (tuple(e["loc"]), e["type"]) not in known], None
    return [], resource


def _nul_path(value: Any, path: tuple[str, ...]) -> tuple[str, ...] | None:
    """Where the first NUL character is, in a key or a string (YAML's `\\0`, JSON's `\\u0000`)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                return path
            found = _nul_path(item, (*path, str(key)))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, (*path, str(index)))
            if found is not None:
                return found
    return None


def _translate(document: Document, model: type[BaseModel], error: ErrorDetails) -> Problem:
    loc = [part for part in error["loc"] if part != "[key]"]
    kind = error["type"]
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    field = str(loc[-1]) if loc else ""
    if loc and isinstance(loc[-1], int) and len(loc) > 1:
        field = f"{loc[-2]}[{loc[-1]}]"  # an item of a list: never just its index
    message = error["msg"]
    hint = ""
    if isinstance(cause, SpecValueError):
        message, hint = cause.message, cause.hint
        if cause.field is not None:
            loc = [*loc, *str(cause.field).split("/")]
        if isinstance(cause, ExpressionError) and cause.offset is not None:
            message += f" (at character {cause.offset + 1})"
    elif kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        message = f"unknown field `{field}`"
        hint = did_you_mean(field, allowed, "fields") if allowed else "remove it"
        synonym = _FIELD_SYNONYMS.get(field.lower().replace("_", ""))
        if synonym is not None and (not allowed or synonym[0] in allowed):
            hint = synonym[1]
        if _FLOW_SPLIT.search(field):
            hint = 'inside `{...}` a comma ends the value: quote values with commas, e.g. `type: "numeric(12,2)"`'
    elif kind == "missing":
        message = f"required field `{field}` is missing"
        hint = f"add `{field}:`"
    elif kind in _TYPE_NAMES:
        got = error.get("input")
        message = f"`{field}` must be {_TYPE_NAMES[kind]}, not {_describe(got)}"
        if isinstance(got, bool) and kind == "string_type":
            hint = "YAML reads yes/no/on/off/true/false as booleans: quote the value"
        elif kind == "string_type" and not isinstance(got, dict | list):
            hint = "quote the value"
    elif kind in ("string_too_long", "too_long"):
        limit = ctx.get("max_length")
        unit = "characters" if kind == "string_too_long" else "entries"
        message = f"`{field}` is longer than {limit} {unit}"
        hint = "shorten it"
    elif kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        options = [part.strip(" '") for part in expected.replace(" or ", ",").split(",") if part.strip(" '")]
        got = error.get("input")
        message = f"`{field}` must be one of {', '.join(options)}"
        if isinstance(got, str | int | float) and not isinstance(got, bool):
            message = f"`{field}` is `{str(got)[:60]}`: it must be one of {', '.join(options)}"
        hint = did_you_mean(str(got), options, "values") if isinstance(got, str) else ""
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    path = pointer(*loc)
    return problem_for(document, path, message, hint)


# Fields other tools (ORMs, JSON Schema, SQL) use, by their lowercased name without `_`: the
# field kliv has for it (only offered where that field exists) and how to write it.
_FIELD_SYNONYMS = {
    "required": ("nullable", "write `nullable: false` (a column is nullable unless it says so)"),
    "notnull": ("nullable", "write `nullable: false`"),
    "nonnull": ("nullable", "write `nullable: false`"),
    "allownull": ("nullable", "write `nullable: true` or `nullable: false`"),
    "optional": ("nullable", "write `nullable: true` (the default)"),
    "autoincrement": ("identity", "write `identity: byDefault` (or `always`) on an integer column"),
    "serial": ("identity", "write `identity: byDefault` on a `bigint` column"),
    "defaultvalue": ("default", "write `default:` with an SQL expression, e.g. `default: \"'draft'\"`"),
    "foreignkey": ("references", "write `references: {table: <table>}` (optionally `column:`)"),
    "fk": ("references", "write `references: {table: <table>}`"),
    "ref": ("references", "write `references: {table: <table>}`"),
    "pk": ("primaryKey", "write `primaryKey: true`"),
    "comment": ("description", "write `description:`"),
    "check": ("withCheck", "a policy's check on new rows is `withCheck:` (`using:` filters existing rows)"),
}


def _fields_at(model: type[BaseModel], loc: list[int | str]) -> list[str]:
    """Aliases of the model found by following ``loc`` from ``model``."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for name, f in current.model_fields.items() if (f.alias or name) == part), None)
            current = field.annotation if field else None
        else:
            args = typing.get_args(current)
            current = args[-1] if args else None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Optional and Annotated layers."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation
