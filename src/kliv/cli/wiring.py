"""The CLI's composition root: settings in, an engine with every provider out.

Called by the commands that reach a server (plan, apply, up, secrets, templates); the
lower layers never read the environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any

# typer (>= 0.29) runs on a click of its own: its contexts and usage errors are that click's, not the
# click package's (whose get_current_context() sees no typer command).
from typer._click.globals import get_current_context

if TYPE_CHECKING:
    from kliv.config import Settings
    from kliv.stacks import PostgresEngine
    from kliv.stacks.engines import Planner
    from kliv.stacks.providers import ProviderOptions
    from kliv.stacks.pulumi.engine import PulumiEngine
    from kliv.stacks.secrets.provider import SecretValues


from kliv.cli.options import (
    EXIT_FAILED,
    Output,
    _fail,
)


def _engine(settings: Settings, output: Output, secret_values: SecretValues | None = None) -> PostgresEngine:
    """The native engine with its providers, for the commands that do not plan (secrets, templates,
    events, the relay: they read and write the control database, whatever the engine);
    ``secret_values``: where ProjectSecret values come from (default: the CLI's environment, never
    kliv's own credentials)."""
    from kliv.stacks import PostgresEngine

    url, options = _url_and_options(settings, output, secret_values)
    engine = PostgresEngine(url, options=options)
    _close_with_command(engine)
    return engine


def _planner(settings: Settings, output: Output, secret_values: SecretValues | None = None) -> Planner:
    """The engine ``settings.engine`` names (KLIV_ENGINE or --engine), for plan, apply, up and the
    operator. Without the `pulumi` CLI the Pulumi engine exits 3 before anything connects."""
    if settings.engine == "native":
        return _engine(settings, output, secret_values)
    from kliv.stacks import EngineError
    from kliv.stacks.pulumi.engine import PulumiEngine

    command = _pulumi_command(output)
    url, options = _url_and_options(settings, output, secret_values)
    backend = settings.pulumi_backend.get_secret_value() if settings.pulumi_backend else None
    try:
        engine = PulumiEngine(url, options, backend=backend, command=command)
    except EngineError as exc:  # no KLIV_SECRET_KEY, say
        _fail("engine not available", exc.message, exc.hint, output, EXIT_FAILED, exc.code)
    _close_with_command(engine)
    return engine


def _pulumi_command(output: Output) -> Any:
    """The process's one PulumiCommand; without the `pulumi` CLI, exit 3 (nothing has been touched)."""
    from kliv.stacks.pulumi.engine import PulumiMissingError, pulumi_command

    try:
        return pulumi_command()
    except PulumiMissingError as exc:
        _fail("engine not available", exc.message, exc.hint, output, EXIT_FAILED, exc.code)


def _close_with_command(engine: PostgresEngine | PulumiEngine) -> None:
    context = get_current_context(silent=True)
    if context is not None:
        context.call_on_close(engine.close)  # in-process callers (tests, agents) keep no connections


def _url_and_options(
    settings: Settings, output: Output, secret_values: SecretValues | None
) -> tuple[str, ProviderOptions]:
    from kliv.stacks import embedded

    url = settings.database_url or embedded.running_url()
    if url is None:
        _fail(
            "no Postgres server",
            "KLIV_DATABASE_URL is not set and the embedded server is not running",
            "run `kliv up` (embedded Postgres), or set KLIV_DATABASE_URL",
            output,
            EXIT_FAILED,
        )

    options = _provider_options(settings)
    if secret_values is not None:
        options = dataclasses.replace(options, secret_values=secret_values)
    return url, options


def _provider_options(settings: Settings) -> ProviderOptions:
    """Buckets and secrets: filesystem buckets and the postgres store unless configured otherwise."""
    import os

    from kliv.stacks import embedded
    from kliv.stacks.providers import ProviderOptions
    from kliv.stacks.secrets.provider import environment_values

    key = settings.secret_key.get_secret_value() if settings.secret_key else None
    if key is None and settings.database_url is None:
        key = embedded.secret_key()  # the embedded setup keeps its own key beside its data
    previous = settings.secret_previous_keys.get_secret_value().split(",") if settings.secret_previous_keys else []
    return ProviderOptions(
        buckets_dir=settings.buckets_dir or embedded.data_home() / "buckets",
        secret_values=environment_values(dict(os.environ), _own_credentials(settings, key)),
        s3_endpoint=settings.s3_endpoint,
        region=settings.region,
        secret_store=settings.secret_store,
        secrets_endpoint=settings.secrets_endpoint,
        secret_key=key,
        previous_secret_keys=tuple(k.strip() for k in previous if k.strip()),
        adoptable_buckets=tuple(settings.adopt_buckets),
        functions_target=settings.functions_target,
        lambda_endpoint=settings.lambda_endpoint,
        lambda_role=settings.lambda_role,
        api_url=(settings.api_url or "http://127.0.0.1:54321").rstrip("/"),
    )


def _own_credentials(settings: Settings, key: str | None) -> list[str]:
    """kliv's own secrets, wherever they were configured: never a project's secret value."""
    from urllib.parse import unquote, urlsplit

    from psycopg.conninfo import conninfo_to_dict

    previous = settings.secret_previous_keys.get_secret_value().split(",") if settings.secret_previous_keys else []
    found = [key or "", *previous]
    if settings.database_url:
        found.append(settings.database_url)
        # A libpq URL or DSN (`host=... password=...`), as libpq reads it (percent-decoded).
        with contextlib.suppress(Exception):
            found.append(str(conninfo_to_dict(settings.database_url).get("password") or ""))
    if settings.amqp_url:
        found.append(settings.amqp_url)
        with contextlib.suppress(ValueError):  # a malformed URL has no password to find
            found.append(unquote(urlsplit(settings.amqp_url).password or ""))
    return [value.strip() for value in found if value.strip()]
