"""How the CLI shows problems and plans in a terminal (rich), like a good `terraform plan`.

Called by :mod:`kliv.cli` only; JSON output does not pass through here. Every
piece of text that came from a spec, a file name or a server goes through
:func:`escape`: rich markup is escaped, and terminal control characters (an
unknown key such as ``"\x1b]0;...\a"`` retitles the terminal or hides text) are
shown as ``\x1b`` instead of being written raw.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape as escape_markup

if TYPE_CHECKING:
    from kliv.specs import Problem, SpecSet
    from kliv.stacks import Plan, Prepared
    from kliv.stacks.emails import RenderedEmail
    from kliv.stacks.postgres.outbox import OutboxRow
    from kliv.stacks.secrets.store import Version

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape(text: object) -> str:
    """Text safe to print: no rich markup, no terminal control sequences."""
    shown = _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(text))
    return escape_markup(shown)


_RISK_STYLE = {"safe": "green", "rename": "cyan", "destructive": "magenta", "data-loss": "red bold"}
_ACTION = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red")}


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def problems(items: list[Problem], out: Console | None = None) -> None:
    out = out or console()
    for problem in items:
        colour = {"error": "red", "warning": "yellow"}.get(problem.severity, "cyan")
        mark = {"error": "✗", "warning": "!"}.get(problem.severity, "i")
        who = f"  {escape(problem.kind)}/{escape(problem.name)}" if problem.kind else ""
        rule = f" [dim]({problem.rule})[/]" if problem.rule else ""
        # A problem of a whole file (no document, no pointer) shows no stray `/`.
        where = f"  [cyan]{escape(problem.path or '/')}[/]" if problem.path or problem.kind else ""
        out.print(f"[{colour} bold]{mark}[/] [bold]{escape(problem.location)}[/]{who}{where}{rule}")
        out.print(f"    {escape(problem.message)}")
        if problem.hint:
            out.print(f"    [green]hint:[/] {escape(problem.hint)}")


def validation_summary(
    valid: bool, errors: int, warnings: int, specs: SpecSet, notes: int = 0, out: Console | None = None
) -> None:
    out = out or console()
    documents = specs.documents
    projects = len([g for g in specs.projects.values() if g.project])
    counted = f"{documents} document{'s' * (documents != 1)}, {projects} project{'s' * (projects != 1)}"
    warned = f", {warnings} warning{'s' * (warnings != 1)}" if warnings else ""
    warned += f", {notes} note{'s' * (notes != 1)}" if notes else ""
    if valid:
        out.print(f"[green bold]✓ valid[/]: {counted}{warned}")
    else:
        out.print(f"[red bold]✗ invalid[/]: {errors} error{'s' * (errors != 1)}{warned} in {counted}")


def plan(result: Plan, show_sql: bool = False, out: Console | None = None) -> None:
    out = out or console()
    changes = [c for c in result.changes if c.action != "noop"]
    if not changes:
        done = "no changes, reality matches the specs"
        if result.not_supported:
            done = "no changes to what kliv manages today"
        out.print(f"[green]✓[/] {escape(result.project)}: {done}")
        _not_supported(result, out)
        return
    out.print(f"[bold]{escape(result.project)}[/]")
    _not_supported(result, out)
    for change in changes:
        symbol, colour = _ACTION[change.action]
        risk = _RISK_STYLE[change.risk]
        out.print(f"  [{colour} bold]{symbol}[/] [bold]{escape(change.resource)}[/]  [{risk}]{change.risk}[/]")
        for line in change.summary:
            out.print(f"      {escape(line)}")
        if show_sql:
            for step in change.steps:
                out.print(f"[dim]      {escape(step.sql)};[/]")
    counts = result.summary()
    out.print(
        f"  [bold]Plan:[/] {counts['create']} to create, {counts['update']} to update, {counts['delete']} to delete"
    )


def project_connection(item: Prepared, info: dict[str, Any], out: Console | None = None) -> None:
    """What `kliv up` prints for one project: how an application and a person connect."""
    out = out or console()
    out.print(f"\n[bold]{escape(item.plan.project)}[/]: database [cyan]{escape(info['database'])}[/]")
    roles = info["roles"]
    if "database_url" in info:
        out.print(f"  database_url: {escape(info['database_url'])}")
        if info.get("login_password_set"):
            out.print(f"                [dim]password of {escape(roles['authenticator'])} set (new, or changed "
                      "outside kliv)[/]")  # fmt: skip
        out.print(f"                [dim]the application's login ({escape(roles['authenticator'])}): "
                  f"SET ROLE {escape(roles['authenticated'])} and the JWT claims, and RLS decides[/]")  # fmt: skip
    else:
        out.print("  database_url: [yellow]none: set KLIV_SECRET_KEY to give applications a login[/]")
    out.print(f"  admin_url:    {escape(info['admin_url'])}  [dim](superuser, for migrations by hand)[/]")
    out.print(f"  tables:       {escape(', '.join(info['tables']) or '-')}")
    if "api_url" in info:
        out.print(f"  api_url:      {escape(info['api_url'])}  [dim](functions under /functions/v1/<name>)[/]")
    if "anon_key" in info:
        out.print(f"  anon_key:     {escape(info['anon_key'])}", soft_wrap=True)
    from kliv.stacks import registry

    for ref, found in info["outputs"].items():
        kind = registry.kind_of(ref)
        if kind is not None and kind.shown is not None:
            out.print(f"  {kind.label + ':':<13} {escape(kind.shown(found))}")


def _not_supported(result: Plan, out: Console) -> None:
    for ref, why in result.not_supported.items():
        out.print(f"  [yellow bold]![/] [bold]{escape(ref)}[/]  [yellow]{escape(why)}[/]")


def event(row: OutboxRow, out: Console | None = None) -> None:
    """One audit event on one line: time, type, subject, actor, outcome, delivery."""
    out = out or console()
    event = row.event
    data = event.get("data", {})
    outcome = data.get("outcome", "")
    colour = {"applied": "green", "refused": "yellow", "failed": "red"}.get(outcome, "white")
    delivered = "[dim]delivered[/]" if row.delivered else "[yellow]pending[/]"
    out.print(
        f"[dim]{escape(str(event.get('time', ''))[:19])}[/] [{colour}]{escape(event.get('type', ''))}[/] "
        f"{escape(event.get('subject', ''))}  by {escape(str(data.get('actor', '')))}  {delivered}"
    )


def secrets(versions: list[Version], out: Console | None = None) -> None:
    """One line per secret: where, which version, its fingerprint (never its value)."""
    out = out or console()
    if not versions:
        out.print("no secrets stored")
        return
    rows = [("PROJECT", "SECRET", "VERSION", "STORE", "FINGERPRINT", "SOURCE", "CREATED")]
    for version in versions:
        when = version.created_at.isoformat(timespec="seconds") if version.created_at else ""
        rows.append((f"{version.namespace}/{version.project}", version.name, f"v{version.version}",
                     version.store, version.fingerprint, version.source, when))  # fmt: skip
    # Aligned by hand, never truncated: piped into grep or awk a row must stay whole.
    widths = [max(len(escape(row[i])) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        line = "  ".join(escape(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        out.print(f"[bold]{line}[/]" if number == 0 else line)


def email(rendered: RenderedEmail, out: Console | None = None) -> None:
    """A rendered email: headers, then the HTML part, then the text part."""
    out = out or console()
    if rendered.sender:
        out.print(f"[bold]From:[/] {escape(rendered.sender)}")
    if rendered.reply_to:
        out.print(f"[bold]Reply-To:[/] {escape(rendered.reply_to)}")
    out.print(f"[bold]Subject:[/] {escape(rendered.subject)}")
    out.print("\n[dim]--- text/html ---[/]")
    out.print(escape(rendered.html), end="")
    out.print("[dim]--- text/plain ---[/]")
    out.print(escape(rendered.text), end="")
