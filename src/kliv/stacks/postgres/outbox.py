"""Reading the outbox for people: ``kliv events`` (the relay reads it for RabbitMQ).

Rows stay readable after delivery until the relay prunes them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import psycopg

from kliv.stacks.postgres import sessions
from kliv.stacks.postgres.inventory import CONTROL_DATABASE, XACT_STATUS


@dataclasses.dataclass(frozen=True)
class OutboxRow:
    position: int
    namespace: str
    project: str
    routing_key: str
    body: str
    delivered: bool

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


def read(database_url: str, project: str | None, after: int = 0, limit: int | None = 50) -> list[OutboxRow]:
    """Events after ``position`` (the newest ``limit`` when starting), oldest first."""
    namespace, _, name = project.rpartition("/") if project else ("", "", "")
    # Events of a rolled-back (or still running) transaction report nothing that happened.
    query = (
        "SELECT position, namespace, project, routing_key, body, delivered_at IS NOT NULL FROM inventory.outbox "
        "WHERE position > %(after)s AND (%(name)s = '' OR project = %(name)s) "
        f"AND (%(namespace)s = '' OR namespace = %(namespace)s) AND {XACT_STATUS} IN ('committed', 'foreign') "
        "ORDER BY position DESC"
    )
    if limit is not None:
        query += " LIMIT %(limit)s"
    try:
        with sessions.connect(database_url, CONTROL_DATABASE) as connection:
            rows = connection.execute(
                query, {"after": after, "name": name, "namespace": namespace, "limit": limit}
            ).fetchall()
    except psycopg.errors.UndefinedTable:
        return []
    return [OutboxRow(*row) for row in reversed(rows)]
