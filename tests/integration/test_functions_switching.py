"""Switching versions while requests flow, two `kliv serve` replicas following one control
database, schedules, and the `kliv functions` commands against a live server."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from postgres_projects import TEST_KEY, Project
from serving import Served, serve
from test_functions_gateway import project_yaml, source
from typer.testing import CliRunner

from kliv.cli import app
from kliv.stacks.postgres import sessions
from kliv.stacks.secrets import jwts
from kliv.stacks.secrets.keys import Keyring


def _code(text: str) -> str:
    return f'export default {{ fetch(req: Request) {{ return new Response("{text}"); }} }};\n'


def _key(created: Project) -> str:
    with psycopg.connect(sessions.conninfo(created.url, "kliv"), autocommit=True) as control:
        secret = jwts.ensure(control, Keyring(TEST_KEY), created.namespace, "fn")
    return jwts.key(secret, created.namespace, "fn", "anon")


def _cli(created: Project, served: Served | None, *args: str) -> tuple[int, str]:
    env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY}
    if served is not None:
        env["KLIV_API_URL"] = served.url
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout


@pytest.fixture
def hello(project: Callable[..., Project], server_url: str) -> Iterator[tuple[Project, Served]]:
    created = project(project_yaml({"hello": source(_code("one"))})).use()
    created.apply()
    with serve(server_url) as served:
        yield created, served


class Load:
    """Requests from 8 threads until stopped: every answer kept."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.answers: list[tuple[int, str]] = []
        self.stop = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(8)
        self.futures = [self.pool.submit(self._run) for _ in range(8)]

    def _run(self) -> None:
        with httpx.Client(headers={"authorization": f"Bearer {self.token}"}, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    answer = client.get(self.url)
                    self.answers.append((answer.status_code, answer.text))
                except httpx.HTTPError as exc:
                    self.answers.append((0, type(exc).__name__))

    def finish(self) -> list[tuple[int, str]]:
        self.stop.set()
        for future in self.futures:
            future.result()
        self.pool.shutdown()
        return self.answers


class TestSwitching:
    """Deploy and rollback under load: no request fails, new requests reach the new version."""

    def test_deploy_and_rollback_under_load(self, hello: tuple[Project, Served]) -> None:
        created, served = hello
        url = f"{served.project_url(created.namespace, 'fn')}/functions/v1/hello"
        load = Load(url, _key(created))
        served.wait_for(lambda: len(load.answers) > 100, what="traffic")
        created.edit("Function", "hello", lambda d: d["spec"]["source"].update(inline=_code("two")))
        created.apply()
        served.wait_for(lambda: load.answers[-1][1] == "two", what="version two")
        count = len(load.answers)
        served.wait_for(lambda: len(load.answers) > count + 100, what="more traffic")
        code, output = _cli(created, None, "functions", "rollback", "hello", "-p", f"{created.namespace}/fn")
        assert code == 0, output
        served.wait_for(lambda: load.answers[-1][1] == "one", what="rollback")
        count = len(load.answers)
        served.wait_for(lambda: len(load.answers) > count + 100, what="traffic after")
        answers = load.finish()
        assert len(answers) >= 300
        assert {status for status, _ in answers} == {200}, [a for a in answers if a[0] != 200][:5]
        texts = [text for _, text in answers]
        first_two, last_two = texts.index("two"), len(texts) - 1 - texts[::-1].index("two")
        assert set(texts[first_two : last_two + 1]) <= {"one", "two"}
        assert texts[-1] == "one"
        assert not served.serving.routes.draining or served.wait_for(
            lambda: not served.serving.routes.draining, what="old versions drained"
        )

    def test_two_replicas_follow(self, hello: tuple[Project, Served], server_url: str) -> None:
        """A deploy seen by one replica is seen by the other (LISTEN/NOTIFY on the control database)."""
        created, first = hello
        with serve(server_url) as second:
            token = _key(created)
            for served in (first, second):
                answer = httpx.get(f"{served.project_url(created.namespace, 'fn')}/functions/v1/hello",
                                   headers={"authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
                assert answer.text == "one"
            created.edit("Function", "hello", lambda d: d["spec"]["source"].update(inline=_code("two")))
            created.apply()
            for served in (first, second):
                url = f"{served.project_url(created.namespace, 'fn')}/functions/v1/hello"
                served.wait_for(lambda url=url: httpx.get(url, headers={"authorization": f"Bearer {token}"},
                                                          timeout=30).text == "two", what="two")  # fmt: skip


class TestCommands:
    """`kliv functions invoke|logs|invocations|list` against the live server."""

    LOGGING = """
export default {
  async fetch(req: Request): Promise<Response> {
    const claims = JSON.parse(req.headers.get("x-kliv-claims") ?? "{}");
    console.log("called by", claims.role, claims.sub ?? "-");
    return Response.json({ role: claims.role, body: req.method === "POST" ? await req.json() : null });
  },
};
"""

    def test_invoke_logs_invocations(self, project: Callable[..., Project], server_url: str) -> None:
        created = project(project_yaml({"greet": source(self.LOGGING)})).use()
        created.apply()
        ns = f"{created.namespace}/fn"
        with serve(server_url) as served:
            code, output = _cli(created, served, "functions", "invoke", "greet", "-p", ns, "--output", "json")
            assert code == 0, output
            assert json.loads(output)["body"] == {"role": "anon", "body": None}
            user = str(uuid.uuid4())
            code, output = _cli(created, served, "functions", "invoke", "greet", "-p", ns, "--role", "authenticated",
                                "--user", user, "--data", '{"n": 1}', "--output", "json")  # fmt: skip
            assert json.loads(output)["body"] == {"role": "authenticated", "body": {"n": 1}}
            code, output = _cli(created, served, "functions", "invoke", "greet", "-p", ns, "--role", "root")
            assert code == 1

            def logged() -> bool:
                _, output = _cli(created, None, "functions", "logs", "greet", "-p", ns, "--output", "json")
                lines = [json.loads(line) for line in output.splitlines() if line.strip()]
                return any(line["message"] == f"called by authenticated {user}" for line in lines)

            served.wait_for(logged, what="log line")
            code, output = _cli(created, None, "functions", "logs", "greet", "-p", ns)
            assert "runtime spawned pid" in output
            assert "runtime ready" in output

            def recorded() -> list[dict[str, Any]]:
                _, output = _cli(created, None, "functions", "invocations", "greet", "-p", ns, "--output", "json")
                return list(json.loads(output)["invocations"])

            served.wait_for(lambda: len(recorded()) == 2, what="invocations")
            newest, oldest = recorded()
            assert (oldest["method"], oldest["status"], oldest["cold"]) == ("GET", 200, True)
            assert (newest["method"], newest["status"], newest["cold"]) == ("POST", 200, False)
            code, output = _cli(created, None, "functions", "list", "-p", ns, "--output", "json")
            assert [f["route"] for f in json.loads(output)["functions"]] == ["greet"]
            code, output = _cli(created, None, "functions", "logs", "nothere", "-p", ns)
            assert code == 1

    def test_logs_follow(self, project: Callable[..., Project], server_url: str) -> None:
        """`logs --follow` prints lines as they are written (here: until the test stops reading)."""
        import subprocess
        import sys

        created = project(project_yaml({"greet": source(self.LOGGING)})).use()
        created.apply()
        env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY,
               "PATH": "/usr/bin:/bin"}  # fmt: skip
        with serve(server_url) as served:
            follower = subprocess.Popen(
                [sys.executable, "-m", "kliv", "functions", "logs", "greet", "-p", f"{created.namespace}/fn",
                 "--follow", "--output", "json"], stdout=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            try:
                time.sleep(1)
                httpx.get(f"{served.project_url(created.namespace, 'fn')}/functions/v1/greet",
                          headers={"authorization": f"Bearer {_key(created)}"}, timeout=30)  # fmt: skip
                assert follower.stdout is not None
                seen = []
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    seen.append(json.loads(follower.stdout.readline()))
                    if seen[-1]["message"].startswith("called by anon"):
                        break
                assert seen[-1]["message"] == "called by anon -"
            finally:
                follower.kill()
                follower.wait()


class TestSchedules:
    """A schedule runs through the gateway with the service-role key, once per due time."""

    def test_due_runs_once(self, project: Callable[..., Project], server_url: str) -> None:
        created = project(project_yaml({"nightly": source(TestCommands.LOGGING, schedule="*/5 * * * *")})).use()
        created.apply()
        with serve(server_url) as served:
            scheduler = served.serving.scheduler
            now = datetime.datetime.now(datetime.UTC)
            scheduler.started = now - datetime.timedelta(minutes=11)

            async def tick_at(when: datetime.datetime) -> int:
                async with await psycopg.AsyncConnection.connect(sessions.conninfo(created.url, "kliv"),
                                                                 autocommit=True) as session:  # fmt: skip
                    return await scheduler.tick(session, when)

            # Just deployed: nothing is due for the times before it existed.
            assert served.run(tick_at(now)) == 0
            scheduler.last.clear()
            [route] = served.serving.routes.routes.values()
            eleven = datetime.timedelta(minutes=11)
            route.version = dataclasses.replace(route.version, created_at=now - eleven)  # two runs due: one

            async def tick() -> int:
                async with await psycopg.AsyncConnection.connect(sessions.conninfo(created.url, "kliv"),
                                                                 autocommit=True) as session:  # fmt: skip
                    return await scheduler.tick(session, now)

            assert served.run(tick()) == 1
            scheduler.last.clear()  # another leader, same due time: claimed already
            assert served.run(tick()) == 0
            with psycopg.connect(sessions.conninfo(created.url, "kliv"), autocommit=True) as control:

                def ran() -> list[tuple[Any, ...]]:
                    return control.execute(
                        "SELECT status, method FROM functions.invocations WHERE namespace = %s",
                        [created.namespace],
                    ).fetchall()

                served.wait_for(lambda: len(ran()) == 1, what="the scheduled invocation")
                assert ran() == [(200, "POST")]
                logged = control.execute("SELECT message FROM functions.logs WHERE namespace = %s AND stream = "
                                         "'stdout'", [created.namespace]).fetchall()  # fmt: skip
            assert logged == [("called by service_role -",)]


class TestLeader:
    """Of two replicas running schedules, exactly one holds the leader lock."""

    def test_one_leader(self, server_url: str) -> None:
        with serve(server_url, schedules=True) as first, serve(server_url, schedules=True) as second:

            def leaders() -> list[bool]:
                return [bool(httpx.get(s.url + "/healthz", timeout=10).json()["leader"]) for s in (first, second)]

            first.wait_for(lambda: any(leaders()), what="a leader")
            assert sorted(leaders()) == [False, True]


class TestServeProcess:
    """`kliv serve` as a process: its Deno children die with it, even when it is killed outright."""

    def test_children_die_with_kliv_serve(self, hello: tuple[Project, Served], server_url: str) -> None:
        import os
        import signal
        import subprocess
        import sys
        from pathlib import Path

        from serving import free_port

        created, _ = hello
        port = free_port()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("KLIV_")},
               "KLIV_DATABASE_URL": server_url, "KLIV_SECRET_KEY": TEST_KEY, "KLIV_CONFIG": "/nonexistent"}  # fmt: skip
        process = subprocess.Popen([sys.executable, "-m", "kliv", "serve", "--port", str(port)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/p/{created.namespace}/fn/functions/v1/hello"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url, headers={"authorization": f"Bearer {_key(created)}"}, timeout=5).text == "one":
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "kliv serve did not answer"
                time.sleep(0.1)

            def children() -> list[int]:
                found = []
                for entry in Path("/proc").iterdir():
                    if entry.name.isdigit():
                        try:
                            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == process.pid:
                                found.append(int(entry.name))
                        except (OSError, ValueError, IndexError):
                            pass
                return found

            [deno] = children()
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            deadline = time.monotonic() + 5
            while Path(f"/proc/{deno}").exists() and "Z" not in Path(f"/proc/{deno}/stat").read_text().split()[2]:
                assert time.monotonic() < deadline, "the function's process outlived kliv serve"
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                process.kill()
