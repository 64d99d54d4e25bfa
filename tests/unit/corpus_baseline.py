"""The bad-input corpus's baseline project, JSON-pointer helpers, case shapes and CLI runner.

Imported by ``test_bad_input_corpus.py`` (hand-written cases) and ``test_generated_inputs.py``
(hypothesis): a valid project of ten documents that every case changes in one place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kliv.cli import app
from kliv.specs import API_VERSION

# -- the baseline project ------------------------------------------------------------------------

PROJECT, CUSTOMERS, ORDERS, POLICY_READ, POLICY_UPDATE, POLICY_SELF, BUCKET, SECRET, FUNCTION, TEMPLATE = range(10)
APPENDED = 10  # index of a document appended after the baseline (raw YAML cases)
REF = {"name": "shop"}


def _resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def baseline() -> list[dict[str, Any]]:
    """A valid project touching every kind; indexes match the constants above."""
    return [
        _resource(
            "Project",
            "shop",
            {
                "displayName": "Shop",
                "database": {"name": "shop_db"},
                "enums": [{"name": "order_state", "values": ["new", "paid", "shipped"]}],
            },
        ),
        _resource(
            "Table",
            "customers",
            {
                "projectRef": dict(REF),
                "name": "customers",
                "columns": [
                    {"name": "id", "type": "uuid", "primaryKey": True, "default": "gen_random_uuid()"},
                    {"name": "email", "type": "text", "nullable": False, "unique": True, "check": "length(email) > 3"},
                    {"name": "created_at", "type": "timestamptz", "nullable": False, "default": "now()"},
                ],
                "indexes": [{"columns": ["created_at"], "where": "email <> ''"}],
            },
        ),
        _resource(
            "Table",
            "orders",
            {
                "projectRef": dict(REF),
                "name": "orders",
                "renamedFrom": "purchases",
                "columns": [
                    {"name": "id", "type": "bigint", "primaryKey": True, "identity": "always"},
                    {
                        "name": "customer_id",
                        "type": "uuid",
                        "nullable": False,
                        "references": {"table": "customers", "column": "id", "onDelete": "cascade"},
                    },
                    {"name": "state", "type": "order_state", "nullable": False, "default": "'new'"},
                    {
                        "name": "total",
                        "type": "numeric(12,2)",
                        "nullable": False,
                        "default": "0",
                        "check": "total >= 0",
                    },
                    {"name": "note", "type": "text", "renamedFrom": "remark"},
                ],
                "indexes": [
                    {"name": "orders_customer_idx", "columns": ["customer_id"]},
                    {"columns": ["state"], "where": "state <> 'new'"},
                ],
            },
        ),
        _resource(
            "TablePolicy",
            "orders-owner-read",
            {
                "projectRef": dict(REF),
                "table": "orders",
                "name": "orders_owner_read",
                "command": "select",
                "roles": ["authenticated"],
                "using": "exists (select 1 from customers c where c.id = orders.customer_id and c.id = auth.uid())",
            },
        ),
        _resource(
            "TablePolicy",
            "orders-owner-update",
            {
                "projectRef": dict(REF),
                "table": "orders",
                "command": "update",
                "roles": ["authenticated"],
                "using": "customer_id = auth.uid()",
                "withCheck": "customer_id = auth.uid() and total >= 0",
            },
        ),
        _resource(
            "TablePolicy",
            "customers-self",
            {
                "projectRef": dict(REF),
                "table": "customers",
                "command": "all",
                "roles": ["authenticated"],
                "using": "id = auth.uid()",
                "withCheck": "id = auth.uid()",
            },
        ),
        _resource(
            "Bucket",
            "shop-avatars",
            {
                "projectRef": dict(REF),
                "maxObjectSize": "5Mi",
                "allowedContentTypes": ["image/png"],
                "cors": [{"allowedOrigins": ["https://shop.example"], "allowedMethods": ["GET"]}],
                "lifecycle": [{"prefix": "tmp/", "expireAfterDays": 7}],
            },
        ),
        _resource(
            "ProjectSecret",
            "stripe-key",
            {"projectRef": dict(REF), "name": "STRIPE_KEY", "valueFrom": {"env": "STRIPE_KEY"}},
        ),
        _resource(
            "Function",
            "checkout",
            {
                "projectRef": dict(REF),
                "source": {"inline": "export default { fetch: () => new Response('ok') }"},
                "env": {"GREETING": "hello"},
                "secrets": ["STRIPE_KEY"],
                "http": {"auth": "jwt"},
                "timeoutSeconds": 10,
            },
        ),
        _resource(
            "EmailTemplate",
            "welcome",
            {
                "projectRef": dict(REF),
                "subject": "Welcome, {{ name }}",
                "markdown": "Hi **{{ name }}**",
                "variables": {"name": {"required": True}},
                "from": {"name": "Shop", "address": "noreply@shop.example"},
            },
        ),
    ]


def dump(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True)


BASELINE_TEXT = dump(baseline())

# -- JSON pointers ---------------------------------------------------------------------------------

VALID_POINTER = re.compile(r"(/([^/~]|~[01])*)*")
TRACEBACK = "Traceback (most recent call last)"


def escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _segments(pointer: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:]]


def _parent(document: Any, pointer: str) -> tuple[Any, str]:
    *path, last = _segments(pointer)
    node = document
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, last


def get_at(document: Any, pointer: str) -> Any:
    node, last = _parent(document, pointer)
    return node[int(last)] if isinstance(node, list) else node[last]


def set_at(document: Any, pointer: str, value: Any) -> None:
    """Set (or add, for a mapping key) the value at ``pointer``."""
    node, last = _parent(document, pointer)
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def delete_at(document: Any, pointer: str) -> None:
    node, last = _parent(document, pointer)
    del node[int(last) if isinstance(node, list) else last]


def rename_key(document: Any, pointer: str, new: str) -> None:
    """Replace the key at ``pointer`` by ``new``, keeping its value."""
    node, last = _parent(document, pointer)
    node[new] = node.pop(last)


# -- cases -----------------------------------------------------------------------------------------

Edit = Callable[[list[dict[str, Any]]], None]


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input and where its error must point."""

    id: str
    doc: int
    path: str
    edit: Edit | None = None
    raw: str | bytes | None = None

    def param(self) -> Any:
        return pytest.param(self, id=self.id)


