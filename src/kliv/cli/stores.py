"""``kliv secrets ...`` and ``kliv templates ...``: what the stores hold, without values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# typer (>= 0.29) runs on a click of its own: its contexts and usage errors are that click's, not the
# click package's (whose get_current_context() sees no typer command).
from kliv import rendering

if TYPE_CHECKING:
    from kliv.config import Settings


from kliv.cli.options import (
    EXIT_FAILED,
    EXIT_INVALID,
    Output,
    OutputOption,
    _emit,
    _fail,
    _settings,
    _validate,
    app,
)
from kliv.cli.reconciling import (
    _valid_or_exit,
)
from kliv.cli.wiring import (
    _engine,
    _provider_options,
)

secrets_app = typer.Typer(help="ProjectSecrets: list versions and fingerprints, rotate the key.", no_args_is_help=True)
templates_app = typer.Typer(help="EmailTemplates: render one with variables.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")
app.add_typer(templates_app, name="templates")


@secrets_app.command("list")
def secrets_list(
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project (name or ns/name).")] = None,
    output: OutputOption = Output.text,
) -> None:
    """Every secret's latest version: name, version, store, fingerprint (never a value)."""
    from kliv.stacks.secrets import store

    settings = _settings(output)
    engine = _engine(settings, output)
    with engine:
        versions = store.listing(engine.control_session(), project)
    if output is Output.json:
        _emit({"secrets": [{**dataclasses.asdict(v), "created_at": v.created_at.isoformat() if v.created_at else None}
                           for v in versions]})  # fmt: skip
    else:
        rendering.secrets(versions)


@secrets_app.command("rotate-key")
def secrets_rotate_key(output: OutputOption = Output.text) -> None:
    """Re-wrap every data key under KLIV_SECRET_KEY (older keys in KLIV_SECRET_PREVIOUS_KEYS).

    Values are not re-encrypted, only their data keys; reads keep working throughout.
    Afterwards the previous keys are no longer needed.
    """
    from kliv.stacks import EngineError
    from kliv.stacks.secrets import store

    settings = _settings(output)
    options = _provider_options(settings)
    try:
        keyring = options.keyring()
    except EngineError as exc:
        _fail("invalid key (nothing changed)", exc.message, exc.hint, output, EXIT_INVALID)
    if keyring is None:
        _fail("no key", "KLIV_SECRET_KEY is not set", "set the new key in KLIV_SECRET_KEY", output, EXIT_INVALID)
    engine = _engine(settings, output)
    try:
        with engine:
            rotation = store.rotate(engine.control_session(), keyring)
    except EngineError as exc:
        _fail("rotation failed (nothing changed)", exc.message, exc.hint, output, EXIT_FAILED)
    if output is Output.json:
        _emit(dataclasses.asdict(rotation))
    else:
        rendering.console().print(
            f"[green]✓[/] re-wrapped {rotation.rewrapped} key(s) under key {rotation.key_id}; "
            f"{rotation.already_current} already were. KLIV_SECRET_PREVIOUS_KEYS is no longer needed."
        )


_VARS_HINT = 'write a JSON object, e.g. --vars \'{"name": "Ada"}\''


@templates_app.command("render")
def templates_render(
    name: Annotated[str, typer.Argument(help="metadata.name of the EmailTemplate.")],
    variables: Annotated[
        str, typer.Option("--vars", help='Variables as a JSON object, e.g. \'{"name": "Ada"}\'.')
    ] = "{}",
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Project (name or ns/name) whose stored version to render.")
    ] = None,
    paths: Annotated[
        list[Path] | None, typer.Option("--from", help="Render from spec files instead of the database.")
    ] = None,
    output: OutputOption = Output.text,
) -> None:
    """Print the subject, HTML and text of a template rendered with --vars (exit 1 on a missing variable)."""
    from kliv.stacks import EngineError, emails

    try:
        values = json.loads(variables)
    except RecursionError:
        _fail("invalid --vars", "the JSON is nested too deeply", _VARS_HINT, output, EXIT_INVALID)
    except ValueError as exc:
        _fail(
            "invalid --vars", f"not JSON: {exc}", 'write a JSON object, e.g. \'{"name": "Ada"}\'', output, EXIT_INVALID
        )
    if not isinstance(values, dict):
        _fail("invalid --vars", "--vars must be a JSON object", _VARS_HINT, output, EXIT_INVALID)
    settings = _settings(output)
    template = (
        _template_from_specs(name, paths, settings, output)
        if paths
        else _stored_template(name, project, settings, output)
    )
    try:
        rendered = emails.render(template, values)
    except EngineError as exc:
        _fail(f"cannot render {name}", exc.message, exc.hint, output, EXIT_INVALID)
    if output is Output.json:
        _emit(rendered.to_json())
    else:
        rendering.email(rendered)


def _template_from_specs(name: str, paths: list[Path], settings: Settings, output: Output) -> dict[str, Any]:
    from kliv.stacks.postgres.templates import stored

    validation = _validate(paths, settings)
    _valid_or_exit(validation, output)
    found = [s.resource for g in validation.specs.projects.values() for s in g.templates if s.resource.name == name]
    if not found:
        _fail("no such template", f"no EmailTemplate named {name} in the specs", "check the name", output, EXIT_INVALID)
    return stored(found[0])


def _stored_template(name: str, project: str | None, settings: Settings, output: Output) -> dict[str, Any]:
    from kliv.stacks.postgres import sessions, templates

    engine = _engine(settings, output)
    with engine:
        control = engine.control_session()
        namespace, _, project_name = (project or "").rpartition("/")
        rows = control.execute(
            "SELECT r.namespace, r.project, p.database FROM inventory.resources r JOIN inventory.projects p "
            "ON p.namespace = r.namespace AND p.name = r.project WHERE r.kind = 'EmailTemplate' AND r.name = %s "
            "AND (%s = '' OR r.project = %s) AND (%s = '' OR r.namespace = %s)",
            [name, project_name, project_name, namespace, namespace],
        ).fetchall()
        if len(rows) != 1:
            problem = "no applied EmailTemplate" if not rows else f"{len(rows)} applied EmailTemplates"
            _fail(
                "cannot pick a template",
                f"{problem} named {name}",
                "name the project with --project, or use --from PATH",
                output,
                EXIT_INVALID,
            )
    with sessions.connect(engine.admin_url, rows[0][2]) as connection:
        template = templates.current(connection, name)
    if template is None:
        _fail("no such template", f"template {name} is retired", "apply its spec again", output, EXIT_INVALID)
    return template
