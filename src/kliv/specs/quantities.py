"""Kubernetes-style byte quantities (``5Mi``, ``1G``, ``1048576``)."""

from __future__ import annotations

import re

from kliv.specs.errors import SpecValueError

_SUFFIXES = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip
_QUANTITY = re.compile(r"^(?P<number>\d+)(?P<suffix>[kMGT]i?|Ki)?$")


def parse_bytes(value: str | int) -> int:
    """Bytes in a quantity; plain integers are bytes."""
    if isinstance(value, bool):
        raise SpecValueError("expected a size such as `5Mi`", "write a number of bytes or `5Mi`")
    if isinstance(value, int):
        if value < 1:
            raise SpecValueError("the size must be positive", "e.g. `5Mi`")
        return value
    match = _QUANTITY.fullmatch(value.strip())
    if match is None:
        raise SpecValueError(
            f"`{value[:40]}` is not a size",
            "write a whole number with an optional suffix: k, M, G, T, Ki, Mi, Gi, Ti (e.g. `5Mi`)",
        )
    size = int(match["number"]) * _SUFFIXES[match["suffix"] or ""]
    if size < 1:
        raise SpecValueError("the size must be positive", "e.g. `5Mi`")
    return size
