"""Shared fixtures: validate YAML text in-process, and the repository's paths; the machine's services.

`make test` (and CI, the same command) finds PostgreSQL and RabbitMQ on their usual local ports by
itself: KLIV_TEST_DATABASE_URL and KLIV_TEST_AMQP_URL only point elsewhere. Tests that still cannot
run because a service is missing are listed at the end of the run, loudly, with the fix.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kliv import policies
from kliv.specs import Validation, parse_text, validate_documents

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"
_FIXES = {
    "KLIV_TEST_DATABASE_URL": "start PostgreSQL on 127.0.0.1:5432 (`pg_ctlcluster --skip-systemctl-redirect 15 main "
    "start`) or set KLIV_TEST_DATABASE_URL",
    "KLIV_TEST_AMQP_URL": "start RabbitMQ on 127.0.0.1:5672 (`rabbitmq-server -detached`) or set KLIV_TEST_AMQP_URL",
}


def _postgres_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def pytest_configure(config: pytest.Config) -> None:
    """Before any test module reads them: the local services, when nothing else was configured."""
    if not os.environ.get("KLIV_TEST_DATABASE_URL") and _postgres_answers(LOCAL_POSTGRES):
        os.environ["KLIV_TEST_DATABASE_URL"] = LOCAL_POSTGRES
    if not os.environ.get("KLIV_TEST_AMQP_URL") and _port_open(5672):
        os.environ["KLIV_TEST_AMQP_URL"] = LOCAL_RABBITMQ


@pytest.fixture(scope="session", autouse=True)
def _own_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What `kliv up` keeps (its key, a background `kliv serve`) goes to a folder of the test session,
    never the developer's own ~/.local/share/kliv; the background server is stopped at the end."""
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    try:
        yield
    finally:
        from kliv.serving import background

        background.stop()
        if saved is None:
            os.environ.pop("XDG_DATA_HOME", None)
        else:
            os.environ["XDG_DATA_HOME"] = saved


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Skips for want of a service, counted and explained: never a quiet green run that tested less."""
    missing: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        for variable in _FIXES:
            if variable in reason:
                missing[variable] = missing.get(variable, 0) + 1
    for variable, count in missing.items():
        terminalreporter.write_sep("!", f"{count} tests did NOT run: {variable} is not set", red=True, bold=True)
        terminalreporter.write_line(f"fix: {_FIXES[variable]}")


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _test_keyring_opens() -> None:
    """The long-running test server's keyring must open with the test keys.

    A keyring left by something else (an older key derivation, a developer's own key)
    would fail every secret test: on the test server only, it is replaced, and the
    secret versions of earlier test runs (namespaces `test-*`) go with it.
    """
    url = os.environ.get("KLIV_TEST_DATABASE_URL")
    if not url:
        return
    import psycopg
    from psycopg.conninfo import make_conninfo

    from keyrings import ROTATED_KEY, TEST_KEY
    from kliv.stacks.secrets.keys import Keyring, SecretKeyError

    try:
        connection = psycopg.connect(make_conninfo(url, dbname="kliv"), autocommit=True)
    except psycopg.OperationalError:
        return  # no control database yet: the first test creates it
    with connection:
        if connection.execute("SELECT to_regclass('secrets.keyring')").fetchone() == (None,):
            return
        keyring = Keyring(TEST_KEY, [ROTATED_KEY])
        for key_id, wrapped in connection.execute("SELECT key_id, wrapped FROM secrets.keyring").fetchall():
            try:
                keyring.unwrap(key_id, bytes(wrapped), b"kliv fingerprint key")
            except SecretKeyError:
                with connection.transaction():
                    connection.execute("DELETE FROM secrets.keyring")
                    connection.execute("DELETE FROM secrets.versions WHERE namespace LIKE 'test-%'")


PROJECT = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: demo}
spec:
  enums: [{name: post_status, values: [draft, published]}]
"""

Validate = Callable[..., Validation]


@pytest.fixture
def validate() -> Validate:
    """Validate YAML text (with the demo Project prepended unless ``project=False``) plus guardrails."""

    def run(text: str, project: bool = True) -> Validation:
        source = (PROJECT + "---\n" + text) if project else text
        documents, problems = parse_text(source, "test.yaml")
        validation = validate_documents(documents)
        validation.problems[:0] = problems
        validation.problems += policies.evaluate(validation.specs)
        return validation

    return run


@pytest.fixture
def root() -> Path:
    return ROOT
