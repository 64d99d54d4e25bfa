"""EmailTemplates stored in the project database: one row per version, in ``email.templates``.

Called by the native engine while it plans a project (:class:`TemplateProvider`, on the one
provider contract of :mod:`kliv.stacks.contract`): a new or changed template adds
a version (the previous one stays, no longer current), a removed template is
retired (its versions stay for the record). The table is created by the
bootstrap and readable by the project's ``service_role`` only, which sends mail.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import psycopg

from kliv.specs import EmailTemplate, ProjectSpecs
from kliv.stacks.contract import DatabaseSession, Observation, Record
from kliv.stacks.errors import EngineError
from kliv.stacks.hashing import spec_hash
from kliv.stacks.plans import Change, Step
from kliv.stacks.postgres.naming import literal

TABLE = "email.templates"
STAGE = 12  # after the bootstrap, beside the triggers

SCHEMA_STEPS = (
    "CREATE SCHEMA IF NOT EXISTS email",
    """CREATE TABLE IF NOT EXISTS email.templates (
  name text NOT NULL,
  version integer NOT NULL,
  spec_hash text NOT NULL,
  subject text NOT NULL,
  markdown text NOT NULL,
  variables jsonb NOT NULL,
  sender jsonb,
  reply_to text,
  current boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, version)
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS templates_current ON email.templates (name) WHERE current",
    "REVOKE ALL ON SCHEMA email FROM PUBLIC",
    "REVOKE ALL ON email.templates FROM PUBLIC",
)


def grants(service_role: str) -> list[str]:
    from kliv.stacks.postgres.naming import quote

    return [
        f"GRANT USAGE ON SCHEMA email TO {quote(service_role)}",
        f"GRANT SELECT ON email.templates TO {quote(service_role)}",
    ]


@dataclasses.dataclass(frozen=True)
class Observed:
    """A template's stored versions: the newest number and the current one's spec hash."""

    latest: int
    current_hash: str | None


def observe(connection: psycopg.Connection[Any]) -> dict[str, Observed]:
    row = connection.execute("SELECT to_regclass('email.templates') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return {}
    return {
        name: Observed(latest, current)
        for name, latest, current in connection.execute(
            "SELECT name, max(version), (array_agg(spec_hash) FILTER (WHERE current))[1] "
            "FROM email.templates GROUP BY name"
        )
    }


def stored(template: EmailTemplate) -> dict[str, Any]:
    """The columns of a version (also what ``kliv templates render`` reads back)."""
    spec = template.spec
    return {
        "subject": spec.subject,
        "markdown": spec.markdown,
        "variables": {k: v.model_dump(exclude_none=True) for k, v in spec.variables.items()},
        "sender": spec.sender.model_dump(exclude_none=True) if spec.sender else None,
        "reply_to": spec.reply_to,
    }


def _insert(name: str, version: int, digest: str, template: EmailTemplate) -> str:
    columns = stored(template)
    sender = literal(json.dumps(columns["sender"])) + "::jsonb" if columns["sender"] else "NULL"
    reply_to = literal(columns["reply_to"]) if columns["reply_to"] else "NULL"
    return (
        "INSERT INTO email.templates (name, version, spec_hash, subject, markdown, variables, sender, reply_to) "
        f"VALUES ({literal(name)}, {version}, {literal(digest)}, {literal(columns['subject'])}, "
        f"{literal(columns['markdown'])}, {literal(json.dumps(columns['variables']))}::jsonb, {sender}, {reply_to}) "
        # Applied twice (a retry), the retirement just before must not leave no current version;
        # but a version stored with other content is never made current (the next plan adds one).
        "ON CONFLICT (name, version) DO UPDATE SET current = true WHERE email.templates.spec_hash = EXCLUDED.spec_hash"
    )


def _retire(name: str) -> str:
    return f"UPDATE email.templates SET current = false WHERE name = {literal(name)} AND current"


class TemplateProvider:
    """EmailTemplates on the one contract: SQL steps the engine runs in the project's transaction."""

    kind = "EmailTemplate"
    in_database = True

    def __init__(self, database: DatabaseSession) -> None:
        """``database``: a connection to a project database, None while it does not exist."""
        self.database = database

    def observe(self, group: ProjectSpecs, applied: dict[str, Record]) -> list[Observation]:
        """One observation per template of ``group``, and one retirement per template only in ``applied``."""
        if group.project is None:
            return []
        database = group.project.resource.database_name
        connection = self.database(database)
        observed = observe(connection) if connection is not None else {}
        found: list[Observation] = []
        present = set()
        for spec in group.templates:
            template = spec.resource
            name, digest = template.name, spec_hash(template.spec)
            present.add(name)
            record = Record(self.kind, name, f"{TABLE}/{name}", digest, True)
            current = observed.get(name)
            if current is not None and current.current_hash == digest:
                outputs = {"table": TABLE, "template": name, "version": str(current.latest)}
                found.append(Observation.unchanged(template.ref, outputs, record))
                continue
            version = 1 if current is None else current.latest + 1
            outputs = {"table": TABLE, "template": name, "version": str(version)}
            action: Any = "create" if current is None or current.current_hash is None else "update"
            steps = [Step(_retire(name), stage=STAGE), Step(_insert(name, version, digest, template), stage=STAGE)]
            summary = [f"store version {version} of template {name}"]
            change = Change(template.ref, action, "safe", summary, steps, {"database": database, "outputs": outputs})
            found.append(Observation(change, outputs, record, exists=current is not None))
        for ref, applied_record in applied.items():
            name = applied_record.physical.rpartition("/")[2]
            if name in present:
                continue
            current = observed.get(name)
            summary = [f"retire template {name} (its {current.latest if current else 0} version(s) stay in {TABLE})"]
            steps = [Step(_retire(name), stage=STAGE)] if current and current.current_hash else []
            detail = {"database": database}
            found.append(Observation(Change(ref, "delete", "safe", summary, steps, detail), {}, None))
        return found

    def apply(self, ref: str, change: Change) -> dict[str, str]:
        """Run a template change's steps in one transaction of its project database (idempotent:
        a version is inserted once, retiring a retired template changes nothing). The native
        engine runs these steps inside the project's own transaction instead."""
        connection = self.database(str(change.detail["database"]))
        if connection is None:
            if change.action == "delete" or not change.steps:
                return {}  # retiring what is gone with its database
            raise EngineError(f"{ref}: the project database does not exist", "apply the Project first")
        with connection.transaction():
            for step in change.steps:
                connection.execute(step.sql)
        return dict(change.detail.get("outputs") or {})


def current(connection: psycopg.Connection[Any], name: str) -> dict[str, Any] | None:
    """The current version of a template, as stored."""
    row = connection.execute(
        "SELECT version, subject, markdown, variables, sender, reply_to FROM email.templates "
        "WHERE name = %s AND current",
        [name],
    ).fetchone()
    if row is None:
        return None
    keys = ("version", "subject", "markdown", "variables", "sender", "reply_to")
    return dict(zip(keys, row, strict=True))
