"""The ``kliv`` command line's frame: the typer app, its exit codes and options, and how a
command reads settings, validates specs, prints JSON and fails.

Imported by every command module of :mod:`kliv.cli`; heavy imports stay inside the commands,
so ``kliv validate`` never pays for the database driver.
"""

from __future__ import annotations

import enum
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

# typer (>= 0.29) runs on a click of its own: its contexts and usage errors are that click's, not the
# click package's (whose get_current_context() sees no typer command).
from typer._click.core import Context as ClickContext
from typer._click.exceptions import UsageError
from typer.core import TyperGroup

from kliv import __version__, rendering
from kliv.rendering import escape

if TYPE_CHECKING:
    from kliv.config import Settings
    from kliv.specs import Validation


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
    help="Kliv Cloud control plane: make Postgres, buckets, secrets, functions and email templates match "
    "declarative specs; `kliv serve` runs the functions.",
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


class EngineName(enum.StrEnum):
    native = "native"
    pulumi = "pulumi"


EngineOption = Annotated[
    EngineName | None,
    typer.Option("--engine", help="native, or pulumi (Pulumi stacks; needs the `pulumi` CLI). Default: KLIV_ENGINE."),
]
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


def _settings(output: Output, adopt: list[str] | None = None, engine: EngineName | None = None) -> Settings:
    from kliv import policies
    from kliv.config import load_settings

    try:
        settings = load_settings()
        if adopt:
            settings = settings.model_copy(update={"adopt_buckets": [*settings.adopt_buckets, *adopt]})
        if engine is not None:
            settings = settings.model_copy(update={"engine": engine.value})
    except ValidationError as exc:
        # Never the input: a URL or a key may be in it.
        fields = [f"KLIV_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
        _configuration_error("\n".join(fields), "fix kliv.toml or the KLIV_* variables", output)
    except ValueError as exc:
        _configuration_error(str(exc), "fix kliv.toml or the KLIV_* variables", output)
    errors = policies.check_settings(settings.policies)
    if errors:
        _configuration_error("\n".join(errors), "fix the [policies] table of kliv.toml", output)
    return settings


def _configuration_error(message: str, hint: str, output: Output) -> NoReturn:
    """Exit 1 for bad settings; in JSON, the validation shape, naming kliv.toml as the file."""
    if output is Output.json:
        error = {"file": "kliv.toml", "kind": "", "name": "", "path": "", "message": message, "hint": hint}
        _emit({"valid": False, "errors": [error], "warnings": []})
        raise typer.Exit(EXIT_INVALID)
    _fail("configuration error", message, hint, output, EXIT_INVALID)


def _validate(paths: list[Path], settings: Settings) -> Validation:
    from kliv import policies
    from kliv.specs import load

    # load() keeps the cyclic collector off while it builds the spec set and freezes the set after.
    validation = load(paths)
    validation.problems += policies.evaluate(validation.specs, settings.policies)
    return validation


def _fail(title: str, message: str, hint: str, output: Output, code: int, cause: str = "") -> NoReturn:
    """``cause``: the error's stable code, for JSON readers (agents branch on it, not on words)."""
    if output is Output.json:
        _emit({"error": title, "message": message, "hint": hint, **({"code": cause} if cause else {})})
    else:
        err = rendering.console(stderr=True)
        err.print(f"[red bold]{escape(title)}:[/] {escape(message)}")
        if hint:
            err.print(f"  [green]hint:[/] {escape(hint)}")
    raise typer.Exit(code)