def setting(
    case_id: str,
    doc: int,
    pointer: str,
    value: Any,
    expect: str | None = None,
) -> Case:
    """A case that sets ``pointer`` of document ``doc`` to ``value``."""

    def edit(documents: list[dict[str, Any]]) -> None:
        set_at(documents[doc], pointer, value)

    return Case(case_id, doc, pointer if expect is None else expect, edit)


def editing(case_id: str, doc: int, expect: str, edit: Edit) -> Case:
    """A case with an arbitrary edit of the baseline."""
    return Case(case_id, doc, expect, edit)


def appended(case_id: str, text: str, expect: str) -> Case:
    """Raw YAML appended to the baseline as one more document."""
    return Case(case_id, APPENDED, expect, raw=BASELINE_TEXT + "---\n" + text)


def standalone(case_id: str, raw: str | bytes, expect: str, *, doc: int = 0) -> Case:
    """A whole file of raw bytes or text."""
    return Case(case_id, doc, expect, raw=raw)


# -- running the CLI -------------------------------------------------------------------------------


def _write(case: Case, folder: Path) -> Path:
    folder.mkdir()
    target = folder / "specs.yaml"
    if isinstance(case.raw, bytes):
        target.write_bytes(case.raw)
    elif case.raw is not None:
        target.write_text(case.raw, encoding="utf-8")
    else:
        documents = baseline()
        assert case.edit is not None
        case.edit(documents)
        target.write_text(dump(documents), encoding="utf-8")
    return folder


def validate_cli(path: Path) -> tuple[Any, dict[str, Any]]:
    """``kliv validate PATH --output json`` in-process: the click result and the parsed JSON."""
    # No kliv.toml and no KLIV_* variable of the machine may change what the CLI reports.
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("KLIV_")}
    env["KLIV_CONFIG"] = str(path.parent / "absent-kliv.toml")
    result = CliRunner(env=env).invoke(app, ["validate", str(path), "--output", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"unhandled {type(result.exception).__name__}: {result.exception!r}"
    )
    assert TRACEBACK not in result.output
    return result, json.loads(result.stdout)


def assert_clean_errors(errors: list[dict[str, Any]]) -> None:
    for error in errors:
        assert VALID_POINTER.fullmatch(error["path"]), f"not a JSON pointer: {error['path']!r}"
        assert TRACEBACK not in error["message"]
        assert TRACEBACK not in error["hint"]
        assert error["severity"] == "error"
        assert error["message"].strip()


def assert_rejected(case: Case, folder: Path) -> None:
    result, payload = validate_cli(_write(case, folder))
    assert result.exit_code == 1, f"accepted (exit {result.exit_code}): {result.stdout[:500]}"
    assert payload["valid"] is False
    errors = payload["errors"]
    assert errors
    assert_clean_errors(errors)
    found = [(e["document"], e["path"]) for e in errors]
    assert (case.doc, case.path) in found, f"expected document {case.doc} at {case.path!r}; got {found}"
