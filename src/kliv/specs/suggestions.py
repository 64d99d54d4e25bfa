"""Near-miss suggestions ("did you mean `created_at`?") for every name lookup."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The candidate most similar to ``word``, if any is similar enough."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str], what: str = "") -> str:
    """A hint naming the closest candidate, or listing the valid ones."""
    pool = sorted(set(candidates))
    match = closest(word, pool)
    if match is not None:
        return f"did you mean `{match}`?"
    if not pool:
        return f"no {what or 'candidates'} are declared" if what else ""
    shown = ", ".join(f"`{c}`" for c in pool[:12])
    more = f" and {len(pool) - 12} more" if len(pool) > 12 else ""
    return f"known {what or 'values'}: {shown}{more}"
