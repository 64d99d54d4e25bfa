"""Every near-miss of the corpus (tests/corpus/near_misses.py) gets a hint an agent can act on:
the problem at the case's pointer, its hint (or message) naming the Postgres answer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
from kliv import policies
from kliv.specs import Problem, parse_text, validate_documents
from near_misses import BASELINE, CASES, NearMiss


def problems_of(case: NearMiss) -> list[Problem]:
    documents, problems = parse_text(BASELINE + "---\n" + case.documents, "near-miss.yaml")
    validation = validate_documents(documents)
    return [*problems, *validation.problems, *policies.evaluate(validation.specs)]


def hit(case: NearMiss) -> bool:
    return any(p.path == case.path and case.word in f"{p.message} {p.hint}" for p in problems_of(case))


class TestNearMisses:
    def test_corpus_size(self) -> None:
        assert len(CASES) >= 60
        assert len({c.name for c in CASES}) == len(CASES)

    def test_baseline_is_valid(self) -> None:
        documents, problems = parse_text(BASELINE, "baseline.yaml")
        assert not problems
        assert validate_documents(documents).valid

    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_hint_names_the_fix(self, case: NearMiss) -> None:
        found = problems_of(case)
        assert hit(case), [(p.path, p.message, p.hint) for p in found]
