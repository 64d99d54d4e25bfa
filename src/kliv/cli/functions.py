"""``kliv functions ...``: what is deployed, its logs and invocations; invoke; roll back."""

from __future__ import annotations

import datetime
import json
import re
import time
import uuid
from typing import Annotated, Any

import typer

from kliv import rendering
from kliv.cli.options import EXIT_FAILED, EXIT_INVALID, Output, OutputOption, _emit, _fail, _settings, app
from kliv.cli.serving import DEFAULT_PORT, ProjectOption, _database, project_of
from kliv.rendering import escape

functions_app = typer.Typer(help="Functions: list, logs, invocations, invoke, rollback.", no_args_is_help=True)
app.add_typer(functions_app, name="functions")
NameArgument = Annotated[str, typer.Argument(help="The function's name (its URL name).")]
_SINCE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _connect(output: Output) -> tuple[Any, Any]:
    import psycopg

    from kliv.stacks.postgres import migrations

    control_url, keyring = _database(output)
    try:
        control = psycopg.connect(control_url, autocommit=True)
        migrations.migrate(control)  # a control database older than this kliv has no functions tables yet
        return control, keyring
    except psycopg.OperationalError as exc:
        _fail("no control database", str(exc).splitlines()[0][:200], "apply a project first (`kliv up`)", output,
              EXIT_FAILED)  # fmt: skip


def _named(control: Any, project: str | None, name: str, output: Output) -> tuple[str, str, str]:
    """(namespace, project, resource name) of the function served at ``name``."""
    namespace, project_name = project_of(control, project, output)
    row = control.execute(
        "SELECT name FROM functions.active WHERE namespace = %s AND project = %s AND (route = %s OR name = %s) "
        "ORDER BY retired_at IS NULL DESC LIMIT 1",
        [namespace, project_name, name, name],
    ).fetchone()
    if row is None:
        _fail("no such function", f"no function {name} was deployed in {namespace}/{project_name}",
              "list them with `kliv functions list`", output, EXIT_INVALID)  # fmt: skip
    return namespace, project_name, str(row[0])


def _json(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


@functions_app.command("list")
def functions_list(project: ProjectOption = None, output: OutputOption = Output.text) -> None:
    """Every deployed function: URL name, version, artifact, target, pin."""
    from kliv.stacks.functions import artifacts

    control, _ = _connect(output)
    with control:
        namespace = None
        if project is not None:
            namespace, name = project_of(control, project, output)
        served = [(a, v) for a, v in artifacts.served(control, namespace) if project is None or a.project == name]
    found = [{"namespace": a.namespace, "project": a.project, "name": a.name, "route": a.route,
              "version": a.version, "artifact": f"sha256:{v.artifact}", "target": v.target,
              "pinned": a.pinned, "deployed_at": _json(v.created_at)} for a, v in served]  # fmt: skip
    if output is Output.json:
        _emit({"functions": found})
        return
    out = rendering.console()
    if not found:
        out.print("no functions are deployed")
    for f in found:
        pin = "  [yellow]pinned by a rollback[/]" if f["pinned"] else ""
        out.print(f"{f['namespace']}/{f['project']}  [bold]{f['route']}[/]  v{f['version']}  "
                  f"{str(f['artifact'])[:19]}  {f['target']}{pin}")  # fmt: skip


def _since(value: str, output: Output) -> datetime.datetime:
    match = _SINCE.match(value)
    if not match:
        _fail("bad --since", f"`{value}` is not a duration", "write e.g. 30s, 10m, 2h or 7d", output, EXIT_INVALID)
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)


