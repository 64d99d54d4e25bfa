"""``kliv validate``, ``kliv plan`` and ``kliv apply`` (by paths or by a stored plan id).

Each loads settings and specs, asks the engine for plans, and renders them as rich text
for people or JSON for agents, with the exit codes of the CLI contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

# typer (>= 0.29) runs on a click of its own: its contexts and usage errors are that click's, not the
# click package's (whose get_current_context() sees no typer command).
from kliv import rendering
from kliv.rendering import escape

if TYPE_CHECKING:
    from kliv.config import Settings
    from kliv.specs import ProjectSpecs, Validation
    from kliv.stacks import Plan, Prepared
    from kliv.stacks.engines import Planner


from kliv.cli.options import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_REFUSED,
    AdoptOption,
    EngineOption,
    Output,
    OutputOption,
    PathsArgument,
    SplitOption,
    _emit,
    _fail,
    _settings,
    _validate,
    app,
)
from kliv.cli.wiring import (
    _planner,
)


@app.command()
def validate(paths: PathsArgument, output: OutputOption = Output.text) -> None:
    """Validate specs offline: models, SQL fragments, cross-references and guardrails.

    Exit 0 when valid (warnings allowed), 1 when any error was found.
    """
    validation = _validate(paths, _settings(output))
    if output is Output.json:
        _emit(_validation_json(validation))
    else:
        rendering.problems(validation.errors + validation.warnings + validation.notes)
        rendering.validation_summary(
            validation.valid, len(validation.errors), len(validation.warnings), validation.specs, len(validation.notes)
        )
    raise typer.Exit(EXIT_OK if validation.valid else EXIT_INVALID)


def _validation_json(validation: Validation) -> dict[str, Any]:
    return {
        "valid": validation.valid,
        "errors": [p.to_json() for p in validation.errors],
        "warnings": [p.to_json() for p in validation.warnings],
        "notes": [p.to_json() for p in validation.notes],
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


def _prepare(engine: Planner, validation: Validation, output: Output, split: bool = False) -> list[Prepared]:
    from kliv.stacks import EngineError
    from kliv.stacks.errors import AlreadyExistsError, InvalidSourceError, PlanRefusedError, SourceRefusedError

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
            if all(isinstance(p, InvalidSourceError) for p in problems):  # the spec is the cause: invalid (1)
                _invalid_sources(group, item.problems, output)
            message = "\n".join(p.message for p in problems)
            refused = all(isinstance(p, AlreadyExistsError | SourceRefusedError) for p in problems)
            _fail("refused" if refused else "plan failed", message, problems[0].hint, output,
                  EXIT_REFUSED if refused else EXIT_FAILED)  # fmt: skip
        prepared.append(item)
    return prepared


def _invalid_sources(group: ProjectSpecs, problems: Mapping[str, Exception], output: Output) -> NoReturn:
    """Modules Deno refused, as validation errors: file, line and column in the file (inside an
    ``inline: |`` block), JSON pointer, Deno's message and a hint. Exit 1."""
    from kliv.specs.errors import Problem
    from kliv.stacks.errors import InvalidSourceError

    found = []
    for spec in group.functions:
        problem = problems.get(spec.resource.ref)
        if not isinstance(problem, InvalidSourceError):
            continue
        document, file = spec.document, spec.document.source.file
        try:
            text: str | None = Path(file).read_text()
        except OSError:
            text = None
        line, column = document.position_inside(problem.path, problem.line, problem.column, text)
        where = f" (line {problem.line}, column {problem.column} of the source)" if problem.line else ""
        found.append(Problem(problem.deno_message + where, problem.path, problem.hint, file,
                             document.source.document, line, column, "Function", spec.resource.name,
                             code=problem.code))  # fmt: skip
    if output is Output.json:
        _emit({"valid": False, "errors": [p.to_json() for p in found], "warnings": []})
    else:
        rendering.problems(found)
        rendering.console(stderr=True).print(
            f"[red]✗[/] invalid: {len(found)} function source{'s' * (len(found) != 1)} refused by Deno; nothing applied"
        )
    raise typer.Exit(EXIT_INVALID)


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
    engine_name: EngineOption = None,
    save: Annotated[
        bool,
        typer.Option("--save", help="Store the plan in the control database for an hour: `kliv apply --plan ID`."),
    ] = False,
) -> None:
    """Show what `kliv apply` would change, grouped by resource with its risk; change nothing."""
    settings = _settings(output, adopt, engine_name)
    validation = _validate(paths, settings)
    _valid_or_exit(validation, output)
    engine = _planner(settings, output)
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


def _plan_id(ids: dict[str, str], item: Prepared) -> dict[str, str]:
    return {"planId": ids[item.plan.project]} if item.plan.project in ids else {}


def _save_plans(engine: Planner, validation: Validation, prepared: list[Prepared]) -> dict[str, str]:
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
    engine_name: EngineOption = None,
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
    settings = _settings(output, adopt, engine_name)
    if plan_id is not None:
        if paths:
            _fail("usage", "give spec paths or --plan, not both", "the stored plan holds its specs", output,
                  EXIT_INVALID, "usage")  # fmt: skip
        _apply_stored(plan_id, settings, allow_data_loss, output, show_sql, split)
        return
    if not paths:
        _fail("usage", "no spec files or folders given", "kliv apply PATH... (or --plan ID)", output,
              EXIT_INVALID, "usage")  # fmt: skip
    validation = _validate(paths, settings)
    _valid_or_exit(validation, output)
    engine = _planner(settings, output)
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

    engine = _planner(settings, output)
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
    engine: Planner,
    prepared: list[Prepared],
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
              {"applied": False, "refused": error.message, "code": error.code, "hint": error.hint,
               "warnings": warnings})  # fmt: skip
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
    engine: Planner,
    validation: Validation,
    prepared: list[Prepared],
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
        outputs = item.outputs  # built once: each call assembles every resource's
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
                found = outputs.get(resource.ref, {})
                states.append(statuses.ready(resource.KIND, resource.name, generation, found))
        try:
            engine.record_statuses(item.namespace, item.project, states, f"kliv apply ({getpass.getuser()})")
        except Exception as exc:  # a status is a report: never the reason an apply fails
            rendering.console(stderr=True).print(
                f"[yellow]warning:[/] statuses of {escape(item.plan.project)} not recorded ({type(exc).__name__})"
            )


def _deliver_events(settings: Settings, database_url: str, output: Output) -> None:
    """Relay queued audit events now when RabbitMQ is configured; otherwise they wait in the outbox."""
    if not settings.amqp_url:
        return  # before any import: the relay's (kopf, aio-pika) cost a third of a second
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
