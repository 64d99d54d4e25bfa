"""The ``kliv`` command: validate, plan and apply specs; run the embedded Postgres; generate CRDs.

Thin by design: each command loads settings, calls the core packages and
renders what they return, as rich text for people or JSON for agents. Heavy
imports happen inside the commands, so ``kliv validate`` never pays for the
database driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import getpass
import json
import signal
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import SecretStr, ValidationError

# typer (>= 0.29) runs on a click of its own: its contexts and usage errors are that click's, not the
# click package's (whose get_current_context() sees no typer command).
from typer._click.core import Context as ClickContext
from typer._click.exceptions import UsageError
from typer._click.globals import get_current_context
from typer.core import TyperGroup

from kliv import __version__, rendering
from kliv.rendering import escape

if TYPE_CHECKING:
    from kliv.config import Settings
    from kliv.specs import Validation
    from kliv.stacks import Plan, PostgresEngine, PostgresPrepared
    from kliv.stacks.providers import ProviderOptions
    from kliv.stacks.secrets.keys import Keyring
    from kliv.stacks.secrets.provider import SecretValues


class _InvalidUsageError(UsageError):
    exit_code = 1  # EXIT_INVALID


class _Commands(TyperGroup):
    """Usage errors (an unknown option, a bad value) exit 1 like invalid specs, not click's 2,
    which kliv's contract gives to refused plans."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_types(self)

    def make_context(
        self, info_name: str | None, args: list[str], parent: ClickContext | None = None, **extra: Any
    ) -> ClickContext:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _InvalidUsageError:
            raise
        except UsageError as exc:
            raise _InvalidUsageError(exc.format_message(), exc.ctx) from None

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except _InvalidUsageError:
            raise
        except UsageError as exc:
            raise _InvalidUsageError(exc.format_message(), exc.ctx) from None


_PLAIN_TYPES = {"path": "PATH", "str": "TEXT", "text": "TEXT", "int": "INTEGER", "int range": "INTEGER",
                "float": "NUMBER"}  # fmt: skip


def _plain_types(command: Any) -> None:
    """Help shows what to type (PATH..., TEXT, text|json), not Python annotations (<list[Path]>, <bool>)."""

    def shown(param: Any, ctx: ClickContext) -> str | None:
        if getattr(param, "is_flag", False):
            return None
        if getattr(param, "metavar", None):
            return str(param.metavar)
        label = str(param.display_type(ctx)).strip("<>")
        many = label.startswith("list[")
        label = label.removeprefix("list[").removesuffix("]") if many else label
        # An argument takes several values; a repeatable option is written once per value.
        several = param.param_type_name == "argument" and (many or param.nargs != 1)
        return _PLAIN_TYPES.get(label.lower(), label) + ("..." if several else "")

    for param in getattr(command, "params", []):
        setattr(param, "display_type_rich", lambda ctx, param=param: shown(param, ctx))  # noqa: B010
    help_option = command.get_help_option

    def plain_help_option(ctx: ClickContext) -> Any:
        option = help_option(ctx)
        if option is not None:
            setattr(option, "display_type_rich", lambda ctx: None)  # noqa: B010
        return option

    setattr(command, "get_help_option", plain_help_option)  # noqa: B010
    for child in getattr(command, "commands", {}).values():
        _plain_types(child)


app = typer.Typer(
    name="kliv",
    cls=_Commands,
    help="Kliv Cloud control plane: make Postgres, buckets, secrets and email templates match declarative specs "
    "(functions: validated, not deployed yet).",
    rich_markup_mode="markdown",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_REFUSED = 2
EXIT_FAILED = 3
EXIT_PARTIAL = 4


class Output(StrEnum):
    text = "text"
    json = "json"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="text for people, json for agents.")]
