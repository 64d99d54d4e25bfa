"""Benchmark: functions through a real `kliv serve` process against Deno driven directly.

Measured in one run, baselines alternating with the measured side:

- cold start: the first request to a function through the gateway (Deno started on demand,
  waited for, then asked) versus starting the same module with the same `deno run` flags
  and bootstrap by hand and making one request over its unix socket: p50 and p95;
- warm: requests through the gateway versus straight to the running Deno process's socket
  (same HTTP client, same concurrency): throughput, and sequential latency p50 (the
  difference is the gateway's added latency);
- deploy and rollback: time from `engine.apply` of a new source (and from a rollback) to
  the gateway answering with the new version, while 8 clients send requests; every
  failed request counted (at least 2,000 requests span the deploy and the rollback);
- idle memory: PSS of `kliv serve` and its Deno children with 100 deployed functions of
  which 10 were called in the last minute, and with none called.

    KLIV_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/functions.py --cold 20 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from keyrings import TEST_KEY
from kliv.serving import sandbox
from kliv.specs import load
from kliv.stacks import PostgresEngine
from kliv.stacks.functions import artifacts
from kliv.stacks.postgres import sessions
from kliv.stacks.providers import ProviderOptions
from kliv.stacks.secrets import jwts
from kliv.stacks.secrets.keys import Keyring

KEY = os.environ.get("KLIV_SECRET_KEY", TEST_KEY)
CODE = 'export default {{ fetch(req: Request): Response {{ return new Response("{text}"); }} }};\n'


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    def __init__(self, url: str, functions: int) -> None:
        self.url = url
        self.namespace = f"bench-{uuid.uuid4().hex[:8]}"
        self.database = f"b_{uuid.uuid4().hex[:10]}"
        self.folder = Path(tempfile.mkdtemp(prefix="kliv-bench-fn-"))
        options = ProviderOptions(buckets_dir=self.folder / "b", secret_values=lambda _: None, secret_key=KEY)
        self.engine = PostgresEngine(url, options=options)
        self.write({f"f{i}": "one" for i in range(functions)})
        self.apply()
        with psycopg.connect(sessions.conninfo(url, "kliv"), autocommit=True) as control:
            secret = jwts.ensure(control, Keyring(KEY), self.namespace, "bench")
        self.token = jwts.key(secret, self.namespace, "bench", "anon")
        self.port = _free_port()
        environment = {**os.environ, "KLIV_DATABASE_URL": url, "KLIV_SECRET_KEY": KEY, "KLIV_CONFIG": "/nonexistent"}
        self.serve = subprocess.Popen(
            [sys.executable, "-m", "kliv", "serve", "--port", str(self.port), "--idle-seconds", "3600"],
            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).json()["functions"] >= functions:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("kliv serve did not start")
            time.sleep(0.1)

    def write(self, texts: dict[str, str]) -> None:
        documents = [{"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Project",
                      "metadata": {"name": "bench", "namespace": self.namespace},
                      "spec": {"database": {"name": self.database}}}]  # fmt: skip
        for name, text in texts.items():
            spec = {"projectRef": {"name": "bench"}, "source": {"inline": CODE.format(text=text)}}
            documents.append({"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Function",
                              "metadata": {"name": name, "namespace": self.namespace}, "spec": spec})  # fmt: skip
        (self.folder / "specs.yaml").write_text("\n---\n".join(json.dumps(d) for d in documents))
        self.texts = texts

    def apply(self) -> None:
        validation = load([self.folder / "specs.yaml"])
        [group] = [g for g in validation.specs.projects.values() if g.project]
        prepared = self.engine.plan(group)
        assert not prepared.problems, prepared.problems
        self.engine.apply(prepared)

    def function_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/p/{self.namespace}/bench/functions/v1/{name}"

    def close(self) -> None:
        self.serve.terminate()
        self.serve.wait(10)
        self.engine.drop_project(self.database)
        self.engine.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Direct:
    """The same module, bootstrap and flags as kliv serve uses, started by hand."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = Path(tempfile.mkdtemp(dir=root))
        sandbox.prepare(self.folder, CODE.format(text="one"))
        launch = sandbox.launch(self.folder, root / ".deno", {}, {}, "bench/direct", 128)
        self.process = subprocess.Popen(launch.command, cwd=self.folder, env=launch.environment,
                                        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)  # fmt: skip
        assert self.process.stderr is not None
        while self.process.stderr.readline().decode().rstrip("\n") != sandbox.READY:
            pass
        self.socket = str(launch.socket)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _raw_get(path: str) -> str:
    import socket

    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(path)
        connection.sendall(b"GET / HTTP/1.1\r\nhost: function\r\nconnection: close\r\n\r\n")
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received.decode()


