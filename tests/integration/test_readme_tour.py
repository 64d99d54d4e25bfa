"""The README's tour, followed literally: every `$` line of it, in order, in one shell, on embedded defaults.

A command's documented exit code (`# exit N`) must be what it exits with (0 otherwise); a heredoc
goes with its command. The shell starts in the repository with its own XDG_DATA_HOME and TMPDIR
(a fresh machine's embedded server, key and buckets) and nothing of kliv configured.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_EXIT = re.compile(r"#\s*exit (\d+)")
_HEREDOC = re.compile(r"<<-?'?(\w+)'?")


def tour_commands(readme: str) -> list[tuple[str, int]]:
    """(command, expected exit code) for every `$` line between the tour's heading and the next section."""
    section = readme.split("## A 5-minute tour", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    commands: list[tuple[str, int]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.startswith("    $ "):
            continue
        command = line[len("    $ ") :]
        expected = _EXIT.search(command)
        heredoc = _HEREDOC.search(command)
        if heredoc:
            body = []
            while index < len(lines) and lines[index].strip() != heredoc.group(1):
                body.append(lines[index][4:])
                index += 1
            index += 1
            command = "\n".join([command, *body, heredoc.group(1)])
        commands.append((command, int(expected.group(1)) if expected else 0))
    return commands


class TestReadmeTour:
    def test_the_parser_sees_the_tour(self) -> None:
        commands = tour_commands((ROOT / "README.md").read_text())
        assert commands[0] == ("make up", 0)
        assert any(c.startswith("psql") and c.endswith("\nSQL") for c, _ in commands)
        assert (
            '.venv/bin/kliv apply "${TMPDIR:-/tmp}/blog"         # exit 2: refused until --allow-data-loss',
            2,
        ) in commands

    def test_every_command_as_written(self, tmp_path: Path) -> None:
        if shutil.which("psql") is None:
            pytest.fail("the tour uses psql: install the PostgreSQL client (Debian: postgresql-client)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLIV_")}
        env.update({"XDG_DATA_HOME": str(tmp_path / "data"), "TMPDIR": str(tmp_path), "KLIV_CONFIG": "/nonexistent"})
        # One shell for the whole tour (an `export` carries to the next command), stopped at the first surprise.
        script = ["set -u"]
        for number, (command, expected) in enumerate(tour_commands((ROOT / "README.md").read_text())):
            script.append(f"echo '>>> command {number}' >&2")
            script.append(command)
            script.append(f'code=$?; if [ "$code" != {expected} ]; then echo "command {number} exited $code, '
                          f'the README says {expected}" >&2; exit 99; fi')  # fmt: skip
        try:
            done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=600, check=False)  # fmt: skip
        finally:
            subprocess.run([str(ROOT / ".venv" / "bin" / "kliv"), "down"], env=env, capture_output=True, check=False)
        assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-2000:]
        # What the tour says one sees: RLS decided for the visitor; the plan names the dropped column.
        assert "Hello" in done.stdout
        assert "My draft" not in done.stdout
        assert "drop column headline" in done.stdout
        assert "database_url: postgresql://blog_authenticator:" in " ".join(done.stdout.split())
