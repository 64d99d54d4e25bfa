"""The URLs ``kliv up`` prints for a project: the application's and the administrator's.

Built from the admin URL the engine connects with (host, port, options) and the project's database.
``database_url`` logs in as the project's authenticator (RLS applies, as behind PostgREST);
``admin_url`` is the superuser's, shown without any password it was configured with.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict

_CARRIED = ("sslmode", "sslrootcert", "connect_timeout")  # what an application needs to reach the same server


def _url(admin_url: str, user: str, password: str | None, database: str, address: tuple[str, int] | None = None) -> str:
    params = conninfo_to_dict(admin_url)
    host, port = str(params.get("host") or "127.0.0.1"), params.get("port")
    if address is not None:
        host, port = address[0], str(address[1])
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    query = {k: str(params[k]) for k in _CARRIED if params.get(k)}
    if host.startswith("/"):  # a unix socket: libpq takes it as a query parameter
        query = {"host": host, **({"port": str(port)} if port else {}), **query}
        location = ""
    else:
        location = f"[{host}]" if ":" in host else host
        location += f":{port}" if port else ""
    return f"postgresql://{auth}@{location}/{quote(database, safe='')}" + (
        f"?{urlencode(query, safe='/')}" if query else ""
    )


def database_url(
    admin_url: str, authenticator: str, password: str, database: str, address: tuple[str, int] | None = None
) -> str:
    """What an application sets as DATABASE_URL; ``address``: where applications reach the server when
    it is not where kliv does (the embedded server: TCP for them, a private socket for kliv)."""
    return _url(admin_url, authenticator, password, database, address)


def admin_url(admin_url: str, database: str) -> str:
    """The superuser's URL for the project database, for migrations by hand (never with a password)."""
    user = str(conninfo_to_dict(admin_url).get("user") or "postgres")
    return _url(admin_url, user, None, database)
