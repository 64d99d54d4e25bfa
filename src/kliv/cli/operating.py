"""``kliv operator``, ``kliv relay``, ``kliv events`` and ``kliv crds``: the processes and
files of a cluster installation.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

# typer (>= 0.29) runs on a click of its own: its contexts and usage errors are that click's, not the
# click package's (whose get_current_context() sees no typer command).
from kliv import rendering
from kliv.rendering import escape

if TYPE_CHECKING:
    pass


from kliv.cli.options import (
    EXIT_FAILED,
    EXIT_INVALID,
    Output,
    OutputOption,
    _fail,
    _settings,
    app,
)
from kliv.cli.wiring import (
    _engine,
    _planner,
)


@app.command()
def relay() -> None:
    """Relay audit events from the outbox to RabbitMQ until interrupted (at least once, in order)."""
    from kliv.operator.running import relay_for

    settings = _settings(Output.text)
    if not settings.amqp_url:
        _fail(
            "no RabbitMQ",
            "KLIV_AMQP_URL is not set",
            "set KLIV_AMQP_URL=amqp://user:pass@host:5672/",
            Output.text,
            EXIT_FAILED,
        )
    engine = _engine(settings, Output.text)
    relaying = relay_for(settings, engine.admin_url)
    assert relaying is not None
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await relaying.run(stop)

    asyncio.run(main())


@app.command()
def events(
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project (name or ns/name).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="How many recent events to show first.")] = 50,
    output: OutputOption = Output.text,
) -> None:
    """Show audit events from the outbox (delivered or not), newest last."""
    from kliv.stacks.postgres import outbox

    settings = _settings(output)
    engine = _engine(settings, output)
    position = 0
    try:
        while True:
            rows = outbox.read(engine.admin_url, project, after=position, limit=None if position else limit)
            for row in rows:
                position = max(position, row.position)
                if output is Output.json:
                    sys.stdout.write(row.body + "\n")
                else:
                    rendering.event(row)
            sys.stdout.flush()
            if not follow:
                return
            time.sleep(0.5)
    except KeyboardInterrupt:
        return


@app.command()
def operator(
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Watch these namespaces (default: all).")
    ] = None,
    liveness: Annotated[
        str | None, typer.Option("--liveness", help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port (/metrics)."),
    ] = None,
    log_format: Annotated[
        str, typer.Option("--log-format", help="json (one object per line, with kind/namespace/name) or text.")
    ] = "json",
    peering: Annotated[
        str | None,
        typer.Option(
            "--peering",
            help="Peer with the other replicas through this kopf peering object (deploy/peering.yaml): "
            "only the highest priority reconciles. Default: standalone.",
        ),
    ] = None,
    priority: Annotated[
        int | None, typer.Option("--priority", help="Peering priority (default: random, so one replica leads).")
    ] = None,
    webhook_cert: Annotated[
        Path | None,
        typer.Option(
            "--webhook-cert",
            envvar="KLIV_WEBHOOK_CERT",
            metavar="FILE",
            help="TLS certificate (PEM) of the admission webhook; with --webhook-key it serves "
            "POST /validate (deploy/webhook.yaml). Unset: no admission webhook.",
        ),
    ] = None,
    webhook_key: Annotated[
        Path | None,
        typer.Option(
            "--webhook-key", envvar="KLIV_WEBHOOK_KEY", metavar="FILE", help="Private key (PEM) of --webhook-cert."
        ),
    ] = None,
    webhook_port: Annotated[
        int, typer.Option("--webhook-port", min=1, max=65535, help="Port of the admission webhook (HTTPS).")
    ] = 9443,
    webhook_address: Annotated[
        str, typer.Option("--webhook-address", metavar="ADDRESS", help="Address the admission webhook listens on.")
    ] = "0.0.0.0",
    webhook_client_ca: Annotated[
        Path | None,
        typer.Option(
            "--webhook-client-ca",
            envvar="KLIV_WEBHOOK_CLIENT_CA",
            metavar="FILE",
            help="Only clients with a certificate from this CA (PEM) may call the webhook: the "
            "apiserver, configured to present one. Unset: any client that reaches the port.",
        ),
    ] = None,
) -> None:
    """Run the kopf operator: reconcile the custom resources of the cluster (kubeconfig or in-cluster).

    Every replica also relays audit events to KLIV_AMQP_URL (one publishes at a time) and, given a
    certificate, serves the admission webhook.
    """  # fmt: skip
    import kopf

    from kliv.operator.cluster_secrets import ClusterSecrets
    from kliv.operator.logs import configure_json_logs
    from kliv.operator.running import Webhook, run

    if log_format not in ("json", "text"):
        raise typer.BadParameter("use json or text", param_hint="--log-format")
    if (webhook_cert is None) != (webhook_key is None):
        raise typer.BadParameter("give both --webhook-cert and --webhook-key, or neither", param_hint="--webhook-key")
    for tls_file in (webhook_cert, webhook_key, webhook_client_ca):
        if tls_file is not None and not tls_file.is_file():
            raise typer.BadParameter(f"{tls_file}: no such file", param_hint="--webhook-*")
    if log_format == "json":
        configure_json_logs()
    else:
        kopf.configure(verbose=False)
    settings = _settings(Output.text)
    cluster_secrets = ClusterSecrets()  # a ProjectSecret's values come from Kubernetes Secrets, never env
    engine = _planner(settings, Output.text, cluster_secrets.value)
    webhook = None
    if webhook_cert is not None and webhook_key is not None:
        webhook = Webhook(webhook_cert, webhook_key, webhook_port, webhook_address, webhook_client_ca)
    run(engine, settings, cluster_secrets, namespaces=namespace or [], liveness=liveness,
        metrics_port=metrics_port, webhook=webhook, peering=peering, priority=priority)  # fmt: skip


@app.command()
def crds(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the manifests to.")] = Path("crds"),
    deploy: Annotated[
        Path | None,
        typer.Option(
            "--deploy",
            help="Folder whose RBAC and admission manifests list the kinds [default: deploy, when it exists].",
        ),
    ] = None,
) -> None:
    """Regenerate the CRD manifests and per-kind JSON Schemas from the spec models, and the kind lists
    of the RBAC and admission manifests."""
    from kliv.specs.crds import write, write_deploy

    if deploy is not None and not deploy.is_dir():
        _fail("no such folder", f"--deploy {deploy}", "name the folder holding rbac.yaml and webhook.yaml",
              Output.text, EXIT_INVALID)  # fmt: skip
    folder = deploy if deploy is not None else Path("deploy")
    try:
        written = write(out) + (write_deploy(folder) if folder.is_dir() else [])
    except OSError as exc:
        _fail("cannot write the CRDs", f"{out}: {exc.strerror}", "give a folder you may write to", Output.text,
              EXIT_INVALID)  # fmt: skip
    rendering.console().print(f"[green]✓[/] wrote {len(written)} files to {escape(str(out))}/")
