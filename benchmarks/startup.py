"""Start-up of a no-change `kliv plan examples/blog` process against a bare psycopg process.

    KLIV_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python benchmarks/startup.py --runs 15

The baseline is the least any Python tool talking to Postgres pays: `python -c 'import psycopg;
psycopg.connect(URL).execute("select 1")'`. Both run as whole processes, alternating, in the same
run; the blog is applied first so the plan has no changes. Goal (issue 11): at most 2.5x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _time(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the src/ folder whose kliv to run")
    args = parser.parse_args()
    url = os.environ.get("KLIV_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    with tempfile.TemporaryDirectory() as buckets:
        env = {**os.environ, "KLIV_DATABASE_URL": url, "KLIV_CONFIG": "/nonexistent", "KLIV_BUCKETS_DIR": buckets,
               "KLIV_SECRET_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}  # fmt: skip
        env.pop("KLIV_AMQP_URL", None)
        subprocess.run(
            [str(BIN / "kliv"), "apply", "examples/blog"], env=env, check=True, capture_output=True, cwd=ROOT
        )
        # What the `kliv` console script does, with the kliv of --src first on the path.
        run = (
            f"import sys; sys.path.insert(0, {str(args.src.resolve())!r}); sys.argv = ['kliv', 'plan', 'examples/blog']"
        )
        plan = [sys.executable, "-c", run + "; from kliv.cli import main; main()"]
        bare = [sys.executable, "-c", f"import psycopg; psycopg.connect({url!r}).execute('select 1')"]
        kliv, baseline = [], []
        for _ in range(args.runs):  # alternating: both see the same machine load
            kliv.append(_time(plan, env))
            baseline.append(_time(bare, env))
    k, b = statistics.median(kliv), statistics.median(baseline)
    print(f"| {time.strftime('%Y-%m-%d')} | {b:.3f} s | {k:.3f} s | {k / b:.2f}x |")


if __name__ == "__main__":
    main()
