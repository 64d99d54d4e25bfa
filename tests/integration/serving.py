"""A real ``kliv serve`` for tests: the app of :func:`kliv.serving.app.build` under uvicorn, on a
free loopback port, in a thread with its own event loop.

Used by the function tests (tests/integration/test_functions_*.py) and the benchmark.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import uvicorn

from keyrings import ROTATED_KEY, TEST_KEY
from kliv.serving.app import Serving, build
from kliv.stacks.secrets.keys import Keyring

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    """A running ``kliv serve``: its URL and its insides."""

    def __init__(self, url: str, serving: Serving, server: uvicorn.Server, loop: asyncio.AbstractEventLoop) -> None:
        self.url = url
        self.serving = serving
        self.server = server
        self.loop = loop

    def project_url(self, namespace: str, project: str) -> str:
        return f"{self.url}/p/{namespace}/{project}"

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop (where its objects live)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def wait_for(self, condition: Any, timeout: float = 10, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)


@contextmanager
def serve(database_url: str, idle_seconds: float = 60.0, schedules: bool = False) -> Iterator[Served]:
    """``kliv serve`` over the control database of the server at ``database_url``."""
    port = free_port()
    keyring = Keyring(TEST_KEY, [ROTATED_KEY])
    app, serving = build(database_url, keyring, idle_seconds, schedules=schedules)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("kliv serve did not start")
        time.sleep(0.05)
    try:
        yield Served(url, serving, server, loop)
    finally:
        server.should_exit = True
        thread.join(30)
        loop.close()
