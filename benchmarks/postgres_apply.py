"""Benchmark: the native engine on a generated project of N tables, against psql as the baseline.

Each table has 8 columns, 2 indexes (one partial unique), RLS, 2 policies and the
audit trigger (benchmarks/generate.py). Measured in one run on one server:

- cold apply: `kliv apply` work in-process (validate, plan, apply, record) on an empty
  server, versus the baseline: psql running exactly the SQL the plan emitted (server
  statements one by one, then the database statements with --single-transaction)
  for a second copy of the project;
- no-change re-apply: in-process (load + validate + introspect + diff) and as a whole
  `kliv apply` process;
- adding one column to one table: in-process, plan + apply.

    KLIV_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python benchmarks/postgres_apply.py --tables 100 --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from generate import write_project
from kliv.specs import load
from kliv.stacks import PostgresEngine


def _median(action: Callable[[], Any], runs: int, setup: Callable[[], Any] | None = None) -> float:
    times = []
    for _ in range(runs):
        if setup is not None:
            setup()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _rewrite(folder: Path, database: str) -> None:
    project = folder / "project.yaml"
    document = yaml.safe_load(project.read_text())
    document["spec"]["database"] = {"name": database}
    project.write_text(yaml.safe_dump(document, sort_keys=False))


def _group(folder: Path) -> Any:
    validation = load([folder])
    assert validation.valid, validation.errors[:3]
    [group] = [g for g in validation.specs.projects.values() if g.project]
    return group


def _psql(url: str, *args: str) -> None:
    subprocess.run(["psql", url, "-q", "-v", "ON_ERROR_STOP=1", *args], check=True, capture_output=True)


def measure(url: str, tables: int, runs: int) -> dict[str, float]:
    engine = PostgresEngine(url)
    suffix = f"{os.getpid()}_{tables}"
    kliv_db, psql_db = f"bench_kliv_{suffix}", f"bench_psql_{suffix}"
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # One file per table and its policies, as a GitOps repository would hold them.
        folder = write_project(Path(tmp) / "specs", tables, per_file=1)
        _rewrite(folder, kliv_db)
        for database in (kliv_db, psql_db):
            engine.drop_project(database)
        try:
            started = time.perf_counter()
            # --split: at 1,000 tables one transaction would not fit a default lock table (PG 15:
            # 64 x 100 slots), which a plan refuses; a smaller project still applies in one.
            prepared = engine.plan(_group(folder), split=True)
            engine.apply(prepared)
            results["cold apply (kliv, in-process)"] = time.perf_counter() - started

            # The baseline runs the same statements for a copy named differently.
            steps = prepared.plan.steps
            server = [s.sql.replace(kliv_db, psql_db) for s in steps if s.phase == "server"]
            database = [s.sql.replace(kliv_db, psql_db) for s in steps if s.phase == "database"]
            script = Path(tmp) / "ddl.sql"
            script.write_text(";\n".join(database) + ";\n")
            from psycopg.conninfo import make_conninfo

            started = time.perf_counter()
            for statement in server:
                _psql(url, "-c", statement)
            _psql(make_conninfo(url, dbname=psql_db), "--single-transaction", "-f", str(script))
            results["cold apply (psql baseline)"] = time.perf_counter() - started

            def no_change() -> None:
                again = engine.plan(_group(folder))
                assert again.plan.empty, [c.summary for c in again.plan.changes if c.action != "noop"][:3]
                engine.apply(again)

            results["no-change re-apply (in-process)"] = _median(no_change, runs)
            kliv = str(Path(sys.executable).with_name("kliv"))
            env = {**os.environ, "KLIV_DATABASE_URL": url}
            results["no-change re-apply (kliv apply process)"] = _median(
                lambda: subprocess.run([kliv, "apply", str(folder)], check=True, capture_output=True, env=env), runs
            )

            target = folder / "tables-00000.yaml"
            documents = list(yaml.load_all(target.read_text(), Loader=yaml.CSafeLoader))
            counter = iter(range(1000))

            def edit_spec() -> None:  # untimed: the agent or engineer writing the spec
                documents[0]["spec"]["columns"].append({"name": f"extra_{next(counter)}", "type": "text"})
                target.write_text(yaml.dump_all(documents, Dumper=yaml.CSafeDumper, sort_keys=False))

            def add_column() -> None:
                prepared = engine.plan(_group(folder))
                assert prepared.plan.summary()["update"] == 1
                engine.apply(prepared)

            results["add one column (in-process)"] = _median(add_column, runs, setup=edit_spec)
            edit_spec()
            before = _control_writes(url, engine)
            add_column()
            results["control-database rows written for it"] = _control_writes(url, engine) - before
        finally:
            for name in (kliv_db, psql_db):
                engine.drop_project(name)
            engine.close()
    return results


def _control_writes(url: str, engine: PostgresEngine) -> float:
    """Rows inserted, updated and deleted in the control database so far (its tables' statistics,
    which the engine's session reports at once when asked: PG 15's pg_stat_force_next_flush)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    engine.control_session().execute("SELECT pg_stat_force_next_flush()")
    time.sleep(0.2)
    with psycopg.connect(make_conninfo(url, dbname="kliv"), autocommit=True) as control:
        row = control.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
            "WHERE schemaname IN ('inventory', 'secrets')"
        ).fetchone()
    return float(row[0]) if row else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, nargs="+", default=[100])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.get("KLIV_DATABASE_URL")
    if not url:
        sys.exit("set KLIV_DATABASE_URL to a Postgres server you may create databases and roles on")
    print("| tables | measure | seconds |")
    print("|---:|---|---:|")
    for tables in args.tables:
        results = measure(url, tables, args.runs)
        for name, seconds in results.items():
            print(f"| {tables} | {name} | {seconds:.3f} |")
        ratio = results["cold apply (kliv, in-process)"] / results["cold apply (psql baseline)"]
        print(f"| {tables} | cold apply ratio kliv / psql | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
