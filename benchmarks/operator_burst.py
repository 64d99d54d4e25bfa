"""Benchmark: a burst of 1,100 custom resources (100 projects x (1 Project + 5 Tables + 5 TablePolicies)).

The operator runs in-process against the e2e test cluster (kmock's emulated API,
tests/e2e/emulating.py) and a real Postgres. All objects are created at once;
measured: time until every object is Ready, create-to-Ready latency (p50/p99),
the ratio to a baseline measured in the same run (the same projects planned and
applied by the engine alone, one after another, as `kliv apply` would),
the process's peak RSS (emulator and operator together), and the CPU the process
uses while idle for a while after convergence (drift timers at their default 5 min
do not fire in that window).

    KLIV_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/operator_burst.py --projects 100 --idle 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import kopf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
warnings.filterwarnings("ignore", category=DeprecationWarning)
from emulating import emulator_running, operator_in_thread  # noqa: E402

from kliv.operator.handlers import make_registry  # noqa: E402
from kliv.specs import GROUP, KINDS, VERSION, Document, Source, validate_documents  # noqa: E402
from kliv.stacks import PostgresEngine  # noqa: E402

NAMESPACE = "burst"
PLURALS = {model.KIND: model.PLURAL for model in KINDS.values()}
API = f"{GROUP}/{VERSION}"


def _project(index: int, run: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    name = f"p{index:03d}"
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": API,
            "kind": "Project",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"database": {"name": f"burst_{run}_{index:03d}"}},
        }
    ]
    for t in range(5):
        table = f"{name}-t{t}"
        documents.append(
            {
                "apiVersion": API,
                "kind": "Table",
                "metadata": {"name": table, "namespace": namespace},
                "spec": {
                    "projectRef": {"name": name},
                    "columns": [
                        {"name": "id", "type": "uuid", "primaryKey": True, "default": "gen_random_uuid()"},
                        {"name": "owner_id", "type": "uuid", "nullable": False, "default": "auth.uid()"},
                        {"name": "title", "type": "text", "check": "length(title) > 0"},
                    ],
                },
            }
        )
        documents.append(
            {
                "apiVersion": API,
                "kind": "TablePolicy",
                "metadata": {"name": f"{table}-own", "namespace": namespace},
                "spec": {
                    "projectRef": {"name": name},
                    "table": table.replace("-", "_"),
                    "command": "all",
                    "roles": ["authenticated"],
                    "using": "owner_id = auth.uid()",
                },
            }
        )
    return documents


def _baseline(engine: PostgresEngine, projects: int, run: str) -> float:
    """The same projects planned and applied by the engine alone, one after another (as `kliv apply`)."""
    started = time.monotonic()
    for index in range(projects):
        documents = [Document(Source("<bench>", i), d) for i, d in enumerate(_project(index, run, "burst-baseline"))]
        validation = validate_documents(documents)
        assert validation.valid, [p.message for p in validation.errors]
        [group] = validation.specs.projects.values()
        engine.apply(engine.plan(group), actor="benchmark")
    return time.monotonic() - started


async def _burst(url: str, projects: int, idle: float) -> dict[str, float]:
    run = str(os.getpid())
    engine = PostgresEngine(url)
    documents = [d for i in range(projects) for d in _project(i, run)]
    try:
        baseline = await asyncio.to_thread(_baseline, engine, projects, f"{run}b")
        async with emulator_running() as emulator:
            api = str(emulator.url).rstrip("/")
            registry, _ = make_registry(engine, quiet=0.3)

            @kopf.on.login(registry=registry)
            def login(**_: Any) -> kopf.ConnectionInfo:
                return kopf.ConnectionInfo(server=api, default_namespace=NAMESPACE)

            connector = aiohttp.TCPConnector(force_close=True, limit=50)
            async with aiohttp.ClientSession(base_url=api, connector=connector) as http, operator_in_thread(registry):
                created: dict[tuple[str, str], float] = {}

                async def create(document: dict[str, Any]) -> None:
                    path = f"/apis/{API}/namespaces/{NAMESPACE}/{PLURALS[document['kind']]}"
                    async with http.post(path, json=document) as response:
                        assert response.status == 200, await response.text()
                    created[(document["kind"], document["metadata"]["name"])] = time.monotonic()

                started = time.monotonic()
                await asyncio.gather(*(create(d) for d in documents))
                ready: dict[tuple[str, str], float] = {}
                while len(ready) < len(documents) and time.monotonic() - started < 600:
                    for kind, plural in PLURALS.items():
                        async with http.get(f"/apis/{API}/namespaces/{NAMESPACE}/{plural}") as response:
                            items = (await response.json()).get("items", [])
                        now = time.monotonic()
                        for item in items:
                            key = (kind, item["metadata"]["name"])
                            conditions = item.get("status", {}).get("conditions", [])
                            if key not in ready and any(
                                c["type"] == "Ready" and c["status"] == "True" for c in conditions
                            ):
                                ready[key] = now
                    await asyncio.sleep(0.5)
                converged = time.monotonic() - started
                latencies = sorted(ready[k] - created[k] for k in ready)
                cpu_before, wall_before = time.process_time(), time.monotonic()
                await asyncio.sleep(idle)
                idle_cpu = (time.process_time() - cpu_before) / (time.monotonic() - wall_before)
    finally:
        for index in range(projects):
            engine.drop_project(f"burst_{run}_{index:03d}")
            engine.drop_project(f"burst_{run}b_{index:03d}")
        engine.close()
    return {
        "objects": len(documents),
        "ready": len(ready),
        "all ready (s)": converged,
        "engine alone, sequential (s)": baseline,
        "operator / engine alone": converged / baseline,
        "p50 create-to-Ready (s)": statistics.median(latencies) if latencies else float("nan"),
        "p99 create-to-Ready (s)": latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan"),
        "peak RSS (MiB)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "idle CPU (% of one core)": idle_cpu * 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    url = os.environ.get("KLIV_DATABASE_URL")
    if not url:
        sys.exit("set KLIV_DATABASE_URL")
    results = asyncio.run(_burst(url, args.projects, args.idle))
    print("| measure | value |")
    print("|---|---:|")
    for name, value in results.items():
        print(f"| {name} | {value:.2f} |" if isinstance(value, float) else f"| {name} | {value} |")


if __name__ == "__main__":
    main()
