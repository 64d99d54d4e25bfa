"""The ``kliv serve`` application: routes, start-up and shutdown.

Called by the ``kliv serve`` command (:mod:`kliv.cli.serving`, under uvicorn) and by tests,
which serve :func:`build`'s app on a real port. Start-up makes the control database if it
is missing and migrates it if it is older than this code, loads the routing table and starts the recorder, the
follower and the scheduler; shutdown stops every function process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kliv.serving.gateway import Gateway
from kliv.serving.recording import Recorder
from kliv.serving.routes import IDLE_SECONDS, Routes
from kliv.serving.scheduling import Scheduler
from kliv.stacks.secrets.keys import Keyring

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


@dataclasses.dataclass
class Serving:
    """What one ``kliv serve`` runs (tests reach in through it)."""

    routes: Routes
    gateway: Gateway
    recorder: Recorder
    scheduler: Scheduler


def _prepare(database_url: str) -> None:
    """The control database, made and migrated if this ``kliv serve`` starts before any apply."""
    from kliv.stacks.postgres import inventory, sessions

    with sessions.connect(database_url) as admin:
        inventory.ensure(admin)
    with sessions.connect(database_url, inventory.CONTROL_DATABASE, autocommit=False) as control:
        inventory.ensure_schema(control)


def build(
    database_url: str,
    keyring: Keyring | None,
    idle_seconds: float = IDLE_SECONDS,
    root: Path | None = None,
    schedules: bool = True,
) -> tuple[Starlette, Serving]:
    """The app for the control database of the server at ``database_url`` (an admin DSN)."""
    from kliv.stacks.postgres import inventory, sessions

    control_url = sessions.conninfo(database_url, inventory.CONTROL_DATABASE)
    recorder = Recorder(control_url)
    routes = Routes(control_url, keyring, recorder, idle_seconds, root)
    gateway = Gateway(routes)
    scheduler = Scheduler(control_url, gateway)
    serving = Serving(routes, gateway, recorder, scheduler)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(_prepare, database_url)
        await recorder.start()
        await routes.start()
        running = asyncio.create_task(scheduler.run()) if schedules else None
        try:
            yield
        finally:
            if running is not None:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
            await routes.stop()
            await recorder.stop()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "functions": len(routes.routes), "leader": scheduler.leader,
                             "pid": os.getpid()})  # fmt: skip

    async def functions(request: Request) -> Response:
        return await gateway.handle(request)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/p/{namespace}/{project}/functions/v1/{rest:path}", functions, methods=METHODS),
        ],
        lifespan=lifespan,
    )
    return app, serving
