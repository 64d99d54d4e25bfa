"""Running the operator: what ``kliv operator`` composes around the handlers' registry.

Called by the CLI's ``operator`` and ``relay`` commands (and its drain after an apply) with values
already read and checked:
the cluster login, the admission webhook's server, the relay of every replica, metrics, and
kopf's peering mode. Kept out of :mod:`kliv.cli` so the command stays a thin parser.
"""

from __future__ import annotations

import dataclasses
import secrets
import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any

import kopf

from kliv.config import Settings
from kliv.operator.cluster_secrets import ClusterSecrets
from kliv.operator.handlers import cluster_login, make_registry
from kliv.operator.metrics import Metrics, outbox_backlog
from kliv.operator.relay import Relay, RelaySettings
from kliv.stacks.engines import Planner


@dataclasses.dataclass(frozen=True)
class Webhook:
    """Where and with which certificate the admission webhook is served (deploy/webhook.yaml)."""

    cert: Path
    key: Path
    port: int = 9443
    address: str = "0.0.0.0"  # all interfaces: a pod's port
    client_ca: Path | None = None  # only the apiserver, presenting a certificate of this CA

    def server(self) -> kopf.WebhookServer:
        verify: dict[str, Any] = {}
        if self.client_ca is not None:
            verify = {"verify_mode": ssl.CERT_REQUIRED, "verify_cafile": str(self.client_ca)}
        return kopf.WebhookServer(
            addr=self.address, port=self.port, certfile=str(self.cert), pkeyfile=str(self.key), **verify
        )


def relay_for(settings: Settings, admin_url: str, logger: Any = None) -> Relay | None:
    """The outbox relay the settings ask for (None without KLIV_AMQP_URL: events wait in the outbox)."""
    if not settings.amqp_url:
        return None
    tuning = RelaySettings(
        batch_size=settings.relay_batch_size, retention=timedelta(days=settings.outbox_retention_days)
    )
    return Relay(admin_url, settings.amqp_url, tuning, logger=logger)


def run(
    engine: Planner,
    settings: Settings,
    cluster_secrets: ClusterSecrets,
    *,
    namespaces: list[str],
    liveness: str | None,
    metrics_port: int | None,
    webhook: Webhook | None,
    peering: str | None,
    priority: int | None,
) -> None:
    """kopf.run() with kliv's registry; returns when the operator stops. ``cluster_secrets``: what the
    engine's secret provider was constructed to read."""
    relay = relay_for(settings, engine.admin_url)
    registry, state = make_registry(
        engine, webhook=webhook.server() if webhook else None, relay=relay, secrets=cluster_secrets
    )
    cluster_login(registry)
    if metrics_port is not None:
        state.metrics = Metrics(state.queue_depth, outbox_backlog(engine.admin_url), relay)
        state.metrics.serve(metrics_port)
    # kopf pauses every replica but the highest-priority live one (and all of them on a tie):
    # a random priority per replica makes that a leader election; a dead leader's entry
    # expires after the peering lifetime (60 s) and the next one resumes.
    mode: dict[str, Any] = (
        {"standalone": True}
        if peering is None
        else {"peering_name": peering, "priority": priority if priority is not None else secrets.randbelow(10**9)}
    )
    kopf.run(registry=registry, clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=liveness, **mode)
