"""The end of a `make test` run says loudly how many tests did not run for want of a service."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path
from typing import Any

# tests/conftest.py by its path: several conftest modules share that name.
_SPEC = importlib.util.spec_from_file_location("kliv_tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
assert _SPEC is not None
assert _SPEC.loader is not None
_ROOT_CONFTEST = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_ROOT_CONFTEST)
pytest_terminal_summary = _ROOT_CONFTEST.pytest_terminal_summary


class Reporter:
    def __init__(self, skipped: list[Any]) -> None:
        self.stats = {"skipped": skipped}
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str, **_: Any) -> None:
        self.lines.append(f"{sep} {title}")

    def write_line(self, line: str) -> None:
        self.lines.append(line)


def skipped(reason: str) -> Any:
    return types.SimpleNamespace(longrepr=("tests/x.py", 1, f"Skipped: {reason}"))


class TestServiceSummary:
    def test_counts_and_fixes(self) -> None:
        reporter = Reporter([
            skipped("KLIV_TEST_AMQP_URL is not set and no RabbitMQ answers on 127.0.0.1:5672"),
            skipped("KLIV_TEST_AMQP_URL is not set and no RabbitMQ answers on 127.0.0.1:5672"),
            skipped("ALTER SYSTEM would change the shared server"),
        ])  # fmt: skip
        pytest_terminal_summary(reporter)  # type: ignore[arg-type]
        assert reporter.lines[0] == "! 2 tests did NOT run: KLIV_TEST_AMQP_URL is not set"
        assert "rabbitmq-server -detached" in reporter.lines[1]
        assert len(reporter.lines) == 2

    def test_silent_when_everything_ran(self) -> None:
        reporter = Reporter([skipped("ALTER SYSTEM would change the shared server")])
        pytest_terminal_summary(reporter)  # type: ignore[arg-type]
        assert reporter.lines == []
