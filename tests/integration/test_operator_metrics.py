"""The operator's Prometheus metrics: recorded per reconcile, scraped over HTTP, backlog from the real outbox."""

from __future__ import annotations

import asyncio
import math
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres_projects import Project
from psycopg.conninfo import make_conninfo

from kliv.operator import conditions
from kliv.operator.handlers import OperatorState
from kliv.operator.metrics import Metrics, outbox_backlog
from kliv.operator.reconciling import ObjectStatus, ProjectResult
from kliv.stacks.postgres import inventory

MakeProject = Callable[[str | Path], Project]

SPEC = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: p}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: t}
spec: {projectRef: {name: p}, columns: [{name: id, type: int}]}
"""


def status(ready: bool, reason: str) -> ObjectStatus:
    return ObjectStatus(conditions.ready(ready, reason, "m."), conditions.synced(ready, reason, "m."))


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeReconciler:
    """Stands in for the engine-backed reconciler: returns or raises what it is given."""

    def __init__(self, outcome: ProjectResult | Exception) -> None:
        self.outcome = outcome

    async def reconcile(self, namespace: str, project: str, bodies: list[dict[str, Any]]) -> ProjectResult:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class TestRecording:
    """OperatorState records every project reconcile in its Metrics."""

    def test_not_ready_objects_counted_by_reason(self) -> None:
        """A reconcile leaving objects waiting counts once as NotReady and once per object's reason."""
        result = ProjectResult(
            {
                ("Table", "a"): status(True, conditions.AVAILABLE),
                ("TablePolicy", "b"): status(False, conditions.WAITING_FOR_DEPENDENCY),
                ("TablePolicy", "c"): status(False, conditions.WAITING_FOR_DEPENDENCY),
            },
            status(True, conditions.AVAILABLE),
        )
        state = OperatorState(FakeReconciler(result))  # type: ignore[arg-type]
        state.metrics = metrics = Metrics(state.queue_depth, lambda: 0.0)
        asyncio.run(state._reconcile(("ns", "p")))
        assert sample(metrics, "kliv_reconciles_total", result="NotReady") == 1.0
        assert sample(metrics, "kliv_reconciles_total", result="Ready") is None
        assert sample(metrics, "kliv_reconcile_errors_total", reason="WaitingForDependency") == 2.0
        assert sample(metrics, "kliv_reconcile_duration_seconds_count") == 1.0

    def test_crash_counted_and_reraised(self) -> None:
        """A reconcile that raises is counted as Exception with the error's type, and still raises."""
        state = OperatorState(FakeReconciler(RuntimeError("boom")))  # type: ignore[arg-type]
        state.metrics = metrics = Metrics(state.queue_depth, lambda: 0.0)
        with pytest.raises(RuntimeError):
            asyncio.run(state._reconcile(("ns", "p")))
        assert sample(metrics, "kliv_reconciles_total", result="Exception") == 1.0
        assert sample(metrics, "kliv_reconcile_errors_total", reason="RuntimeError") == 1.0

    def test_metrics_are_served_over_http(self) -> None:
        """GET /metrics returns the text exposition with the counters and gauges."""
        metrics = Metrics(lambda: 3.0, lambda: 7.0)
        metrics.observe(ProjectResult({}, status(True, conditions.AVAILABLE)), 0.2)
        port = free_port()
        metrics.serve(port, "127.0.0.1")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'kliv_reconciles_total{result="Ready"} 1.0' in text
        assert "kliv_reconcile_queue_depth 3.0" in text
        assert "kliv_outbox_backlog 7.0" in text
        assert 'kliv_reconcile_duration_seconds_bucket{le="0.25"} 1.0' in text


class TestOutboxBacklog:
    """The backlog gauge counts undelivered audit events in the real control database."""

    def test_counts_what_an_apply_enqueued(self, project: MakeProject, server_url: str) -> None:
        """An apply's events are undelivered (no relay runs here): the gauge grows by exactly those."""
        created = project(SPEC)
        backlog = outbox_backlog(server_url)
        before = backlog()
        created.apply()
        after = backlog()
        control = make_conninfo(server_url, dbname=inventory.CONTROL_DATABASE)
        with psycopg.connect(control) as connection:
            row = connection.execute(
                "SELECT count(*) FROM inventory.outbox WHERE namespace = %s AND delivered_at IS NULL",
                [created.namespace],
            ).fetchone()
        assert row is not None
        assert row[0] > 0
        assert after - before == row[0]

    def test_unreachable_database_is_nan(self) -> None:
        """No server: NaN (unknown), never an exception in the scrape thread."""
        assert math.isnan(outbox_backlog("postgresql://postgres@127.0.0.1:1/postgres")())
