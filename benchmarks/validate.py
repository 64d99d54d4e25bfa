"""Benchmark: `kliv validate` on a generated project of 1,000 tables and 2,000 policies.

Whole-process wall time (what a CI job or an agent waits for), median of N runs,
next to two baselines measured in the same run on the same files:
- `python -c pass`: interpreter start-up, the floor of any Python CLI;
- YAML only: a Python process that only reads the same files with PyYAML's
  C loader, i.e. what any tool reading these specs must at least pay.

    python benchmarks/validate.py [--tables 1000] [--runs 5]

With ``--triggers 0.1``, 10% of the tables also get a trigger and a 20-line plpgsql function
(DatabaseFunction bodies are parsed and checked like fragments): both projects are validated,
alternating, and the time per document of each is compared (goal: at most 1.3x).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from generate import write_project

YAML_ONLY = (
    "import sys, pathlib, yaml\n"
    "for p in sorted(pathlib.Path(sys.argv[1]).glob('*.yaml')):\n"
    "    list(yaml.load_all(p.read_text(), Loader=yaml.CSafeLoader))\n"
)


def _median_seconds(command: list[str], runs: int, expect: int = 0) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != expect:
            sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout.decode()}{done.stderr.decode()}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--triggers", type=float, default=0.0)
    args = parser.parse_args()
    if args.triggers:
        _with_triggers(args.tables, args.runs, args.triggers)
        return
    kliv = str(Path(sys.executable).with_name("kliv"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_project(Path(tmp) / "project", args.tables)
        documents = 1 + 3 * args.tables
        startup = _median_seconds([sys.executable, "-c", "pass"], args.runs)
        yaml_only = _median_seconds([sys.executable, "-c", YAML_ONLY, str(folder)], args.runs)
        validate = _median_seconds([kliv, "validate", str(folder)], args.runs)
    print("| tables | policies | documents | python start-up | YAML only | kliv validate | vs YAML only |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.tables} | {2 * args.tables} | {documents} | {startup:.3f} s | {yaml_only:.3f} s "
        f"| {validate:.3f} s | {validate / yaml_only:.2f}x |"
    )


def _with_triggers(tables: int, runs: int, share: float) -> None:
    kliv = str(Path(sys.executable).with_name("kliv"))
    with tempfile.TemporaryDirectory() as tmp:
        plain = write_project(Path(tmp) / "plain", tables)
        triggered = write_project(Path(tmp) / "triggered", tables, triggers=share)
        counts = {}
        for folder in (plain, triggered):
            counts[folder] = sum(
                len([d for d in p.read_text().split("\n---") if d.strip()]) for p in folder.glob("*.yaml")
            )
        times: dict[Path, list[float]] = {plain: [], triggered: []}
        for run in range(runs):  # alternating, so that the machine's load falls on both alike
            for folder in (plain, triggered) if run % 2 == 0 else (triggered, plain):
                times[folder].append(_median_seconds([kliv, "validate", str(folder)], 1))
    per = {folder: statistics.median(found) / counts[folder] for folder, found in times.items()}
    print("| tables | with a trigger | documents | kliv validate | per document | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for folder, label in ((plain, "0"), (triggered, f"{round(tables * share)}")):
        print(f"| {tables} | {label} | {counts[folder]} | {statistics.median(times[folder]):.3f} s "
              f"| {per[folder] * 1000:.3f} ms | {per[folder] / per[plain]:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
