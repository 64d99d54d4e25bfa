"""Prometheus metrics of the operator: reconciles, their duration, reasons, queue depth, outbox backlog, relay.

Created by ``kliv operator`` (served with ``--metrics-port``) and by the tests;
the handlers' shared state (:class:`kliv.operator.handlers.OperatorState`)
records every project reconcile here. Each :class:`Metrics` has its own
registry, so tests and several operators in one process never share counters.
The two gauges are computed at scrape time in prometheus_client's HTTP thread,
so the outbox query there never blocks the operator's event loop.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kliv.operator.reconciling import ProjectResult
from kliv.operator.relay import Relay
from kliv.stacks.postgres import inventory, sessions

# From a no-change plan (tens of ms) to a large first apply (tens of seconds).
DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The operator's collectors, in a registry of their own."""

    def __init__(
        self, queue_depth: Callable[[], float], outbox_backlog: Callable[[], float], relay: Relay | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "kliv_reconciles", "Project reconciles run, by result.", ["result"], registry=self.registry
        )
        self.duration = Histogram(
            "kliv_reconcile_duration_seconds",
            "Wall time of one project reconcile (validation, plan and apply).",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.not_ready = Counter(
            "kliv_reconcile_errors",
            "Objects a reconcile left not Ready, by the reason of their Ready condition.",
            ["reason"],
            registry=self.registry,
        )
        queue = Gauge("kliv_reconcile_queue_depth", "Projects waiting for a reconcile.", registry=self.registry)
        queue.set_function(queue_depth)
        backlog = Gauge(
            "kliv_outbox_backlog",
            "Audit events written but not yet delivered to the broker (NaN: the database is unreachable).",
            registry=self.registry,
        )
        backlog.set_function(outbox_backlog)
        if relay is not None:
            publishing = Gauge(
                "kliv_relay_publishing",
                "1 while this replica's relay holds the outbox lock and publishes; 0 while it stands by.",
                registry=self.registry,
            )
            publishing.set_function(lambda: float(relay.leading))
            published = Gauge(
                "kliv_relay_published_events",
                "Audit events this replica's relay published with confirms since it started.",
                registry=self.registry,
            )
            published.set_function(lambda: float(relay.published))

    def observe(self, result: ProjectResult, seconds: float) -> None:
        """Record one reconcile that returned statuses (not Ready objects counted by reason)."""
        self.duration.observe(seconds)
        reasons = [s.ready.reason for s in result.statuses.values() if s.ready.status != "True"]
        if result.fallback.ready.status != "True":
            reasons.append(result.fallback.ready.reason)
        self.reconciles.labels(result="NotReady" if reasons else "Ready").inc()
        for reason in reasons:
            self.not_ready.labels(reason=reason).inc()

    def observe_crash(self, error: BaseException, seconds: float) -> None:
        """Record one reconcile that raised instead of returning statuses."""
        self.duration.observe(seconds)
        self.reconciles.labels(result="Exception").inc()
        self.not_ready.labels(reason=type(error).__name__).inc()

    def serve(self, port: int, address: str = "0.0.0.0") -> None:  # all interfaces: a pod's port
        """Serve /metrics from a daemon thread."""
        start_http_server(port, address, registry=self.registry)


def outbox_backlog(admin_url: str) -> Callable[[], float]:
    """A scrape-time count of undelivered audit events in the control database."""
    url = sessions.conninfo(admin_url, inventory.CONTROL_DATABASE)

    def count() -> float:
        try:
            with psycopg.connect(url, connect_timeout=5, application_name="kliv-metrics") as connection:
                row = connection.execute("SELECT count(*) FROM inventory.outbox WHERE delivered_at IS NULL").fetchone()
        except psycopg.Error:
            return float("nan")  # unreachable, or not bootstrapped yet
        return float(row[0]) if row else 0.0

    return count
