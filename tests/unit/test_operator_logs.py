"""The operator's JSON logs: kopf's per-object records and structlog events in one format."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
import structlog

from kliv.operator.logs import configure_json_logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_json_logs(buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


class TestJsonLogs:
    """configure_json_logs() renders every record as one JSON object per line."""

    def test_kopf_object_records_carry_kind_namespace_name(self, stream: io.StringIO) -> None:
        """kopf's per-object logger: the object's kind, namespace and name are fields; settings never are."""
        body = kopf.Body(
            {
                "apiVersion": "cloud.kliv.dev/v1alpha1",
                "kind": "Table",
                "metadata": {"name": "posts", "namespace": "blog", "uid": "u1"},
            }
        )
        kopf.ObjectLogger(body=body, settings=kopf.OperatorSettings()).info("Handler succeeded.")
        [line] = lines(stream)
        assert line["event"] == "Handler succeeded."
        assert (line["kind"], line["namespace"], line["name"]) == ("Table", "blog", "posts")
        assert line["level"] == "info"
        assert "settings" not in line
        assert "OperatorSettings" not in stream.getvalue()

    def test_structlog_events_share_the_format(self, stream: io.StringIO) -> None:
        """Our structlog events (the relay's) keep their key-value pairs and get level and logger."""
        structlog.get_logger("kliv.relay").warning("relay.unroutable", hint="bind a queue")
        [line] = lines(stream)
        assert line["event"] == "relay.unroutable"
        assert line["hint"] == "bind a queue"
        assert (line["level"], line["logger"]) == ("warning", "kliv.relay")
        assert "timestamp" in line

    def test_exceptions_are_rendered_into_the_line(self, stream: io.StringIO) -> None:
        """A logged exception stays inside its JSON line (no multi-line traceback breaking the stream)."""
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("kopf.objects").exception("Handler failed.")
        [line] = lines(stream)
        assert "ValueError: bad" in line["exception"]

    def test_configuring_twice_keeps_one_handler(self, stream: io.StringIO) -> None:
        """Calling it again replaces its handler instead of doubling every line."""
        configure_json_logs(stream)
        logging.getLogger("kopf").warning("once")
        assert len(lines(stream)) == 1
