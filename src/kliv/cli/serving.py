"""``kliv serve`` (the data plane) and ``kliv keys`` (a project's JWTs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from kliv import rendering
from kliv.cli.options import EXIT_FAILED, EXIT_INVALID, Output, OutputOption, _emit, _fail, _settings, app
from kliv.cli.wiring import _provider_options

if TYPE_CHECKING:
    import psycopg

    from kliv.stacks.secrets.keys import Keyring

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 54321
ProjectOption = Annotated[
    str | None, typer.Option("--project", "-p", help="The project: name or namespace/name (default: the only one).")
]


def _database(output: Output, admin: bool = False) -> tuple[str, Keyring | None]:
    """(control database DSN, or with ``admin`` the server's admin DSN; keyring) from the settings,
    or exit saying what is missing."""
    from pydantic import SecretStr

    from kliv.stacks import EngineError, embedded
    from kliv.stacks.postgres import sessions

    settings = _settings(output)
    url = settings.database_url or embedded.running_url()
    if url is None:
        _fail("no Postgres server", "KLIV_DATABASE_URL is not set and the embedded server is not running",
              "run `kliv up` (embedded Postgres), or set KLIV_DATABASE_URL", output, EXIT_FAILED)  # fmt: skip
    if settings.secret_key is None and settings.database_url is None:
        settings = settings.model_copy(update={"secret_key": SecretStr(embedded.secret_key())})
    try:
        keyring = _provider_options(settings).keyring()
    except EngineError as exc:
        _fail("invalid key", exc.message, exc.hint, output, EXIT_INVALID)
    return (url if admin else sessions.conninfo(url, "kliv")), keyring


def project_of(control: psycopg.Connection[Any], project: str | None, output: Output) -> tuple[str, str]:
    """(namespace, name) of ``--project``, or of the only applied project."""
    rows = control.execute("SELECT namespace, name FROM inventory.projects ORDER BY 1, 2").fetchall()
    known = [(str(ns), str(name)) for ns, name in rows]
    if project is not None:
        namespace, _, name = project.rpartition("/")
        matches = [k for k in known if k[1] == name and (not namespace or k[0] == namespace)]
    else:
        matches = known
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(f"{ns}/{name}" for ns, name in known) or "none"
    if not matches:
        _fail("no such project", f"project {project} has not been applied (applied: {shown})",
              "apply it first, or pass --project namespace/name", output, EXIT_INVALID)  # fmt: skip
    _fail("which project?", f"{len(matches)} projects match (applied: {shown})",
          "pass --project namespace/name", output, EXIT_INVALID)  # fmt: skip


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    idle_seconds: Annotated[float, typer.Option(help="Stop a function's process after this long unused.")] = 60.0,
) -> None:
    """The data plane: each project's functions under /p/NAMESPACE/PROJECT/functions/v1/NAME, and /healthz."""
    import socket

    import uvicorn

    from kliv.serving.app import build

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            _fail("port in use", f"{host}:{port} is taken (`kliv up` starts kliv serve on 54321 when free)",
                  "stop the other server (`kliv down` for kliv up's), or pass --port", Output.text,
                  EXIT_FAILED)  # fmt: skip
    database_url, keyring = _database(Output.text, admin=True)
    application, _ = build(database_url, keyring, idle_seconds)
    rendering.console(stderr=True).print(f"kliv serve on http://{host}:{port}")
    config = uvicorn.Config(application, host=host, port=port, log_level="warning", lifespan="on",
                            access_log=False, loop="uvloop", http="httptools")  # fmt: skip
    uvicorn.Server(config).run()


@app.command()
def keys(
    project: ProjectOption = None,
    service_role: Annotated[
        bool, typer.Option("--service-role", help="Also print the service-role key (it bypasses RLS).")
    ] = False,
    output: OutputOption = Output.text,
) -> None:
    """The project's anon key (and, asked for, its service-role key): JWTs signed with its secret."""
    import psycopg

    from kliv.stacks.secrets import jwts

    control_url, keyring = _database(output)
    if keyring is None:
        _fail("no key", "KLIV_SECRET_KEY is not set", "set it to the key the projects were applied with", output,
              EXIT_INVALID)  # fmt: skip
    with psycopg.connect(control_url, autocommit=True) as control:
        namespace, name = project_of(control, project, output)
        secret = jwts.ensure(control, keyring, namespace, name)
    found = {"namespace": namespace, "name": name, "anon_key": jwts.key(secret, namespace, name, "anon")}
    if service_role:
        found["service_role_key"] = jwts.key(secret, namespace, name, "service_role")
    if output is Output.json:
        _emit(found)
        return
    out = rendering.console()
    out.print(f"anon_key:         {found['anon_key']}", soft_wrap=True)
    if service_role:
        out.print(f"service_role_key: {found['service_role_key']}  (bypasses RLS: keep it server-side)",
                  soft_wrap=True)  # fmt: skip