@functions_app.command("logs")
def functions_logs(
    name: NameArgument,
    project: ProjectOption = None,
    since: Annotated[str, typer.Option(help="How far back: 30s, 10m, 2h, 7d.")] = "10m",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    output: OutputOption = Output.text,
) -> None:
    """A function's console lines and runtime events (spawned, ready, timeout, killed, exit)."""
    control, _ = _connect(output)
    with control:
        namespace, project_name, function = _named(control, project, name, output)
        position, start = 0, _since(since, output)
        out = rendering.console()
        while True:
            rows = control.execute(
                "SELECT position, ts, version, stream, message FROM functions.logs WHERE namespace = %s "
                "AND project = %s AND function = %s AND position > %s AND ts >= %s ORDER BY position LIMIT 1000",
                [namespace, project_name, function, position, start],
            ).fetchall()
            for row_position, ts, version, stream, message in rows:
                position = row_position
                if output is Output.json:  # one JSON object per line: followable
                    print(json.dumps({"ts": ts.isoformat(), "function": function, "version": version,
                                      "stream": stream, "message": message}), flush=True)  # fmt: skip
                else:
                    out.print(f"[dim]{ts:%H:%M:%S.%f}[/] v{version} [cyan]{stream}[/] {escape(message)}",
                              soft_wrap=True)  # fmt: skip
            if not follow:
                return
            if len(rows) < 1000:
                time.sleep(0.25)


@functions_app.command("invocations")
def functions_invocations(
    name: NameArgument,
    project: ProjectOption = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="How many, newest first.")] = 50,
    output: OutputOption = Output.text,
) -> None:
    """A function's recent invocations: request id, version, method, path, status, duration, cold, error."""
    control, _ = _connect(output)
    with control:
        namespace, project_name, function = _named(control, project, name, output)
        rows = control.execute(
            "SELECT request_id, at, version, method, path, status, duration_ms, cold, error FROM "
            "functions.invocations WHERE namespace = %s AND project = %s AND function = %s ORDER BY at DESC LIMIT %s",
            [namespace, project_name, function, limit],
        ).fetchall()
    keys = ("request_id", "at", "version", "method", "path", "status", "duration_ms", "cold", "error")
    found = [{key: _json(value) for key, value in zip(keys, row, strict=True)} for row in rows]
    if output is Output.json:
        _emit({"function": function, "invocations": found})
        return
    out = rendering.console()
    for i in found:
        error = f" [red]{i['error']}[/]" if i["error"] else ""
        out.print(f"[dim]{i['at']}[/] v{i['version']} {i['method']} {escape(str(i['path']))} {i['status']} "
                  f"{float(i['duration_ms']):.1f} ms{' cold' if i['cold'] else ''}{error}")  # fmt: skip


