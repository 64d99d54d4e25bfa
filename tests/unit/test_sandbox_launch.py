"""The Deno command line of a function version (kliv.serving.sandbox.launch): what it may touch."""

from __future__ import annotations

from pathlib import Path

from kliv.serving import sandbox


class TestLaunch:
    def test_runtime_names_are_dropped_again_at_launch(self, tmp_path: Path) -> None:
        """Settings come back from the database: a name the runtime reads never reaches the process."""
        launch = sandbox.launch(tmp_path, tmp_path / ".deno", {"HTTPS_PROXY": "http://127.0.0.1:1", "A": "1"},
                                {"OTEL_DENO": "true", "KEY": "v"}, "ns/p", 64)  # fmt: skip
        assert "HTTPS_PROXY" not in launch.environment
        assert "OTEL_DENO" not in launch.environment
        assert (launch.environment["A"], launch.environment["KEY"]) == ("1", "v")
        [allowed] = [a for a in launch.command if a.startswith("--allow-env=")]
        assert allowed == "--allow-env=A,KEY,KLIV_PROJECT"

    def test_reads_and_writes_only_its_socket(self, tmp_path: Path) -> None:
        launch = sandbox.launch(tmp_path, tmp_path / ".deno", {}, {}, "ns/p", 64)
        assert f"--allow-read={tmp_path / sandbox.SOCKET}" in launch.command
        assert f"--allow-write={tmp_path / sandbox.SOCKET}" in launch.command
        [denied] = [a for a in launch.command if a.startswith("--deny-net=")]
        for address in sandbox.own_addresses():
            assert address in denied.split("=", 1)[1].split(",")
