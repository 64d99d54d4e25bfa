"""Postgres column types from an allow-list, parsed into a canonical form.

Table models call :func:`parse_column_type` on every ``columns[].type``; the
project resolver checks that non-built-in names are the project's enums; the
engine will compare :class:`ColumnType` values to classify widening and
narrowing changes.
"""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache

from kliv.specs.errors import SpecValueError
from kliv.specs.names import RESERVED_WORDS

# alias -> canonical name
_ALIASES = {
    "smallint": "smallint", "int2": "smallint",
    "integer": "integer", "int": "integer", "int4": "integer",
    "bigint": "bigint", "int8": "bigint",
    "real": "real", "float4": "real",
    "double precision": "double precision", "float8": "double precision", "float": "double precision",
    "numeric": "numeric", "decimal": "numeric",
    "text": "text",
    "varchar": "varchar", "character varying": "varchar",
    "char": "char", "character": "char",
    "boolean": "boolean", "bool": "boolean",
    "uuid": "uuid",
    "date": "date",
    "time": "time", "time without time zone": "time",
    "timetz": "timetz", "time with time zone": "timetz",
    "timestamp": "timestamp", "timestamp without time zone": "timestamp",
    "timestamptz": "timestamptz", "timestamp with time zone": "timestamptz",
    "interval": "interval",
    "json": "json", "jsonb": "jsonb",
    "bytea": "bytea",
    "inet": "inet", "cidr": "cidr", "macaddr": "macaddr",
    "tsvector": "tsvector",
}  # fmt: skip

BUILTIN_TYPES = frozenset(_ALIASES.values())

# Type names agents bring from Python, JavaScript/TypeScript, Prisma, MySQL, SQL Server and SQLite
# (lowercased) -> the Postgres answer, for the hint of an unknown type.
FOREIGN_TYPES = {
    **dict.fromkeys(("datetime", "datetime2", "datetimeoffset", "date_time", "instant", "zoneddatetime",
                     "smalldatetime", "localdatetime"), "timestamptz"),
    **dict.fromkeys(("string", "str", "nvarchar", "nchar", "ntext", "longtext", "mediumtext", "tinytext",
                     "clob", "citext", "email", "url", "uri", "char varying"), "text"),
    **dict.fromkeys(("long", "int64", "i64", "u64", "uint64", "bigint unsigned", "biginteger"), "bigint"),
    **dict.fromkeys(("int32", "i32", "u32", "uint32", "mediumint", "number_int", "unsigned", "uint"), "integer"),
    **dict.fromkeys(("short", "int16", "i16", "tinyint", "byte", "int1", "smallinteger"), "smallint"),
    **dict.fromkeys(("double", "float64", "f64", "number", "num"), "double precision (or numeric for exact "
                                                                       "values such as money)"),
    **dict.fromkeys(("float32", "f32", "single"), "real"),
    **dict.fromkeys(("money", "currency", "smallmoney"), "numeric(12,2)"),
    **dict.fromkeys(("boolean_t", "bit", "logical", "yesno"), "boolean"),
    **dict.fromkeys(("object", "dict", "map", "hash", "hstore", "record", "struct", "document", "jsonobject",
                     "json_object", "array", "list"), "jsonb (or an element type with `[]`, e.g. `text[]`)"),
    **dict.fromkeys(("blob", "longblob", "mediumblob", "tinyblob", "binary", "varbinary", "bytes", "buffer",
                     "bytearray", "image"), "bytea"),
    **dict.fromkeys(("guid", "uniqueidentifier", "uuid4", "uuidv4", "cuid", "objectid"), "uuid "
                    "(with `default: gen_random_uuid()`)"),
    **dict.fromkeys(("autoincrement", "auto_increment", "identity", "autoint"), "bigint with `identity: byDefault`"),
    **dict.fromkeys(("timedelta", "duration"), "interval"),
    **dict.fromkeys(("ip", "ipaddress", "ipv4", "ipv6"), "inet"),
    "enum": "the name of an enum declared in the Project's `spec.enums`",
    "year": "smallint (or date)",
}  # fmt: skip

# Which canonical types accept which parameters: (min count, max count).
_PARAMETERS = {
    "numeric": (0, 2),
    "varchar": (0, 1),
    "char": (0, 1),
    "time": (0, 1),
    "timetz": (0, 1),
    "timestamp": (0, 1),
    "timestamptz": (0, 1),
    "interval": (0, 1),
}

INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
TEXT_TYPES = frozenset({"text", "varchar", "char"})

_SHAPE = re.compile(
    r"^(?P<base>[a-z_][a-z0-9_]*(?: [a-z]+)*?)\s*"
    r"(?:\(\s*(?P<params>\d+(?:\s*,\s*\d+)?)\s*\))?"
    r"(?P<tz> with(?:out)? time zone)?"
    r"(?P<array>(?:\[\])*)$"
)
_HINT = (
    "use a built-in type (text, varchar(n), integer, bigint, numeric(p,s), boolean, uuid, "
    "timestamptz, date, jsonb, bytea, ...), a project enum, or an array of one (`text[]`)"
)


@dataclasses.dataclass(frozen=True)
class ColumnType:
    """A parsed column type: canonical base name, parameters, array depth."""

    base: str
    params: tuple[int, ...] = ()
    array_dims: int = 0

    @property
    def is_builtin(self) -> bool:
        return self.base in BUILTIN_TYPES

    @property
    def element(self) -> ColumnType:
        return dataclasses.replace(self, array_dims=0)

    @property
    def family(self) -> str:
        """Types within a family can reference each other with foreign keys."""
        if self.base in INTEGER_TYPES:
            return "integer"
        if self.base in TEXT_TYPES:
            return "text"
        return self.base

    def __str__(self) -> str:
        text = self.base
        if self.params:
            text += "(" + ",".join(str(p) for p in self.params) + ")"
        return text + "[]" * self.array_dims


@lru_cache(maxsize=4096)
def parse_column_type(raw: str) -> ColumnType:
    """Parse and canonicalise a column type; unknown names are assumed to be enums."""
    text = " ".join(raw.strip().lower().split())
    match = _SHAPE.fullmatch(text)
    if match is None:
        hint = _HINT
        if text.count("(") != text.count(")"):
            hint = 'inside `{...}` a comma ends the value: quote it, e.g. `type: "numeric(12,2)"`'
        raise SpecValueError(f"`{raw[:60]}` is not a valid column type", hint)
    base = match["base"] + (match["tz"] or "")
    # "timestamp(3) with time zone": the regex puts the zone after the params.
    params = tuple(int(p) for p in match["params"].split(",")) if match["params"] else ()
    dims = len(match["array"]) // 2
    if dims > 1:
        raise SpecValueError(f"`{raw}` has {dims} array dimensions", "use at most one `[]`")
    canonical = _ALIASES.get(base)
    if canonical is None:
        if " " in base or base in RESERVED_WORDS:
            raise SpecValueError(f"`{raw}` is not a supported column type", _HINT)
        if base in {"serial", "bigserial", "smallserial", "serial4", "serial8", "serial2"}:
            raise SpecValueError(
                f"`{base}` is not supported",
                "use an integer type with `identity: byDefault` (or `always`)",
            )
        if params:
            raise SpecValueError(f"enum type `{base}` takes no parameters", _HINT)
        return ColumnType(base, (), dims)
    low, high = _PARAMETERS.get(canonical, (0, 0))
    if not low <= len(params) <= high:
        if high == 0 and canonical == "text":
            raise SpecValueError("type `text` takes no length", f"write `varchar({params[0]})` for a limit, or `text`")
        if high == 0:
            raise SpecValueError(f"type `{canonical}` takes no parameters", f"write `{canonical}`")
        raise SpecValueError(f"type `{canonical}` takes at most {high} parameter(s)", _HINT)
    _check_params(canonical, params, raw)
    return ColumnType(canonical, params, dims)


def _check_params(base: str, params: tuple[int, ...], raw: str) -> None:
    if not params:
        return
    if base == "numeric":
        precision = params[0]
        scale = params[1] if len(params) > 1 else 0
        if not 1 <= precision <= 1000 or not 0 <= scale <= precision:
            raise SpecValueError(
                f"`{raw}`: numeric precision must be 1-1000 and scale 0-precision",
                "e.g. `numeric(12,2)` for money amounts",
            )
    elif base in {"varchar", "char"}:
        if not 1 <= params[0] <= 10_485_760:
            raise SpecValueError(f"`{raw}`: length must be 1-10485760", "e.g. `varchar(255)`")
    elif not 0 <= params[0] <= 6:
        raise SpecValueError(f"`{raw}`: fractional-second precision must be 0-6", "e.g. `timestamptz(3)`")
