"""Hit rate of the near-miss corpus (tests/corpus/near_misses.py): how often the first answer an agent
gets names the fix (the problem at the right JSON pointer, its hint holding the expected word).

    .venv/bin/python benchmarks/near_misses.py               # this checkout
    .venv/bin/python benchmarks/near_misses.py --src OTHER/src   # another checkout's kliv, same corpus
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the src/ folder whose kliv to measure")
    parser.add_argument("--misses", action="store_true", help="list the cases that miss")
    args = parser.parse_args()
    sys.path[:0] = [str(args.src.resolve()), str(ROOT / "tests" / "corpus")]
    from kliv import policies
    from kliv.specs import parse_text, validate_documents
    from near_misses import BASELINE, CASES

    missed = []
    for case in CASES:
        documents, problems = parse_text(BASELINE + "---\n" + case.documents, "near-miss.yaml")
        validation = validate_documents(documents)
        found = [*problems, *validation.problems, *policies.evaluate(validation.specs)]
        if not any(p.path == case.path and case.word in f"{p.message} {p.hint}" for p in found):
            missed.append(case.name)
    hits = len(CASES) - len(missed)
    print(f"{hits}/{len(CASES)} near misses hit ({100 * hits / len(CASES):.0f}%)")
    if args.misses:
        for name in missed:
            print(f"  miss: {name}")


if __name__ == "__main__":
    main()
