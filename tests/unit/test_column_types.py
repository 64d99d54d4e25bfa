"""Column types: the allow-list and canonical forms."""

from __future__ import annotations

import pytest

from kliv.specs.column_types import parse_column_type
from kliv.specs.errors import SpecValueError


class TestParseColumnType:
    """Types parse to a canonical form; anything else is refused with a hint."""

    @pytest.mark.parametrize(
        ("raw", "canonical"),
        [
            ("int", "integer"),
            ("INT8", "bigint"),
            ("text[]", "text[]"),
            ("numeric(12, 2)", "numeric(12,2)"),
            ("character varying(40)", "varchar(40)"),
            ("timestamp with time zone", "timestamptz"),
            ("timestamp(3) with time zone", "timestamptz(3)"),
            ("double precision", "double precision"),
            ("post_status", "post_status"),
            ("post_status[]", "post_status[]"),
        ],
    )
    def test_canonical(self, raw: str, canonical: str) -> None:
        """Aliases and spacing normalise."""
        assert str(parse_column_type(raw)) == canonical

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            ("text; drop table x", "not a valid column type"),
            ("serial", "`serial` is not supported"),
            ("select", "not a supported column type"),
            ("numeric(2000)", "precision must be 1-1000"),
            ("integer(3)", "takes no parameters"),
            ("text[][]", "2 array dimensions"),
            ("varchar(0)", "length must be"),
            ("timestamptz(9)", "precision must be 0-6"),
        ],
    )
    def test_refused(self, raw: str, message: str) -> None:
        """Refusals say what is wrong."""
        with pytest.raises(SpecValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_column_type(raw)

    def test_families(self) -> None:
        """Integer and text types form families for foreign keys."""
        assert parse_column_type("int4").family == parse_column_type("bigint").family == "integer"
        assert parse_column_type("varchar(3)").family == "text"
        assert parse_column_type("uuid").family == "uuid"
