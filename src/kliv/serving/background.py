"""``kliv serve`` in the background, for ``kliv up`` and ``kliv down``.

Called by the CLI only. The process is started detached (its own session, output to
``serve.log`` beside the embedded data), its pid and port kept in ``serve.json``; it is
reused while it runs for the same server and key, restarted when either changed. Port
54321 is taken when free, else any free one (kept for the next start while free).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from kliv.stacks import embedded

PREFERRED_PORT = 54321
START_SECONDS = 30.0


def _state_file() -> Path:
    return embedded.data_home() / "serve.json"


def log_file() -> Path:
    return embedded.data_home() / "serve.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(port: int, pid: int | None = None) -> bool:
    """Whether kliv serve answers on ``port`` (and, given ``pid``, is that process: a pid alone may
    be another process's by now, and only ours is ever signalled)."""
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        return answer.status_code == 200 and (pid is None or answer.json().get("pid") == pid)
    except (httpx.HTTPError, ValueError):
        return False


def _state() -> dict[str, object] | None:
    try:
        found = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _port() -> int:
    state = _state() or {}
    for wanted in (state.get("port"), PREFERRED_PORT):
        if isinstance(wanted, int) and embedded.free(wanted):
            return wanted
    return embedded.any_port()


def running() -> tuple[int, int, str] | None:
    """(pid, port, digest of its server and key) of the background server if it runs."""
    state = _state()
    if not state:
        return None
    pid, port, database = state.get("pid"), state.get("port"), state.get("database")
    if isinstance(pid, int) and isinstance(port, int) and _alive(pid) and _healthy(port, pid):
        return pid, port, str(database)
    return None


def _digest(database_url: str, secret_key: str | None) -> str:
    """Which server and key a running kliv serve was started for (a hash: the file shows neither)."""
    import hashlib

    return hashlib.sha256(f"{database_url}\0{secret_key or ''}".encode()).hexdigest()[:16]


def start(database_url: str, secret_key: str | None) -> tuple[int, bool]:
    """Start (or reuse) ``kliv serve`` for the server at ``database_url``; returns its port and
    whether it was running already."""
    found = running()
    if found is not None:
        if found[2] == _digest(database_url, secret_key):
            return found[1], True
        stop()
    port = _port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KLIV_")}
    environment["KLIV_DATABASE_URL"] = database_url
    if secret_key:
        environment["KLIV_SECRET_KEY"] = secret_key
    log_file().parent.mkdir(parents=True, exist_ok=True)
    with open(log_file(), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kliv", "serve", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=environment,
            start_new_session=True,
        )
    state = {"pid": process.pid, "port": port, "database": _digest(database_url, secret_key)}
    _state_file().write_text(json.dumps(state))
    deadline = time.monotonic() + START_SECONDS
    while not _healthy(port):
        if process.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            raise RuntimeError(f"kliv serve did not start; see {log_file()}")
        time.sleep(0.05)
    return port, False


def stop() -> bool:
    """Stop the background server; False if it was not running."""
    found = running()  # a pid alone might be another process's by now: only a healthy kliv serve is stopped
    if found is None:
        with contextlib.suppress(FileNotFoundError):
            _state_file().unlink()
        return False
    pid = found[0]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        _state_file().unlink()
    return True
