"""Which checks of a Table or TablePolicy need not run again, in a long-lived process.

Called by :class:`kliv.specs.resolving._Project` for each Table and TablePolicy it checks.
The loader (:func:`kliv.specs.load`) keeps the models of unchanged files, so a process that
loads a 1,000-table folder again after one edit is handed 999 models it has checked before.
(The operator builds new models from the API server's objects at each reconcile: it gains
nothing here yet.) A spec's checks read
its own model, the project's enums and other tables by name (foreign keys, sub-queries):
when they found nothing wrong, what they looked up is remembered, and the next check of
the same model, with the same enums and every looked-up name giving the same model (or
still none), is skipped. A check that found a problem, asked whether a spec was broken,
or looked at every table (a "did you mean" over all names) is never remembered: its
messages name files and paths, and its inputs are not all known.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from kliv.specs.base import Resource
from kliv.specs.projects import Spec
from kliv.specs.table import Table

_SpecT = TypeVar("_SpecT", bound=Spec[Any])

# model id -> (model, enums, (name looked up, the model it gave))
_PASSED: dict[int, tuple[Resource, frozenset[str], tuple[tuple[str, Table | None], ...]]] = {}
_REMEMBERED = 50_000  # then forgotten at once, as the desired-state caches are


class Lookups(Mapping[str, Table]):
    """A project's tables by name, noting which names a check looked up."""

    def __init__(self, tables: dict[str, Table]) -> None:
        self._tables = tables
        self.seen: dict[str, Table | None] | None = None  # while a check runs
        self.everything = False  # the running check read all of them (or something unknown)

    def __getitem__(self, name: str) -> Table:  # also what get() and `in` call
        if self.seen is not None:
            self.seen[name] = self._tables.get(name)
        return self._tables[name]

    def __iter__(self) -> Iterator[str]:
        self.everything = True
        return iter(self._tables)

    def __len__(self) -> int:
        self.everything = True
        return len(self._tables)

    def unchanged(self, seen: tuple[tuple[str, Table | None], ...]) -> bool:
        """Whether every name gives the model it gave."""
        return all(self._tables.get(name) is model for name, model in seen)


def check_once(
    spec: _SpecT, tables: Lookups, enums: frozenset[str], problems: list[Any], check: Callable[[_SpecT], None]
) -> None:
    """Run ``check(spec)`` (which appends to ``problems``) unless it passed before with the same inputs."""
    model = spec.resource
    found = _PASSED.get(id(model))
    if found is not None and found[0] is model and found[1] == enums and tables.unchanged(found[2]):
        return
    before = len(problems)
    tables.seen, tables.everything = {}, False
    try:
        check(spec)
        seen = tables.seen
    finally:
        tables.seen = None
    if len(problems) == before and not tables.everything:
        if len(_PASSED) >= _REMEMBERED:
            _PASSED.clear()
        _PASSED[id(model)] = (model, enums, tuple(seen.items()))
    else:
        _PASSED.pop(id(model), None)
