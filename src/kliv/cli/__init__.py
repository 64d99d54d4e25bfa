"""The ``kliv`` command: validate, plan and apply specs; run the embedded Postgres; generate CRDs.

Thin by design: each command loads settings, calls the core packages and renders what they
return, as rich text for people or JSON for agents. The commands live in the modules of this
package, registered on one typer ``app`` (:mod:`kliv.cli.options`); :func:`main` is the console
script.
"""

from __future__ import annotations

import gc

from kliv import rendering
from kliv.cli import functions, local, operating, reconciling, serving, stores  # noqa: F401  # registers the commands
from kliv.cli.operating import operator
from kliv.cli.options import EXIT_FAILED, app
from kliv.cli.wiring import _own_credentials
from kliv.rendering import escape

__all__ = ["_own_credentials", "app", "main", "operator"]


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
        import psycopg

        from kliv.stacks.errors import UnavailableError
        from kliv.stacks.events import mask

        message = mask(str(exc).strip().splitlines()[0][:300]) if str(exc).strip() else ""
        if isinstance(exc, psycopg.OperationalError | UnavailableError):  # foreseen: the server is not there
            rendering.console(stderr=True).print(
                f"[red bold]database unreachable:[/] {escape(message)}\n"
                "  [green]hint:[/] check KLIV_DATABASE_URL, or run `kliv up` to start the embedded server"
            )
            raise SystemExit(EXIT_FAILED) from None
        rendering.console(stderr=True).print(
            f"[red bold]unexpected error:[/] {escape(type(exc).__name__)}: {escape(message)}\n"
            "  [green]hint:[/] this is a bug in kliv; KLIV_TRACEBACK=1 shows where it happened"
        )
        raise SystemExit(EXIT_FAILED) from None