SplitOption = Annotated[
    bool,
    typer.Option(
        "--split",
        help="Consent to several transactions when one would not fit the server's lock table (each is "
        "recorded and audited as it commits; a failure half-way leaves the earlier ones applied).",
    ),
]
AdoptOption = Annotated[
    list[str] | None,
    typer.Option(
        "--adopt",
        metavar="BUCKET",
        help="Consent to adopting this existing bucket (name or shell pattern; repeatable) for a Bucket "
        'annotated cloud.kliv.dev/adopt: "true". The plan still marks it destructive (--allow-data-loss).',
    ),
]
PathsArgument = Annotated[list[Path], typer.Argument(help="Spec files or folders of YAML files.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kliv {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Kliv Cloud control plane."""


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def _settings(output: Output, adopt: list[str] | None = None) -> Settings:
    from kliv import policies
    from kliv.config import load_settings

    try:
        settings = load_settings()
        if adopt:
            settings = settings.model_copy(update={"adopt_buckets": [*settings.adopt_buckets, *adopt]})
    except ValidationError as exc:
        # Never the input: a URL or a key may be in it.
        fields = [f"KLIV_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
        _fail("configuration error", "\n".join(fields), "fix kliv.toml or the KLIV_* variables", output, EXIT_INVALID)
    except ValueError as exc:
        _fail("configuration error", str(exc), "fix kliv.toml or the KLIV_* variables", output, EXIT_INVALID)
    errors = policies.check_settings(settings.policies)
    if errors:
        _fail("configuration error", "\n".join(errors), "fix the [policies] table of kliv.toml", output, EXIT_INVALID)
    return settings


def _validate(paths: list[Path], settings: Settings) -> Validation:
    from kliv import policies
    from kliv.specs import load

    # load() keeps the cyclic collector off while it builds the spec set and freezes the set after.
    validation = load(paths)
    validation.problems += policies.evaluate(validation.specs, settings.policies)
    return validation


def _fail(title: str, message: str, hint: str, output: Output, code: int, cause: str = "") -> NoReturn:
    """``cause``: the error's stable code, for JSON readers (agents branch on it, not on words)."""
    if output is Output.json and code == EXIT_INVALID:
        error = {"file": "kliv.toml", "kind": "", "name": "", "path": "", "message": message, "hint": hint}
        _emit({"valid": False, "errors": [error], "warnings": []})
    elif output is Output.json:
        _emit({"error": title, "message": message, "hint": hint, **({"code": cause} if cause else {})})
    else:
        err = rendering.console(stderr=True)
        err.print(f"[red bold]{escape(title)}:[/] {escape(message)}")
        if hint:
            err.print(f"  [green]hint:[/] {escape(hint)}")
    raise typer.Exit(code)


@app.command()
def validate(paths: PathsArgument, output: OutputOption = Output.text) -> None:
    """Validate specs offline: models, SQL fragments, cross-references and guardrails.

    Exit 0 when valid (warnings allowed), 1 when any error was found.
    """
    validation = _validate(paths, _settings(output))
    if output is Output.json:
        _emit(_validation_json(validation))
    else:
        rendering.problems(validation.errors + validation.warnings)
        rendering.validation_summary(
            validation.valid, len(validation.errors), len(validation.warnings), validation.specs
        )
    raise typer.Exit(EXIT_OK if validation.valid else EXIT_INVALID)


def _validation_json(validation: Validation) -> dict[str, Any]:
    return {
        "valid": validation.valid,
        "errors": [p.to_json() for p in validation.errors],
        "warnings": [p.to_json() for p in validation.warnings],
        "documents": validation.specs.documents,
        "projects": len([g for g in validation.specs.projects.values() if g.project]),
    }


def _valid_or_exit(validation: Validation, output: Output) -> None:
    """Spec errors exit 1; guardrail errors (valid specs, refused design) exit 2."""
    if validation.valid:
        if output is Output.text:
            rendering.problems(validation.warnings)
        return
    if output is Output.json:
        _emit(_validation_json(validation))
    else:
        rendering.problems(validation.errors + validation.warnings)
        rendering.validation_summary(False, len(validation.errors), len(validation.warnings), validation.specs)
    only_guardrails = all(p.rule for p in validation.errors)
    raise typer.Exit(EXIT_REFUSED if only_guardrails else EXIT_INVALID)


def _engine(settings: Settings, output: Output, secret_values: SecretValues | None = None) -> PostgresEngine:
    """The engine with its providers; ``secret_values``: where ProjectSecret values come from (default:
    the CLI's environment, never kliv's own credentials)."""
    from kliv.stacks import PostgresEngine, embedded

    if settings.engine != "native":
        _fail(
            "engine not available",
            f"KLIV_ENGINE={settings.engine}: the Pulumi engine is not built yet; nothing was changed",
            "unset KLIV_ENGINE (or set it to native) to use the native engine",
            output,
            EXIT_FAILED,
        )
    url = settings.database_url or embedded.running_url()
    if url is None:
        _fail(
            "no Postgres server",
            "KLIV_DATABASE_URL is not set and the embedded server is not running",
            "run `kliv up` (embedded Postgres), or set KLIV_DATABASE_URL",
            output,
            EXIT_FAILED,
        )
    from kliv.stacks.providers import attach

    options = _provider_options(settings)
    if secret_values is not None:
        options = dataclasses.replace(options, secret_values=secret_values)
    engine = attach(PostgresEngine(url), options)
    context = get_current_context(silent=True)
    if context is not None:
        context.call_on_close(engine.close)  # in-process callers (tests, agents) keep no connections
    return engine


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


def _prepare(
    engine: PostgresEngine, validation: Validation, output: Output, split: bool = False
) -> list[PostgresPrepared]:
    from kliv.stacks import EngineError
    from kliv.stacks.errors import AlreadyExistsError, PlanRefusedError, SourceRefusedError

    prepared = []
    for group in validation.specs.projects.values():
        if group.project is None:
            continue
        try:
            item = engine.plan(group, split=split)
        except (PlanRefusedError, AlreadyExistsError) as exc:
            _fail("refused", exc.message, exc.hint, output, EXIT_REFUSED)
        except EngineError as exc:
            _fail("plan failed", exc.message, exc.hint, output, EXIT_FAILED)
        if item.problems:
            # Nothing is applied while a resource cannot even be planned: fix it first. A name that is
            # not ours or a source kliv never reads is refused (2); a value not there yet fails (3).
            problems = list(item.problems.values())
            message = "\n".join(p.message for p in problems)
            refused = all(isinstance(p, AlreadyExistsError | SourceRefusedError) for p in problems)
            _fail("refused" if refused else "plan failed", message, problems[0].hint, output,
                  EXIT_REFUSED if refused else EXIT_FAILED)  # fmt: skip
        prepared.append(item)
    return prepared


def _show(plans: list[Plan], output: Output, show_sql: bool, extra: dict[str, Any] | None = None) -> None:
    if output is Output.json:
        _emit({"plans": [p.to_json() for p in plans], **(extra or {})})
    else:
        for result in plans:
            rendering.plan(result, show_sql)


@app.command()
def plan(
    paths: PathsArgument,
    output: OutputOption = Output.text,
    show_sql: Annotated[bool, typer.Option("--sql", help="Show the SQL of every step.")] = False,
    adopt: AdoptOption = None,
    split: SplitOption = False,
    save: Annotated[
        bool,
        typer.Option("--save", help="Store the plan in the control database for an hour: `kliv apply --plan ID`."),
    ] = False,
) -> None:
    """Show what `kliv apply` would change, grouped by resource with its risk; change nothing."""
    settings = _settings(output, adopt)
    validation = _validate(paths, settings)
    _valid_or_exit(validation, output)
    engine = _engine(settings, output)
    prepared = _prepare(engine, validation, output, split)
    extra: dict[str, Any] = {"warnings": [w.to_json() for w in validation.warnings]}
    ids = _save_plans(engine, validation, prepared) if save else {}
    if output is Output.json:
        _emit({"plans": [{**p.plan.to_json(), **_plan_id(ids, p)} for p in prepared], **extra})
        return
    _show([p.plan for p in prepared], output, show_sql, extra)
    for item in prepared:
        if item.plan.project in ids:
            found = ids[item.plan.project]
            rendering.console().print(f"[bold]plan id[/] of {escape(item.plan.project)}: {found}  "
                                      f"[dim](valid for an hour: kliv apply --plan {found})[/]")  # fmt: skip


def _plan_id(ids: dict[str, str], item: PostgresPrepared) -> dict[str, str]:
    return {"planId": ids[item.plan.project]} if item.plan.project in ids else {}


def _save_plans(engine: PostgresEngine, validation: Validation, prepared: list[PostgresPrepared]) -> dict[str, str]:
    """Store each project's plan; plan ids by the plan's project ref."""
    from kliv.stacks import stored_plans

    groups = validation.specs.projects
    control = engine.control_session()
    return {
        item.plan.project: stored_plans.store(control, groups[(item.namespace, item.project)], item, getpass.getuser())
        for item in prepared
    }


@app.command()
def apply(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Spec files or folders of YAML files (none with --plan).")
    ] = None,
    allow_data_loss: Annotated[
        bool, typer.Option("--allow-data-loss", help="Apply changes that drop data or weaken security.")
    ] = False,
    output: OutputOption = Output.text,
    show_sql: Annotated[bool, typer.Option("--sql", help="Show the SQL of every step.")] = False,
    adopt: AdoptOption = None,
    split: SplitOption = False,
    plan_id: Annotated[
        str | None,
        typer.Option(
            "--plan",
            metavar="ID",
            help="Apply the plan `kliv plan --save` stored, only if reality "
            "still gives that plan (its specs are the stored ones).",
        ),
    ] = None,
) -> None:
    """Make reality match the specs.

    Exit 0 applied (or nothing to do), 1 invalid, 2 refused, 3 failed and nothing changed,
    4 failed after a partial change (what changed is reported).
    """
    settings = _settings(output, adopt)
    if plan_id is not None:
        if paths:
            _fail("usage", "give spec paths or --plan, not both", "the stored plan holds its specs", output, 2)
        _apply_stored(plan_id, settings, allow_data_loss, output, show_sql, split)
        return
    if not paths:
        _fail("usage", "no spec files or folders given", "kliv apply PATH... (or --plan ID)", output, 2)
    validation = _validate(paths, settings)
    _valid_or_exit(validation, output)
    engine = _engine(settings, output)
    prepared = _prepare(engine, validation, output, split)
    _apply(engine, prepared, allow_data_loss, output, show_sql, validation, settings)


def _apply_stored(
    plan_id: str, settings: Settings, allow_data_loss: bool, output: Output, show_sql: bool, split: bool
) -> None:
    """`kliv apply --plan ID`: the stored specs, planned again; refused (2) unless the plan is unchanged."""
    from kliv import policies
    from kliv.specs import Document, Source, validate_documents
    from kliv.stacks import stored_plans
    from kliv.stacks.errors import StoredPlanError

    engine = _engine(settings, output)
    control = engine.control_session()
    try:
        stored = stored_plans.load(control, plan_id)
    except StoredPlanError as exc:
        _fail("refused", exc.message, exc.hint, output, EXIT_REFUSED, exc.code)
    source = f"plan {stored.id}"
    validation = validate_documents([Document(Source(source, i), d) for i, d in enumerate(stored.documents)])
    validation.problems += policies.evaluate(validation.specs, settings.policies)
    _valid_or_exit(validation, output)
    prepared = _prepare(engine, validation, output, split)
    try:
        for item in prepared:
            stored_plans.check(stored, item)
        # A refusal leaves the id usable (with --allow-data-loss); anything else uses it up first.
        refused = any(item.plan.refused(allow_data_loss) for item in prepared)
        if not refused and not stored_plans.claim(control, stored.id):
            raise StoredPlanError("plan-applied", f"plan {stored.id} was applied already, or expired", "plan again")
    except StoredPlanError as exc:
        _fail("refused", exc.message, exc.hint, output, EXIT_REFUSED, exc.code)
    try:
        _apply(engine, prepared, allow_data_loss, output, show_sql, validation, settings)
    except typer.Exit as exit_:
        if exit_.exit_code == EXIT_FAILED:  # nothing changed: the plan may still be applied
            stored_plans.release(engine.control_session(), stored.id)
        raise


def _apply(
    engine: PostgresEngine,
    prepared: list[PostgresPrepared],
    allow_data_loss: bool,
    output: Output,
    show_sql: bool,
    validation: Validation,
    settings: Settings,
    report: bool = True,
) -> None:
    """``report``: print the outcome (False: the caller prints its own, e.g. `kliv up --output json`)."""
    from kliv.stacks import ApplyFailedError, EngineError, RefusedError
    from kliv.stacks.errors import ExternalFailedError

    refused = [c for p in prepared for c in p.plan.refused(allow_data_loss)]
    if refused:
        # Nothing is applied when any project is refused: a partial rollout is harder to reason about.
        for item in prepared:
            if item.plan.refused(allow_data_loss):
                with contextlib.suppress(RefusedError):  # queues the `refused` events, applies nothing
                    engine.apply(item, allow_data_loss, actor=getpass.getuser())
        _deliver_events(settings, engine.admin_url, output)
        error = RefusedError(refused)
        _record_statuses(engine, validation, prepared, refused_unless=allow_data_loss)
        warnings = [w.to_json() for w in validation.warnings]
        _show([p.plan for p in prepared], output, show_sql,
              {"applied": False, "refused": error.message, "warnings": warnings})  # fmt: skip
        if output is Output.text:
            _fail("refused", error.message, error.hint, output, EXIT_REFUSED)
        raise typer.Exit(EXIT_REFUSED)
    if output is Output.text:
        _show([p.plan for p in prepared], output, show_sql)
    actor = getpass.getuser()
    done: list[str] = []
    try:
        for item in prepared:
            try:
                engine.apply(item, allow_data_loss, actor=actor)
                _record_statuses(engine, validation, [item])
            except (ApplyFailedError, ExternalFailedError, EngineError) as exc:
                # A bucket or secret that failed fails alone (item.failures); anything else fails all.
                whole = None if isinstance(exc, ExternalFailedError) else exc
                _record_statuses(engine, validation, [item], failure=whole)
                # Exit 4 when anything stayed changed: this project's earlier steps, or other projects.
                partial = bool(getattr(exc, "changed", ())) or bool(done)
                message = exc.message + (f"\n  applied before, in full: {', '.join(done)}" if done else "")
                _fail(f"apply failed for {item.plan.project}", message, exc.hint, output,
                      EXIT_PARTIAL if partial else EXIT_FAILED)  # fmt: skip
            done.append(item.plan.project)
    finally:
        _deliver_events(settings, engine.admin_url, output)
    if not report:
        return
    if output is Output.json:
        warnings = [w.to_json() for w in validation.warnings]
        _emit({"plans": [p.plan.to_json() for p in prepared], "applied": True, "actor": getpass.getuser(),
               "warnings": warnings})  # fmt: skip
    else:
        changed = sum(1 for p in prepared for c in p.plan.changes if c.action != "noop")
        rendering.console().print(f"[green bold]✓ applied[/]: {changed} change{'s' * (changed != 1)}")


def _record_statuses(
    engine: PostgresEngine,
    validation: Validation,
    prepared: list[PostgresPrepared],
    refused_unless: bool | None = None,
    failure: Exception | None = None,
) -> None:
    """Each object's status in the control database, as the operator keeps it (DESIGN.md, "Status,
    events, audit"): ready, refused with how to allow it, or failed with what may be shown."""
    from kliv.stacks import statuses
    from kliv.stacks.errors import ApplyFailedError, EngineError

    for item in prepared:
        group = validation.specs.projects.get((item.namespace, item.project))
        if group is None:
            continue
        # ``refused_unless``: the run was refused (nothing applied); this project's refused changes.
        refusals = {c.resource: c for c in item.plan.refused(refused_unless)} if refused_unless is not None else {}
        blocked = refused_unless is not None
        failures: dict[str, Exception] = {**item.failures}
        states = []
        for spec in group:
            resource = spec.resource
            generation = resource.metadata.generation
            change = refusals.get(resource.ref)
            problem = failures.get(resource.ref) or failure
            if change is not None:
                message = f"Refused: {'; '.join(change.summary)} ({change.risk}); apply with --allow-data-loss."
                states.append(statuses.failed(resource.KIND, resource.name, generation, "DataLossRefused", message))
            elif resource.ref in item.plan.not_supported:
                why = item.plan.not_supported[resource.ref]
                states.append(statuses.failed(resource.KIND, resource.name, generation, "NotSupported", why))
            elif blocked:
                on = ", ".join(sorted(refusals)) or "another project of this run"
                message = f"Waiting: nothing was applied; refused changes on {on}."
                states.append(statuses.failed(resource.KIND, resource.name, generation, "WaitingForDependency",
                                              message))  # fmt: skip
            elif problem is not None:
                # Postgres' own text can quote row data: only what an event may carry.
                shown = problem.public if isinstance(problem, ApplyFailedError) else getattr(problem, "message", "")
                code = problem.code if isinstance(problem, EngineError) else "engine-error"
                states.append(statuses.failed(resource.KIND, resource.name, generation, "ReconcileError",
                                              f"{code}: {shown or type(problem).__name__}"))  # fmt: skip
            else:
                found = item.outputs.get(resource.ref, {})
                states.append(statuses.ready(resource.KIND, resource.name, generation, found))
        try:
            engine.record_statuses(item.namespace, item.project, states, f"kliv apply ({getpass.getuser()})")
        except Exception as exc:  # a status is a report: never the reason an apply fails
            rendering.console(stderr=True).print(
                f"[yellow]warning:[/] statuses of {escape(item.plan.project)} not recorded ({type(exc).__name__})"
            )


def _deliver_events(settings: Settings, database_url: str, output: Output) -> None:
    """Relay queued audit events now when RabbitMQ is configured; otherwise they wait in the outbox."""
    import logging

    import structlog

    from kliv.operator.running import relay_for

    # Only a warning, and on stderr: the command's own output (text or JSON) stays whole.
    quiet = structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr), wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )
    relaying = relay_for(settings, database_url, logger=quiet)
    if relaying is None:
        return
    try:
        asyncio.run(relaying.drain(timeout=30))
    except Exception as exc:
        if output is Output.text:
            rendering.console(stderr=True).print(
                f"[yellow]! audit events stay in the outbox ({escape(type(exc).__name__)}); "
                "`kliv relay` delivers them when RabbitMQ is back[/]"
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
    """Start the embedded Postgres (reused if running) unless KLIV_DATABASE_URL is set, apply, print how
    to connect: database_url (the application's login, through RLS) and admin_url per project."""  # fmt: skip
    from kliv.stacks import embedded

    settings = _settings(output, adopt)
    validation = _validate([path], settings)
    _valid_or_exit(validation, output)
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
    engine = _engine(settings, output)
    prepared = _prepare(engine, validation, output, split)
    _apply(engine, prepared, allow_data_loss, output, False, validation, settings, report=output is Output.text)
    keyring = _provider_options(settings).keyring()  # derived once, not per project
    projects = [_connection(engine, keyring, item, output, address) for item in prepared]
    if output is Output.json:
        _emit({"projects": projects, "plans": [p.plan.to_json() for p in prepared], "applied": True,
               "warnings": [w.to_json() for w in validation.warnings]})  # fmt: skip
        return
    for item, info in zip(prepared, projects, strict=True):
        rendering.project_connection(item, info, out)
    if settings.database_url and embedded.running_url() == settings.database_url:
        out.print("\nStop the embedded server with `kliv down` (data is kept).")


def _connection(
    engine: PostgresEngine,
    keyring: Keyring | None,
    item: PostgresPrepared,
    output: Output,
    address: tuple[str, int] | None,
) -> dict[str, Any]:
    """What `kliv up` prints for one project (DESIGN.md, "Local platform")."""
    from kliv.stacks import EngineError
    from kliv.stacks.postgres import authenticator, urls

    info: dict[str, Any] = {"namespace": item.namespace, "name": item.project, "database": item.desired.name}
    if keyring is not None:
        try:
            password, reset = authenticator.ensure(
                engine.admin_session(), engine.control_session(), keyring, item.namespace, item.project,
                item.desired.authenticator, list(item.desired.roles.values()),
            )  # fmt: skip
        except authenticator.ForeignLoginError as exc:
            _fail("refused", f"{item.plan.project}: {exc.message}", exc.hint, output, EXIT_REFUSED)
        except EngineError as exc:  # the apply is done; only the login could not be prepared
            _fail("no application login", f"{item.plan.project}: {exc.message}",
                  exc.hint or "check KLIV_SECRET_KEY (the key the secret store was written with)", output,
                  EXIT_FAILED)  # fmt: skip
        info["login_password_set"] = reset
        info["database_url"] = urls.database_url(engine.admin_url, item.desired.authenticator, password,
                                                 item.desired.name, address)  # fmt: skip
    info["admin_url"] = urls.admin_url(engine.admin_url, item.desired.name)
    info["roles"] = {**item.desired.roles, "authenticator": item.desired.authenticator}
    info["tables"] = sorted(item.desired.tables)
    info["outputs"] = {ref: dict(found) for ref, found in sorted(item.outputs.items())}
    return info


@app.command()
def down() -> None:
    """Stop the embedded Postgres started by `kliv up` (its data is kept)."""
    from kliv.stacks import embedded

    out = rendering.console()
    if embedded.stop():
        out.print(f"[green]✓[/] stopped the embedded Postgres (data kept in {embedded.pgdata()})")
    else:
        out.print("the embedded Postgres is not running")


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
    engine = _engine(settings, Output.text, cluster_secrets.value)
    webhook = None
    if webhook_cert is not None and webhook_key is not None:
        webhook = Webhook(webhook_cert, webhook_key, webhook_port, webhook_address, webhook_client_ca)
    run(engine, settings, cluster_secrets, namespaces=namespace or [], liveness=liveness,
        metrics_port=metrics_port, webhook=webhook, peering=peering, priority=priority)  # fmt: skip


@app.command()
def crds(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the manifests to.")] = Path("crds"),
) -> None:
    """Regenerate the CRD manifests and per-kind JSON Schemas from the spec models."""
    from kliv.specs.crds import write

    try:
        written = write(out)
    except OSError as exc:
        _fail("cannot write the CRDs", f"{out}: {exc.strerror}", "give a folder you may write to", Output.text,
              EXIT_INVALID)  # fmt: skip
    rendering.console().print(f"[green]✓[/] wrote {len(written)} files to {escape(str(out))}/")


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


def main() -> None:
    """Console-script entry point: an error no command foresaw is one line, never a traceback
    (``KLIV_TRACEBACK=1`` shows it)."""
    import os

    try:
        app()
    except SystemExit:
        # Whatever the command loaded (specs, catalogs) dies with the process: the interpreter's
        # final collection would only walk it (measured: a quarter of a no-change `kliv plan`).
        gc.freeze()
        raise
    except Exception as exc:
        if os.environ.get("KLIV_TRACEBACK"):
            raise
        from kliv.stacks.events import mask

        message = mask(str(exc).strip().splitlines()[0][:300]) if str(exc).strip() else ""
        rendering.console(stderr=True).print(
            f"[red bold]unexpected error:[/] {escape(type(exc).__name__)}: {escape(message)}\n"
            "  [green]hint:[/] this is a bug in kliv; KLIV_TRACEBACK=1 shows where it happened"
        )
        raise SystemExit(EXIT_FAILED) from None