def cold(bench: Bench, count: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="kliv-bench-direct-"))
    gateway, direct = [], []
    headers = {"authorization": f"Bearer {bench.token}"}
    with httpx.Client(timeout=30) as client:
        for index in range(count):
            for side in ("gateway", "direct") if index % 2 == 0 else ("direct", "gateway"):
                started = time.perf_counter()
                if side == "gateway":
                    answer = client.get(bench.function_url(f"f{index}"), headers=headers)
                    gateway.append((time.perf_counter() - started) * 1000)
                else:
                    started = time.perf_counter()
                    process = Direct(root)
                    text = _raw_get(process.socket)  # no client to build: the least a caller can do
                    direct.append((time.perf_counter() - started) * 1000)
                    process.close()
                    assert text.endswith("one"), text
                    continue
                assert answer.text == "one", answer.text
    shutil.rmtree(root, ignore_errors=True)
    return {"gateway_p50": statistics.median(gateway), "gateway_p95": percentile(gateway, 0.95),
            "direct_p50": statistics.median(direct), "direct_p95": percentile(direct, 0.95)}  # fmt: skip


async def _throughput(client: httpx.AsyncClient, url: str, headers: dict[str, str], total: int) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            answer = await client.get(url, headers=headers)
            assert answer.status_code == 200

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(16)))
    return total / (time.perf_counter() - started)


def warm(bench: Bench, runs: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="kliv-bench-direct-"))
    direct = Direct(root)
    headers = {"authorization": f"Bearer {bench.token}"}
    url = bench.function_url("f0")
    results: dict[str, list[float]] = {"gateway_rps": [], "direct_rps": [], "gateway_p50": [], "direct_p50": []}

    async def measure(side: str) -> None:
        transport = httpx.AsyncHTTPTransport(uds=direct.socket) if side == "direct" else None
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            target = "http://function/" if side == "direct" else url
            await client.get(target, headers=headers)
            results[f"{side}_rps"].append(await _throughput(client, target, headers, 2000))
            latencies = []
            for _ in range(300):
                started = time.perf_counter()
                await client.get(target, headers=headers)
                latencies.append((time.perf_counter() - started) * 1000)
            results[f"{side}_p50"].append(statistics.median(latencies))

    for run in range(runs):
        for side in ("gateway", "direct") if run % 2 == 0 else ("direct", "gateway"):
            asyncio.run(measure(side))
    direct.close()
    shutil.rmtree(root, ignore_errors=True)
    return {key: statistics.median(values) for key, values in results.items()}


def switching(bench: Bench) -> dict[str, float]:
    """Deploy, then roll back, under load; times to the new answer, requests and failures."""
    answers: list[tuple[int, str]] = []
    stop = threading.Event()
    url = bench.function_url("f0")

    def load() -> None:
        with httpx.Client(headers={"authorization": f"Bearer {bench.token}"}, timeout=30) as client:
            while not stop.is_set():
                try:
                    answer = client.get(url)
                    answers.append((answer.status_code, answer.text))
                except httpx.HTTPError as exc:
                    answers.append((0, type(exc).__name__))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    while len(answers) < 200:
        time.sleep(0.01)
    first = len(answers)
    bench.write({**bench.texts, "f0": "two"})
    started = time.perf_counter()
    bench.apply()
    applied = time.perf_counter() - started
    while answers[-1][1] != "two":
        time.sleep(0.001)
    deployed = time.perf_counter() - started
    time.sleep(1)
    with psycopg.connect(sessions.conninfo(bench.url, "kliv")) as control:
        started = time.perf_counter()
        with control.transaction():
            artifacts.rollback(control, bench.namespace, "bench", "f0", None)
    while answers[-1][1] != "one":
        time.sleep(0.001)
    rolled = time.perf_counter() - started
    while len(answers) < first + 2000:
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join()
    during = answers[first:]
    failed = sum(1 for status, _ in during if status != 200)
    return {"apply_s": applied, "deploy_to_served_s": deployed, "rollback_to_served_s": rolled,
            "requests": len(during), "failed": failed}  # fmt: skip


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def memory(bench: Bench) -> dict[str, float]:
    children = _children(bench.serve.pid)
    before = _pss_kib(bench.serve.pid) + sum(_pss_kib(c) for c in children)
    headers = {"authorization": f"Bearer {bench.token}"}
    for index in range(10):
        httpx.get(bench.function_url(f"f{50 + index}"), headers=headers, timeout=30)
    time.sleep(2)
    children = _children(bench.serve.pid)
    serve_pss = _pss_kib(bench.serve.pid)
    total = serve_pss + sum(_pss_kib(c) for c in children)
    per_instance = (total - before) / 1024 / max(1, len(children))
    return {"processes": 1 + len(children), "serve_mib": serve_pss / 1024, "total_mib": total / 1024,
            "none_called_mib": before / 1024, "per_instance_mib": per_instance}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, default=20, help="Cold starts per side.")
    parser.add_argument("--runs", type=int, default=5, help="Warm rounds per side.")
    arguments = parser.parse_args()
    url = os.environ.get("KLIV_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    bench = Bench(url, 100)
    try:
        measured = memory(bench)  # first: nothing else has started instances yet (f50..f59)
        found = {"memory": measured, "cold": cold(bench, arguments.cold), "warm": warm(bench, arguments.runs),
                 "switching": switching(bench)}  # fmt: skip
    finally:
        bench.close()
    print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
