"""``kliv up`` and ``kliv down``: the embedded local platform (DESIGN.md, "Local platform")."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import SecretStr

# typer (>= 0.29) runs on a click of its own: its contexts and usage errors are that click's, not the
# click package's (whose get_current_context() sees no typer command).
from kliv import rendering

if TYPE_CHECKING:
    from kliv.config import Settings
    from kliv.stacks import Prepared
    from kliv.stacks.engines import Planner
    from kliv.stacks.postgres.desired import DatabaseState
    from kliv.stacks.secrets.keys import Keyring


from kliv.cli.options import (
    EXIT_FAILED,
    EXIT_REFUSED,
    AdoptOption,
    Output,
    OutputOption,
    SplitOption,
    _emit,
    _fail,
    _settings,
    _validate,
    app,
)
from kliv.cli.reconciling import (
    _apply,
    _prepare,
    _valid_or_exit,
)
from kliv.cli.wiring import (
    _planner,
    _provider_options,
    _pulumi_command,
)


@app.command()
def up(
    path: Annotated[
        Path,
        typer.Argument(
            help="Spec file or folder to apply (default: the current folder; hidden folders and "
            "other APIs' manifests in it are skipped)."
        ),
    ] = Path("."),
    allow_data_loss: Annotated[
        bool, typer.Option("--allow-data-loss", help="Apply changes that drop data or weaken security.")
    ] = False,
    adopt: AdoptOption = None,
    split: SplitOption = False,
    output: OutputOption = Output.text,
) -> None:
    """Start the embedded Postgres (reused if running) unless KLIV_DATABASE_URL is set, and kliv serve; apply;
    print how to connect: database_url (the application's login, through RLS), admin_url, api_url, anon_key
    and each function's URL per project."""  # fmt: skip
    from kliv.stacks import embedded

    settings = _settings(output, adopt)
    validation = _validate([path], settings)
    _valid_or_exit(validation, output)
    if settings.engine == "pulumi":
        _pulumi_command(output)  # before anything starts: without the CLI, exit 3 and change nothing
    out = rendering.console(stderr=output is Output.json)
    address = None
    if settings.database_url is None:
        with out.status("starting the embedded Postgres…"):
            url, reused = embedded.start()
        address = embedded.application_address()
        where = f"{address[0]}:{address[1]}" if address else "a unix socket"
        out.print(f"[green]✓[/] Postgres {'already running' if reused else 'started'} on {where} "
                  f"(data in {embedded.pgdata()})")  # fmt: skip
        update: dict[str, Any] = {"database_url": url}
        if settings.secret_key is None:
            update["secret_key"] = SecretStr(embedded.secret_key())
        settings = settings.model_copy(update=update)
    api_base = _start_serving(settings, out, output)
    settings = settings.model_copy(update={"api_url": api_base})
    engine = _planner(settings, output)
    prepared = _prepare(engine, validation, output, split)
    _apply(engine, prepared, allow_data_loss, output, False, validation, settings, report=output is Output.text)
    keyring = _provider_options(settings).keyring()  # derived once, not per project
    projects = [_connection(engine, keyring, item, output, address, api_base) for item in prepared]
    if output is Output.json:
        _emit({"projects": projects, "plans": [p.plan.to_json() for p in prepared], "applied": True,
               "warnings": [w.to_json() for w in validation.warnings]})  # fmt: skip
        return
    for item, info in zip(prepared, projects, strict=True):
        rendering.project_connection(item, info, out)
    embedded_running = settings.database_url and embedded.running_url() == settings.database_url
    out.print(f"\nStop {'the embedded Postgres and ' if embedded_running else ''}kliv serve with `kliv down` "
              "(data is kept).")  # fmt: skip


def _start_serving(settings: Settings, out: Any, output: Output) -> str:
    """Start (or reuse) `kliv serve` in the background; returns its base URL."""
    from kliv.serving import background

    assert settings.database_url is not None
    key = settings.secret_key.get_secret_value() if settings.secret_key else None
    try:
        with out.status("starting kliv serve…"):
            port, reused = background.start(settings.database_url, key)
    except RuntimeError as exc:
        _fail("kliv serve did not start", str(exc), f"read {background.log_file()}", output, EXIT_FAILED)
    out.print(f"[green]✓[/] kliv serve {'already running' if reused else 'started'} on http://127.0.0.1:{port}")
    return f"http://127.0.0.1:{port}"


def _desired(item: Prepared) -> DatabaseState:
    """The project database a plan is for, whichever engine made it."""
    from kliv.stacks.postgres.planning import PostgresPrepared

    native = getattr(item, "native", item)  # the Pulumi engine's plan keeps the native one beside it
    if not isinstance(native, PostgresPrepared):
        raise TypeError(f"no database state in {type(item).__name__}")
    return native.desired


def _connection(
    engine: Planner,
    keyring: Keyring | None,
    item: Prepared,
    output: Output,
    address: tuple[str, int] | None,
    api_base: str,
) -> dict[str, Any]:
    """What `kliv up` prints for one project (DESIGN.md, "Local platform")."""
    from kliv.stacks import EngineError
    from kliv.stacks.postgres import authenticator, urls

    desired = _desired(item)
    info: dict[str, Any] = {"namespace": item.namespace, "name": item.project, "database": desired.name}
    if keyring is not None:
        try:
            password, reset = authenticator.ensure(
                engine.admin_session(), engine.control_session(), keyring, item.namespace, item.project,
                desired.authenticator, list(desired.roles.values()),
            )  # fmt: skip
        except authenticator.ForeignLoginError as exc:
            _fail("refused", f"{item.plan.project}: {exc.message}", exc.hint, output, EXIT_REFUSED)
        except EngineError as exc:  # the apply is done; only the login could not be prepared
            _fail("no application login", f"{item.plan.project}: {exc.message}",
                  exc.hint or "check KLIV_SECRET_KEY (the key the secret store was written with)", output,
                  EXIT_FAILED)  # fmt: skip
        info["login_password_set"] = reset
        info["database_url"] = urls.database_url(engine.admin_url, desired.authenticator, password,
                                                 desired.name, address)  # fmt: skip
    info["admin_url"] = urls.admin_url(engine.admin_url, desired.name)
    info["api_url"] = f"{api_base}/p/{item.namespace}/{item.project}"
    if keyring is not None:
        from kliv.stacks.secrets import jwts

        secret = jwts.ensure(engine.control_session(), keyring, item.namespace, item.project)
        info["anon_key"] = jwts.key(secret, item.namespace, item.project, "anon")
    info["functions"] = {
        ref.rsplit("/", 1)[1]: found["url"]
        for ref, found in sorted(item.outputs.items())
        if ref.startswith("Function/") and "url" in found
    }
    info["roles"] = {**desired.roles, "authenticator": desired.authenticator}
    info["tables"] = sorted(desired.tables)
    info["outputs"] = {ref: dict(found) for ref, found in sorted(item.outputs.items())}
    return info


@app.command()
def down() -> None:
    """Stop kliv serve and the embedded Postgres started by `kliv up` (data is kept)."""
    from kliv.serving import background
    from kliv.stacks import embedded

    out = rendering.console()
    if background.stop():
        out.print("[green]✓[/] stopped kliv serve")
    else:
        out.print("kliv serve is not running")
    if embedded.stop():
        out.print(f"[green]✓[/] stopped the embedded Postgres (data kept in {embedded.pgdata()})")
    else:
        out.print("the embedded Postgres is not running")
