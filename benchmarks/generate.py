"""Generate a synthetic project of N tables and 2N policies, for the benchmarks.

Run directly (`python benchmarks/generate.py OUT_DIR --tables 1000`) or import
:func:`write_project`. Tables form a foreign-key chain; half of the policies
use an ``EXISTS`` sub-query, so the resolver does its real work.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

API = "cloud.kliv.dev/v1alpha1"


def _table(project: str, index: int) -> dict[str, Any]:
    columns: list[dict[str, Any]] = [
        {"name": "id", "type": "uuid", "primaryKey": True, "default": "gen_random_uuid()"},
        {"name": "owner_id", "type": "uuid", "nullable": False, "default": "auth.uid()"},
        {"name": "title", "type": "text", "nullable": False, "check": "length(title) between 1 and 200"},
        {"name": "status", "type": "item_status", "nullable": False, "default": "'draft'"},
        {"name": "amount", "type": "numeric(12,2)", "check": "amount >= 0"},
        {"name": "tags", "type": "text[]", "nullable": False, "default": "'{}'"},
        {"name": "created_at", "type": "timestamptz", "nullable": False, "default": "now()"},
    ]
    if index > 0:
        columns.append(
            {"name": "parent_id", "type": "uuid", "references": {"table": f"t{index - 1:04d}", "onDelete": "cascade"}}
        )
    else:
        columns.append({"name": "parent_id", "type": "uuid"})
    return {
        "apiVersion": API,
        "kind": "Table",
        "metadata": {"name": f"t{index:04d}"},
        "spec": {
            "projectRef": {"name": project},
            "columns": columns,
            "indexes": [
                {"columns": ["parent_id"]},
                {"columns": ["title"], "unique": True, "where": "status = 'published'"},
            ],
        },
    }


def _policies(project: str, index: int) -> list[dict[str, Any]]:
    table = f"t{index:04d}"
    own = "owner_id = auth.uid()"
    read = "status = 'published' or owner_id = auth.uid()"
    if index > 0:
        parent = f"t{index - 1:04d}"
        read = f"exists (select 1 from {parent} p where p.id = {table}.parent_id and p.owner_id = auth.uid())"
    return [
        {
            "apiVersion": API,
            "kind": "TablePolicy",
            "metadata": {"name": f"{table}-read"},
            "spec": {"projectRef": {"name": project}, "table": table, "command": "select",
                     "roles": ["anon", "authenticated"], "using": read},
        },
        {
            "apiVersion": API,
            "kind": "TablePolicy",
            "metadata": {"name": f"{table}-write"},
            "spec": {"projectRef": {"name": project}, "table": table, "command": "all",
                     "roles": ["authenticated"], "using": own, "withCheck": own},
        },
    ]  # fmt: skip


_TRIGGER_BODY = """\
declare
  total numeric;
  n integer;
begin
  if tg_op = 'DELETE' then
    return old;
  end if;
  select count(*), coalesce(sum(amount), 0)
  from {table}
  where parent_id = new.parent_id
  into n, total;
  if n > 1000 then
    raise exception 'too many rows under %', new.parent_id;
  end if;
  if new.amount is not null and new.amount > total then
    new.amount := total;
  end if;
  new.title := btrim(new.title);
  return new;
end;
"""


def _trigger(project: str, index: int) -> list[dict[str, Any]]:
    """A 20-line plpgsql trigger function over the table, and its trigger."""
    table = f"t{index:04d}"
    return [
        {
            "apiVersion": API,
            "kind": "DatabaseFunction",
            "metadata": {"name": f"{table}-guard"},
            "spec": {"projectRef": {"name": project}, "language": "plpgsql", "returns": "trigger",
                     "body": _TRIGGER_BODY.format(table=table)},
        },
        {
            "apiVersion": API,
            "kind": "Trigger",
            "metadata": {"name": f"{table}-guard"},
            "spec": {"projectRef": {"name": project}, "table": table, "timing": "before",
                     "events": ["insert", "update"], "function": f"{table}_guard"},
        },
    ]  # fmt: skip


def write_project(out: Path, tables: int, project: str = "bench", per_file: int = 100, triggers: float = 0.0) -> Path:
    """Write the project's specs under ``out`` (``per_file`` tables and their policies a file;
    ``triggers``: the share of tables that also get a trigger and its 20-line plpgsql function)."""
    every = round(1 / triggers) if triggers else 0
    out.mkdir(parents=True, exist_ok=True)
    head = {
        "apiVersion": API,
        "kind": "Project",
        "metadata": {"name": project},
        "spec": {"enums": [{"name": "item_status", "values": ["draft", "published", "archived"]}]},
    }
    (out / "project.yaml").write_text(yaml.safe_dump(head, sort_keys=False))
    for start in range(0, tables, per_file):
        documents: list[dict[str, Any]] = []
        for index in range(start, min(start + per_file, tables)):
            documents.append(_table(project, index))
            documents += _policies(project, index)
            if every and index % every == every - 1:
                documents += _trigger(project, index)
        (out / f"tables-{start:05d}.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tables", type=int, default=1000)
    args = parser.parse_args()
    write_project(args.out, args.tables)
