"""EmailTemplates stored in the project database: one row per version, in ``email.templates``.

Called by the engine while it plans a project: a new or changed template adds
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
        "ON CONFLICT (name, version) DO NOTHING"
    )


def _retire(name: str) -> str:
    return f"UPDATE email.templates SET current = false WHERE name = {literal(name)} AND current"


def plan(
    group: ProjectSpecs, observed: dict[str, Observed], applied: dict[str, dict[str, Any]]
) -> tuple[list[Change], dict[str, dict[str, str]], list[dict[str, Any]]]:
    """Changes, outputs per ref and inventory rows for the project's templates."""
    changes: list[Change] = []
    outputs: dict[str, dict[str, str]] = {}
    rows: list[dict[str, Any]] = []
    present = set()
    for spec in group.templates:
        template = spec.resource
        name, digest = template.name, spec_hash(template.spec)
        present.add(name)
        rows.append({"kind": "EmailTemplate", "name": name, "physical": f"{TABLE}/{name}",
                     "spec_hash": digest, "retain": True})  # fmt: skip
        found = observed.get(name)
        if found is not None and found.current_hash == digest:
            outputs[template.ref] = {"table": TABLE, "template": name, "version": str(found.latest)}
            changes.append(Change(template.ref, "noop", "safe", [], []))
            continue
        version = 1 if found is None else found.latest + 1
        outputs[template.ref] = {"table": TABLE, "template": name, "version": str(version)}
        action: Any = "create" if found is None or found.current_hash is None else "update"
        steps = [Step(_retire(name), stage=STAGE), Step(_insert(name, version, digest, template), stage=STAGE)]
        changes.append(Change(template.ref, action, "safe", [f"store version {version} of template {name}"], steps))
    for ref, record in applied.items():
        name = str(record["physical"]).rpartition("/")[2]
        if name in present:
            continue
        found = observed.get(name)
        summary = [f"retire template {name} (its {found.latest if found else 0} version(s) stay in {TABLE})"]
        steps = [Step(_retire(name), stage=STAGE)] if found and found.current_hash else []
        changes.append(Change(ref, "delete", "safe", summary, steps))
    return changes, outputs, rows


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
