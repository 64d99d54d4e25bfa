"""Every connection kliv opens: one place that pins the settings kliv's own SQL relies on.

Called by the engine, the outbox reader, the relay, the metrics scrape and the
CLI, so that none of them connects with whatever the server, the database, the
role or ``PGOPTIONS`` happen to say.

- ``standard_conforming_strings=on``: the fragment checker parses specs the way
  pglast does, with backslashes literal inside ``'...'``. With the setting off,
  ``'\\' || ' || pg_read_file(...) -- '`` is one harmless string to the checker
  and a call to Postgres (SECURITY.md, boundary 3).
- ``statement_timeout=0``: a project database carries a default timeout for the
  application's queries (``Project.spec.database.statementTimeout``); kliv's own
  migrations (an index build, a constraint validated over a large table) must
  not be cut off half-way by it. They are bounded by ``lock_timeout`` and by the
  fragment bounds instead.

Startup options given in the URL are kept; ours are appended, so they win.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PINNED = {"standard_conforming_strings": "on", "statement_timeout": "0"}


def conninfo(url: str, database: str | None = None, **params: Any) -> str:
    """``url`` (optionally for another database) with kliv's pinned session settings."""
    options = conninfo_to_dict(url).get("options") or ""
    pinned = " ".join(f"-c {name}={value}" for name, value in PINNED.items())
    extra: dict[str, Any] = {"options": f"{options} {pinned}".strip(), **params}
    if database is not None:
        extra["dbname"] = database
    return make_conninfo(url, **extra)


def connect(
    url: str, database: str | None = None, *, autocommit: bool = True, **params: Any
) -> psycopg.Connection[Any]:
    """A blocking connection with the pinned settings."""
    return psycopg.connect(conninfo(url, database, **params), autocommit=autocommit)


async def connect_async(url: str, database: str | None = None, **params: Any) -> psycopg.AsyncConnection[Any]:
    """An autocommit asyncio connection with the pinned settings."""
    return await psycopg.AsyncConnection.connect(conninfo(url, database, **params), autocommit=True)