@functions_app.command("invoke")
def functions_invoke(
    name: NameArgument,
    project: ProjectOption = None,
    data: Annotated[str | None, typer.Option(help="JSON body to POST (default: a GET).")] = None,
    role: Annotated[str, typer.Option(help="anon, authenticated or service_role.")] = "anon",
    user: Annotated[str | None, typer.Option(help="The user's uuid (`sub`), with --role authenticated.")] = None,
    path: Annotated[str, typer.Option(help="Path after the function's name.")] = "",
    output: OutputOption = Output.text,
) -> None:
    """Call a function through `kliv serve` with a token of the chosen role."""
    import httpx

    from kliv.stacks.secrets import jwts

    if role not in jwts.ROLES:
        _fail("bad --role", f"`{role}` is not a role", "use anon, authenticated or service_role", output, EXIT_INVALID)
    if role == "authenticated" and user is None:
        _fail("no --user", "--role authenticated needs the user's uuid", "pass --user <uuid>", output, EXIT_INVALID)
    body = None
    if data is not None:
        try:
            body = json.dumps(json.loads(data)).encode()
        except ValueError:
            _fail("bad --data", "--data is not JSON", 'write e.g. --data \'{"order_id": "…"}\'', output, EXIT_INVALID)
    control, keyring = _connect(output)
    if keyring is None:
        _fail("no key", "KLIV_SECRET_KEY is not set", "set it to the key the project was applied with", output,
              EXIT_INVALID)  # fmt: skip
    with control:
        namespace, project_name, _ = _named(control, project, name, output)
        secret = jwts.ensure(control, keyring, namespace, project_name)
    try:
        token = (jwts.user_token(secret, namespace, project_name, str(user)) if role == "authenticated"
                 else jwts.key(secret, namespace, project_name, role))  # fmt: skip
    except ValueError:
        _fail("bad --user", f"`{user}` is not a uuid", "pass the user's uuid", output, EXIT_INVALID)
    settings = _settings(output)
    base = (settings.api_url or f"http://127.0.0.1:{DEFAULT_PORT}").rstrip("/")
    url = f"{base}/p/{namespace}/{project_name}/functions/v1/{name}" + (f"/{path.lstrip('/')}" if path else "")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    try:
        response = httpx.request("POST" if body is not None else "GET", url, content=body, headers=headers,
                                 timeout=960)  # fmt: skip
    except httpx.HTTPError as exc:
        _fail("kliv serve is not reachable", f"{url}: {type(exc).__name__}",
              "start it with `kliv serve` (or `kliv up`), or set KLIV_API_URL", output, EXIT_FAILED)  # fmt: skip
    text = response.text
    if output is Output.json:
        try:
            shown: Any = response.json()
        except ValueError:
            shown = text
        _emit({"status": response.status_code, "request_id": response.headers.get("x-kliv-request-id"),
               "error": response.headers.get("x-kliv-error"), "body": shown})  # fmt: skip
    else:
        rendering.console(stderr=True).print(f"{response.status_code} {response.reason_phrase}")
        print(text)
    if response.status_code >= 500:
        if output is Output.text:
            request_id = response.headers.get("x-kliv-request-id", "")
            rendering.console(stderr=True).print(
                f"  [green]hint:[/] the function's own output says why: `kliv functions logs {escape(name)} "
                f"--project {namespace}/{project_name}` (request {escape(request_id)})")  # fmt: skip
        raise typer.Exit(EXIT_FAILED)


@functions_app.command("rollback")
def functions_rollback(
    name: NameArgument,
    project: ProjectOption = None,
    to: Annotated[
        int | None,
        typer.Option(
            "--to",
            help="The version (default: the one active before the active one: a second rollback undoes the first).",
        ),
    ] = None,
    output: OutputOption = Output.text,
) -> None:
    """Serve an earlier kept version, pinned until the Function's spec next changes (audited)."""
    import getpass

    from kliv.stacks import events
    from kliv.stacks.functions import artifacts
    from kliv.stacks.plans import Change
    from kliv.stacks.postgres import inventory

    control, _ = _connect(output)
    with control:
        namespace, project_name, function = _named(control, project, name, output)
        try:
            with control.transaction():
                active, version = artifacts.rollback(control, namespace, project_name, function, to)
                if version.target == "lambda":  # the alias moves first: the record commits only if it moved
                    from kliv.stacks.functions.lambdas import LambdaTarget

                    settings = _settings(output)
                    target = LambdaTarget(settings.lambda_endpoint, settings.region, settings.lambda_role)
                    target.switch(namespace, project_name, active.route, str(version.external_version))
                ref = f"Function/{namespace}/{function}"
                why = f"roll back to version {version.version} (sha256 {version.artifact[:12]}), pinned until " \
                      "the spec changes"  # fmt: skip
                event = events.build(Change(ref, "update", "safe", [why], []), namespace, project_name, "applied",
                                     f"cli:{getpass.getuser()}")  # fmt: skip
                inventory.enqueue(control, namespace, project_name, [event])
        except LookupError as exc:
            _fail("cannot roll back", str(exc), "pick one of the kept versions with --to", output,
                  EXIT_INVALID)  # fmt: skip
    result = {"namespace": namespace, "project": project_name, "name": function, "version": active.version,
              "artifact": f"sha256:{version.artifact}", "pinned": True}  # fmt: skip
    if output is Output.json:
        _emit(result)
    else:
        rendering.console().print(f"[green]✓[/] {function} serves version {active.version} "
                                  f"(pinned until its spec changes)")  # fmt: skip
