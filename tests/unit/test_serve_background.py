"""`kliv down` signals only the kliv serve it started: a recorded pid that another process has by now
is never signalled, even when something answers /healthz on the recorded port."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from kliv.serving import background


class _Health(http.server.BaseHTTPRequestHandler):
    pid = 0

    def do_GET(self) -> None:
        body = json.dumps({"ok": True, "pid": self.pid}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    (tmp_path / "kliv").mkdir()
    return tmp_path / "kliv"


class TestStop:
    def test_a_reused_pid_is_never_signalled(self, data_home: Path) -> None:
        stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
        server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
        _Health.pid = os.getpid()  # a kliv serve answers there, but it is not the recorded process
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            port = server.server_address[1]
            (data_home / "serve.json").write_text(json.dumps({"pid": stranger.pid, "port": port, "database": "x"}))
            assert background.running() is None
            assert background.stop() is False
            assert stranger.poll() is None  # alive: never signalled
            assert not (data_home / "serve.json").exists()  # the stale record is forgotten
            (data_home / "serve.json").write_text(json.dumps({"pid": stranger.pid, "port": port, "database": "x"}))
            _Health.pid = stranger.pid  # now the answer names it: it is ours
            assert background.running() == (stranger.pid, port, "x")
        finally:
            server.shutdown()
            stranger.kill()
            stranger.wait()

    def test_nothing_recorded(self, data_home: Path) -> None:
        assert background.running() is None
        assert background.stop() is False
