"""Bad-input corpus for ``kliv validate``: hostile and malformed specs are rejected cleanly.

Every hand-written case starts from a valid baseline project (Project, two Tables with a
foreign key, TablePolicies, a Bucket, a ProjectSecret, a Function and an EmailTemplate),
changes one thing and states the JSON pointer (and the document) the error must name. Each
case runs through the real CLI in-process: exit 1, no unhandled exception, JSON output with
``valid: false`` and the expected pointer among the errors. The hypothesis tests generate
names, SQL fragments, field values and YAML and check the allow-lists from the other side:
whatever is accepted is within them, and nothing ever escapes as an exception.

The corpus found eight defects when it was written (comment-only fragments crashing, names
with a trailing newline, snake_case synonyms, duplicate enums and index names, C-stack
overflow on deep nesting, a wrong document index): they are fixed, and their cases are here.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from corpus_baseline import (
    APPENDED,
    BASELINE_TEXT,
    BUCKET,
    CUSTOMERS,
    FUNCTION,
    ORDERS,
    POLICY_READ,
    POLICY_SELF,
    POLICY_UPDATE,
    PROJECT,
    SECRET,
    TEMPLATE,
    Case,
    Edit,
    _write,
    appended,
    assert_rejected,
    baseline,
    delete_at,
    editing,
    escape,
    get_at,
    rename_key,
    set_at,
    setting,
    standalone,
    validate_cli,
)

from kliv.specs import API_VERSION
from kliv.specs.documents import MAX_FILE_BYTES
from kliv.specs.expressions import MAX_LENGTH

# -- SQL fragments ---------------------------------------------------------------------------------

# field id -> (document, pointer, a valid expression for that field)
SQL_FIELDS: dict[str, tuple[int, str, str]] = {
    "default": (CUSTOMERS, "/spec/columns/2/default", "now()"),
    "check": (CUSTOMERS, "/spec/columns/1/check", "length(email) > 3"),
    "index-where": (ORDERS, "/spec/indexes/1/where", "state <> 'new'"),
    "using": (POLICY_UPDATE, "/spec/using", "customer_id = auth.uid()"),
    "withCheck": (POLICY_UPDATE, "/spec/withCheck", "customer_id = auth.uid()"),
}

# family id -> template; `{ok}` is the field's valid expression
INJECTIONS: dict[str, str] = {
    "quote-break": "'; drop table x; --",
    "quote-break-after-valid": "{ok}'; drop table x; --",
    "stacked-drop": "{ok}; drop table orders",
    "stacked-select-sleep": "{ok}; select pg_sleep(10)",
    "comment-then-stacked": "{ok} --\n; drop table orders",
    "pg_sleep": "{ok} or pg_sleep(10) is null",
    "pg_catalog-pg_sleep": "{ok} or pg_catalog.pg_sleep(10) is null",
    "quoted-pg_sleep": '{ok} or "pg_sleep"(10) is null',
    "unicode-escaped-pg_sleep": '{ok} or U&"\\0070g_sleep"(10) is null',
    "pg_read_file": "{ok} or pg_read_file('/etc/passwd') is not null",
    "dblink": "{ok} or dblink('host=evil.example', 'select 1') is not null",
    "set_config": "{ok} or set_config('role', 'postgres', false) is not null",
    "current_setting": "{ok} or current_setting('request.jwt.claims') is not null",
    "regclass-cast": "{ok} or 'pg_authid'::regclass is not null",
    "catalog-subquery": "{ok} or exists (select 1 from pg_authid)",
    "catalog-schema-subquery": "{ok} or exists (select 1 from pg_catalog.pg_roles)",
    "other-schema-table": "{ok} or exists (select 1 from auth.users)",
    "other-schema-function": "{ok} or extensions.http_get('https://evil.example') is null",
    "comment-only": "-- drop table orders",
}


def _sql_injection_cases() -> Iterator[Case]:
    for field, (doc, pointer, ok) in SQL_FIELDS.items():
        for family, template in INJECTIONS.items():
            yield setting(f"{field}-{family}", doc, pointer, template.format(ok=ok))
    default_doc, default, _ = SQL_FIELDS["default"]
    yield setting("default-semicolon-only", default_doc, default, ";")
    yield setting("check-block-comment-only", CUSTOMERS, "/spec/columns/1/check", "/* x */")


_USING = "/spec/using"
POLICY_ATTACKS: dict[str, str] = {
    "information_schema": "exists (select 1 from information_schema.tables)",
    "public-schema-table": "exists (select 1 from public.orders)",
    "join-catalog": "exists (select 1 from customers c join pg_roles r on true)",
    "union-catalog": "exists (select 1 from customers union select 1 from pg_authid)",
    "cte": "exists (with x as (select 1) select 1 from x)",
    "lateral-subselect": "exists (select 1 from customers c, lateral (select 1) s)",
    "dblink-in-from": "exists (select 1 from dblink('a', 'b') as t(x int))",
    "table-command-catalog": "exists (table pg_authid)",
    "values-subquery": "exists (values (1))",
    "in-catalog-subquery": "customer_id in (select oid from pg_authid)",
    "scalar-subquery": "(select count(*) from pg_authid) > 0",
    "array-subquery": "array(select 1 from customers) is null",
    "for-update": "exists (select 1 from customers for update)",
    "group-having-sleep": "exists (select 1 from customers c group by c.id having pg_sleep(1) is null)",
    "order-by-sleep": "exists (select 1 from customers order by pg_sleep(1))",
    "sleep-in-target-list": "exists (select pg_sleep(1) from customers)",
    "catalog-column-qualifier": "pg_authid.rolpassword = 'x'",
    "three-part-column": "pg_catalog.pg_authid.rolname = 'x'",
    "schema-operator": "customer_id operator(pg_catalog.=) auth.uid()",
    "collate": "lower(note) collate \"C\" = 'a'",
    "parameter": "customer_id = $1",
    "xml-function": "xmlparse(document '<x/>') is null",
    "query_to_xml": "query_to_xml('select * from pg_authid', true, true, '') is null",
    "lo_import": "lo_import('/etc/passwd') > 0",
    "field-selection": "customer_id = (auth.jwt()).sub",
    "unknown-auth-function": "customer_id = auth.evil()",
    "cast-function-regclass": "cast('pg_authid' as regclass) is not null",
    "fragment-with-from": "1 from pg_authid",
    "fragment-with-order-by": "customer_id = auth.uid() order by 1",
    "fragment-with-alias": "customer_id = auth.uid() as ok",
    "fragment-into": "1 into evil",
    "fullwidth-semicolon": "customer_id = auth.uid()；drop table x",
    "folded-multiline-stacked": "customer_id = auth.uid();\ndrop table x",
    "control-character": "customer_id = auth.uid()\x07",
    "quoted-uppercase-catalog": 'exists (select 1 from "PG_AUTHID")',
    "unknown-column": "secret_column = auth.uid()",
    "empty": "",
    "whitespace-only": "   \n ",
    "over-long": "customer_id = auth.uid() or " + " or ".join(["total > 0"] * (MAX_LENGTH // 12)),
}
CONTEXT_ATTACKS: list[tuple[str, str, int, str]] = [
    ("default-subquery", "exists (select 1 from customers)", CUSTOMERS, "/spec/columns/2/default"),
    ("default-column-reference", "email", CUSTOMERS, "/spec/columns/2/default"),
    ("default-current-setting", "current_setting('is_superuser')", CUSTOMERS, "/spec/columns/2/default"),
    ("check-subquery", "exists (select 1 from orders)", CUSTOMERS, "/spec/columns/1/check"),
    ("check-auth-uid", "email <> auth.uid()::text", CUSTOMERS, "/spec/columns/1/check"),
    ("index-subquery", "exists (select 1 from customers)", ORDERS, "/spec/indexes/1/where"),
    ("index-auth-uid", "customer_id = auth.uid()", ORDERS, "/spec/indexes/1/where"),
    ("index-volatile-now", "now() > '2020-01-01'", ORDERS, "/spec/indexes/1/where"),
    ("index-random", "random() > 0.5", ORDERS, "/spec/indexes/1/where"),
    ("check-unknown-enum-cast", "'x'::no_such_type is null", CUSTOMERS, "/spec/columns/1/check"),
]


def _policy_cases() -> Iterator[Case]:
    for name, text in POLICY_ATTACKS.items():
        yield setting(f"using-{name}", POLICY_UPDATE, _USING, text)
    for name, text, doc, pointer in CONTEXT_ATTACKS:
        yield setting(name, doc, pointer, text)


SQL_CASES = [*_sql_injection_cases(), *_policy_cases()]


# -- identifiers -----------------------------------------------------------------------------------

IDENTIFIER_FIELDS: list[tuple[str, int, str]] = [
    ("table-name", ORDERS, "/spec/name"),
    ("column-name", ORDERS, "/spec/columns/4/name"),
    ("index-column", ORDERS, "/spec/indexes/0/columns/0"),
    ("index-name", ORDERS, "/spec/indexes/0/name"),
    ("fk-table", ORDERS, "/spec/columns/1/references/table"),
    ("fk-column", ORDERS, "/spec/columns/1/references/column"),
    ("table-renamedFrom", ORDERS, "/spec/renamedFrom"),
    ("column-renamedFrom", ORDERS, "/spec/columns/4/renamedFrom"),
    ("policy-name", POLICY_READ, "/spec/name"),
    ("policy-table", POLICY_READ, "/spec/table"),
    ("enum-name", PROJECT, "/spec/enums/0/name"),
    ("database-name", PROJECT, "/spec/database/name"),
]
RESERVED = ["select", "table", "user", "order", "check", "default", "column", "limit", "from", "where", "grant", "all"]
TYPE_FUNC_RESERVED = ["left", "join", "authorization", "verbose", "freeze", "similar", "collation", "inner", "natural"]
TYPE_FUNC_RESERVED += ["overlaps", "cross", "ilike"]


def _identifier_values(current: str, position: int) -> dict[str, str]:
    return {
        "quote-injection": "x'; drop table x; --",
        "double-quote-injection": 'x"; drop table x; --',
        "stacked-statement": "x; drop table y",
        "unicode-accent": "tâble",
        "unicode-cjk": "表",
        "cyrillic-homoglyph": "оrders",
        "over-long-64-ascii": "a" * 64,
        "over-long-64-bytes-multibyte": "é" * 32,
        f"reserved-{RESERVED[position]}": RESERVED[position],
        f"reserved-{TYPE_FUNC_RESERVED[position]}": TYPE_FUNC_RESERVED[position],
        "uppercase": current.upper(),
        "leading-digit": "1" + current,
        "empty": "",
        "trailing-newline": current + "\n",
    }


def _identifier_cases() -> Iterator[Case]:
    base = baseline()
    for position, (field, doc, pointer) in enumerate(IDENTIFIER_FIELDS):
        current = get_at(base[doc], pointer)
        for name, value in _identifier_values(current, position).items():
            yield setting(f"{field}-{name}", doc, pointer, value)


K8S_FIELDS: list[tuple[str, int, str]] = [
    ("table-metadata-name", ORDERS, "/metadata/name"),
    ("function-metadata-name", FUNCTION, "/metadata/name"),
    ("projectRef-name", ORDERS, "/spec/projectRef/name"),
    ("namespace", BUCKET, "/metadata/namespace"),
]
BAD_K8S_NAMES = {
    "injection": "x'; drop table x; --",
    "uppercase": "Orders",
    "underscore": "my_orders",
    "unicode": "tâble",
    "over-long-64": "a" * 64,
    "leading-dash": "-orders",
    "dot": "orders.v2",
    "empty": "",
}


def _k8s_cases() -> Iterator[Case]:
    for field, doc, pointer in K8S_FIELDS:
        for name, value in BAD_K8S_NAMES.items():
            yield setting(f"{field}-{name}", doc, pointer, value)
    yield setting("function-metadata-name-trailing-newline", FUNCTION, "/metadata/name", "checkout\n")


def _derived_name_cases() -> Iterator[Case]:
    def derived_table(documents: list[dict[str, Any]]) -> None:
        delete_at(documents[ORDERS], "/spec/name")
        set_at(documents[ORDERS], "/metadata/name", "order")

    def derived_database(name: str) -> Edit:
        def edit(documents: list[dict[str, Any]]) -> None:
            delete_at(documents[PROJECT], "/spec/database/name")
            set_at(documents[PROJECT], "/metadata/name", name)

        return edit

    def derived_policy(documents: list[dict[str, Any]]) -> None:
        set_at(documents[POLICY_UPDATE], "/metadata/name", "user")

    yield editing("derived-table-name-reserved", ORDERS, "/metadata/name", derived_table)
    yield editing("derived-database-name-reserved", PROJECT, "/metadata/name", derived_database("select"))
    yield editing("derived-database-name-leading-digit", PROJECT, "/metadata/name", derived_database("1shop"))
    yield editing("derived-policy-name-reserved", POLICY_UPDATE, "/metadata/name", derived_policy)


ENV_FIELDS: list[tuple[str, int, str]] = [
    ("secret-name", SECRET, "/spec/name"),
    ("secret-env-source", SECRET, "/spec/valueFrom/env"),
    ("function-secret", FUNCTION, "/spec/secrets/0"),
]
BAD_ENV_NAMES = {
    "shell-injection": "STRIPE_KEY; rm -rf /",
    "command-substitution": "$(id)",
    "dash": "STRIPE-KEY",
    "leading-digit": "1KEY",
    "unicode": "KÉY",
    "over-long-129": "K" * 129,
    "empty": "",
}


def _env_cases() -> Iterator[Case]:
    for field, doc, pointer in ENV_FIELDS:
        for name, value in BAD_ENV_NAMES.items():
            yield setting(f"{field}-{name}", doc, pointer, value)
    yield setting("secret-name-trailing-newline", SECRET, "/spec/name", "STRIPE_KEY\n")
    for name, key in (("space", "BAD NAME"), ("slash", "A/B"), ("tilde", "A~B"), ("injection", "$(rm -rf /)")):

        def edit(documents: list[dict[str, Any]], key: str = key) -> None:
            set_at(documents[FUNCTION], "/spec/env", {key: "hello"})

        yield editing(f"function-env-key-{name}", FUNCTION, "/spec/env/" + escape(key), edit)


BAD_BUCKET_NAMES = {
    "uppercase": "Shop-Avatars",
    "too-short": "sh",
    "over-long-64": "a" * 64,
    "underscore": "shop_avatars",
    "ip-address": "192.168.0.1",
    "xn-prefix": "xn--shop",
    "double-dot": "shop..avatars",
    "path-traversal": "../etc",
    "shell-injection": "a; rm -rf /",
    "s3alias-suffix": "shop-s3alias",
}


def _bucket_cases() -> Iterator[Case]:
    for name, value in BAD_BUCKET_NAMES.items():
        yield setting(f"bucket-name-{name}", BUCKET, "/spec/name", value)
    yield setting("bucket-name-trailing-newline", BUCKET, "/spec/name", "shop-avatars\n")


BAD_COLUMN_TYPES = {
    "stacked-statement": "text; drop table x",
    "closing-paren": "varchar(10)); drop table x; --",
    "schema-qualified": "pg_catalog.text",
    "catalog-type-regclass": "regclass",
    "catalog-type-oid": "oid",
    "reserved-word": "user",
    "serial": "serial",
    "collate-clause": 'text collate "C"',
    "zero-length": "varchar(0)",
    "huge-precision": "numeric(2000)",
    "two-dimensional-array": "text[][]",
    "unknown-enum": "order_status",
    "empty": "",
    "over-long": "a" * 65,
}


def _column_type_cases() -> Iterator[Case]:
    for name, value in BAD_COLUMN_TYPES.items():
        yield setting(f"column-type-{name}", CUSTOMERS, "/spec/columns/1/type", value)


IDENTIFIER_CASES = [
    *_identifier_cases(),
    *_k8s_cases(),
    *_derived_name_cases(),
    *_env_cases(),
    *_bucket_cases(),
    *_column_type_cases(),
]


# -- raw YAML --------------------------------------------------------------------------------------

_POLICY_HEAD = (
    f"apiVersion: {API_VERSION}\nkind: TablePolicy\nmetadata:\n  name: extra\n"
    "spec:\n  projectRef: {name: shop}\n  table: orders\n  command: select\n"
)

# The same policy without its projectRef line, for cases that supply their own.
_UNREFERENCED_POLICY = _POLICY_HEAD.replace("  projectRef: {name: shop}\n", "") + "  using: 'true'\n"


def _laughs(levels: int, fanout: int, indent: str = "") -> str:
    lines = [f"{indent}l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * fanout)
        lines.append(f"{indent}l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def _mapping_laughs(levels: int) -> str:
    lines = ["m0: &m0 {a: lol, b: lol, c: lol, d: lol, e: lol, f: lol, g: lol, h: lol, i: lol}"]
    for level in range(1, levels):
        refs = ", ".join(f"{k}: *m{level - 1}" for k in "abcdefghi")
        lines.append(f"m{level}: &m{level} {{{refs}}}")
    return "\n".join(lines) + "\n"


YAML_CASES = [
    appended("billion-laughs-in-spec", _POLICY_HEAD + "  using: 'true'\n  lol:\n" + _laughs(9, 9, "    "), ""),
    standalone("billion-laughs-top-level", _laughs(9, 9), ""),
    appended("billion-laughs-mappings", _mapping_laughs(8), ""),
    appended("recursive-alias-mapping", _POLICY_HEAD + "  using: 'true'\n  loop: &s {self: *s}\n", ""),
    appended("recursive-alias-sequence", "a: &a [*a]\n", ""),
    appended("recursive-alias-document", "&d {apiVersion: x, self: *d}\n", ""),
    appended("duplicate-key-kind", f"apiVersion: {API_VERSION}\nkind: Bucket\nkind: Project\n", "/kind"),
    appended(
        "duplicate-key-metadata-name",
        _POLICY_HEAD.replace("  name: extra\n", "  name: a\n  name: b\n"),
        "/metadata/name",
    ),
    appended("duplicate-key-spec-table", _POLICY_HEAD + "  table: customers\n  using: 'true'\n", "/spec/table"),
    appended("duplicate-key-quoted-variant", _POLICY_HEAD + "  using: 'true'\n  \"using\": 'false'\n", "/spec/using"),
    appended(
        "duplicate-key-in-column",
        f"apiVersion: {API_VERSION}\nkind: Table\nmetadata: {{name: extra}}\nspec:\n  projectRef: {{name: shop}}\n"
        "  columns:\n    - {name: id, type: uuid, name: other}\n",
        "/spec/columns/0/name",
    ),
    appended("merge-key-in-spec", "base: &b {projectRef: {name: shop}}\n" + _POLICY_HEAD + "  <<: *b\n", "/spec"),
    appended(
        "merge-key-in-column",
        f"apiVersion: {API_VERSION}\nkind: Table\nmetadata: {{name: extra}}\nspec:\n  projectRef: {{name: shop}}\n"
        "  columns:\n    - &c {name: id, type: uuid}\n    - {<<: *c, name: other}\n",
        "/spec/columns/1",
    ),
    appended(
        "python-object-apply-scalar", _POLICY_HEAD + "  using: !!python/object/apply:os.system 'id'\n", "/spec/using"
    ),
    appended("python-name-tag", _POLICY_HEAD + "  using: !!python/name:os.system ''\n", "/spec/using"),
    appended("custom-scalar-tag", _POLICY_HEAD + "  using: !include secret.sql\n", "/spec/using"),
    appended("binary-tag", _POLICY_HEAD + "  using: !!binary cGdfc2xlZXAoMSk=\n", "/spec/using"),
    appended(
        "python-object-new-on-mapping",
        _UNREFERENCED_POLICY + "  projectRef: !!python/object/new:os.system {name: shop}\n",
        "/spec/projectRef",
    ),
    appended(
        "python-object-apply-on-sequence",
        _POLICY_HEAD + "  using: 'true'\n  roles: !!python/object/apply:os.system [authenticated]\n",
        "/spec/roles",
    ),
    appended("custom-tag-on-mapping", _UNREFERENCED_POLICY + "  projectRef: !Ref {name: shop}\n", "/spec/projectRef"),
    appended("set-tag-on-mapping", _UNREFERENCED_POLICY + "  projectRef: !!set {shop}\n", "/spec/projectRef"),
    appended("omap-tag", _UNREFERENCED_POLICY + "  projectRef: !!omap [{name: shop}]\n", "/spec/projectRef"),
    appended("tab-indentation", "apiVersion: x\nkind: Project\nmetadata:\n\tname: x\n", ""),
    appended("unclosed-flow-sequence", "kind: [Project\n", ""),
    appended("bad-indentation", "kind: Project\n  metadata: x\n name: y\n", ""),
    appended("unterminated-quote", "kind: 'Project\n", ""),
    standalone("nul-character", "kind: Pro\x00ject\n", ""),
    appended("complex-mapping-key", "? [a, b]\n: c\n", ""),
    appended("numeric-key", _POLICY_HEAD + "  using: 'true'\n  1: x\n", "/spec/1"),
    appended("tilde-key", _POLICY_HEAD + "  using: 'true'\n  ~: x\n", "/spec/~0"),
    appended("slash-key", _POLICY_HEAD + "  using: 'true'\n  a/b: x\n", "/spec/a~1b"),
    appended("document-is-a-list", "- apiVersion: x\n- kind: Project\n", ""),
    appended("document-is-a-string", "kind Project\n", ""),
    appended("document-is-a-number", "42\n", ""),
    appended("document-is-null", "~\n", ""),
    appended("document-is-a-boolean", "true\n", ""),
    appended(
        "unknown-kind", f"apiVersion: {API_VERSION}\nkind: Database\nmetadata: {{name: x}}\nspec: {{}}\n", "/kind"
    ),
    appended("kind-wrong-case", _POLICY_HEAD.replace("kind: TablePolicy", "kind: tablepolicy"), "/kind"),
    appended("kind-missing", f"apiVersion: {API_VERSION}\nmetadata: {{name: x}}\nspec: {{}}\n", "/kind"),
    appended("kind-is-a-list", f"apiVersion: {API_VERSION}\nkind: [Project]\nmetadata: {{name: x}}\n", "/kind"),
    appended("apiVersion-v1", _POLICY_HEAD.replace(API_VERSION, "v1") + "  using: 'true'\n", "/apiVersion"),
    appended(
        "apiVersion-other-version", _POLICY_HEAD.replace("v1alpha1", "v1beta1") + "  using: 'true'\n", "/apiVersion"
    ),
    appended("apiVersion-missing", _POLICY_HEAD.split("\n", 1)[1] + "  using: 'true'\n", "/apiVersion"),
    appended("apiVersion-number", _POLICY_HEAD.replace(API_VERSION, "1") + "  using: 'true'\n", "/apiVersion"),
    appended(
        "folded-multiline-stacked-statement",
        _POLICY_HEAD + "  using: >-\n    customer_id = auth.uid();\n    drop table orders\n",
        "/spec/using",
    ),
    appended(
        "alias-reuses-injected-value",
        _POLICY_HEAD.replace("command: select", "command: update")
        + "  using: &u 'customer_id = auth.uid() or pg_sleep(1) is null'\n  withCheck: *u\n",
        "/spec/withCheck",
    ),
    appended(
        "nested-too-deeply",
        "a: " + "[" * 3000 + "]" * 3000 + "\n",
        "",
    ),
    standalone("not-utf8", b"kind: Project\nmetadata: {name: \xff\xfe}\n", ""),
    standalone("utf16-bytes", "kind: Project\n".encode("utf-16"), ""),
]


# -- unknown fields and wrong types ----------------------------------------------------------------

FIELD_CASES = [
    setting("unknown-top-level-field", PROJECT, "/extra", True),
    setting("unknown-metadata-field", PROJECT, "/metadata/nmae", "x"),
    setting("unknown-project-spec-field", PROJECT, "/spec/owner", "root"),
    setting("unknown-database-field", PROJECT, "/spec/database/password", "hunter2"),
    setting("unknown-enum-field", PROJECT, "/spec/enums/0/schema", "public"),
    setting("unknown-column-field", ORDERS, "/spec/columns/0/colour", "red"),
    setting("unknown-column-sql-field", ORDERS, "/spec/columns/0/generated", "pg_sleep(1)"),
    setting("unknown-references-field", ORDERS, "/spec/columns/1/references/schema", "pg_catalog"),
    setting("unknown-index-field", ORDERS, "/spec/indexes/0/include", ["note"]),
    setting("unknown-table-field", ORDERS, "/spec/schema", "public"),
    setting("unknown-policy-field-typo", POLICY_READ, "/spec/usng", "true"),
    setting("unknown-policy-field-permissive", POLICY_READ, "/spec/permissive", False),
    setting("unknown-cors-field", BUCKET, "/spec/cors/0/allowedHeadrs", []),
    setting("unknown-lifecycle-field", BUCKET, "/spec/lifecycle/0/days", 7),
    setting("plaintext-secret-value", SECRET, "/spec/value", "sk_live_123"),
    setting("unknown-valueFrom-field", SECRET, "/spec/valueFrom/value", "x"),
    setting("unknown-source-field", FUNCTION, "/spec/source/file", "/etc/passwd"),
    setting("unknown-http-field", FUNCTION, "/spec/http/cors", "*"),
    setting("unknown-variable-field", TEMPLATE, "/spec/variables/name/requried", True),
    setting("unknown-sender-field", TEMPLATE, "/spec/from/bcc", "x@evil.example"),
    setting("unknown-field-with-slash", PROJECT, "/spec/a~1b", 1),
    setting("unknown-field-with-tilde", PROJECT, "/spec/~0x", 1),
    setting("unknown-field-unicode", PROJECT, "/spec/dïsplayName", "x"),
    editing(
        "snake-case-project-ref",
        CUSTOMERS,
        "/spec/project_ref",
        lambda d: rename_key(d[CUSTOMERS], "/spec/projectRef", "project_ref"),
    ),
    editing(
        "snake-case-with-check",
        POLICY_SELF,
        "/spec/with_check",
        lambda d: rename_key(d[POLICY_SELF], "/spec/withCheck", "with_check"),
    ),
    setting(
        "snake-case-row-level-security",
        ORDERS,
        "/spec/row_level_security",
        False,
    ),
    setting("metadata-is-a-string", PROJECT, "/metadata", "shop"),
    setting("spec-is-a-list", PROJECT, "/spec", []),
    setting("spec-is-null", PROJECT, "/spec", None),
    editing("spec-missing", ORDERS, "/spec", lambda d: delete_at(d[ORDERS], "/spec")),
    editing("metadata-name-missing", ORDERS, "/metadata/name", lambda d: delete_at(d[ORDERS], "/metadata/name")),
    editing("projectRef-missing", ORDERS, "/spec/projectRef", lambda d: delete_at(d[ORDERS], "/spec/projectRef")),
    editing(
        "column-type-missing", ORDERS, "/spec/columns/4/type", lambda d: delete_at(d[ORDERS], "/spec/columns/4/type")
    ),
    setting("columns-is-a-string", ORDERS, "/spec/columns", "id uuid"),
    setting("columns-empty", ORDERS, "/spec/columns", []),
    setting("column-is-a-string", ORDERS, "/spec/columns/4", "note text"),
    setting("primaryKey-is-a-string", ORDERS, "/spec/columns/0/primaryKey", "yes"),
    setting("nullable-is-a-string", ORDERS, "/spec/columns/4/nullable", "no"),
    setting("default-is-a-list", CUSTOMERS, "/spec/columns/2/default", ["now()"]),
    setting("default-is-a-mapping", CUSTOMERS, "/spec/columns/2/default", {"sql": "now()"}),
    setting("using-is-a-list", POLICY_READ, "/spec/using", ["true"]),
    setting("references-is-a-string", ORDERS, "/spec/columns/1/references", "customers(id)"),
    setting("onDelete-unknown", ORDERS, "/spec/columns/1/references/onDelete", "drop"),
    setting("identity-unknown", ORDERS, "/spec/columns/0/identity", "serial"),
    setting("index-method-unknown", ORDERS, "/spec/indexes/0/method", "evil"),
    setting("index-columns-empty", ORDERS, "/spec/indexes/0/columns", []),
    setting("rowLevelSecurity-is-a-string", ORDERS, "/spec/rowLevelSecurity", "false"),
    setting("table-is-a-number", POLICY_READ, "/spec/table", 123),
    setting("table-is-a-boolean", POLICY_READ, "/spec/table", True),
    setting("roles-is-a-string", POLICY_READ, "/spec/roles", "anon"),
    setting("roles-unknown-role", POLICY_READ, "/spec/roles", ["authenticated", "postgres"], "/spec/roles/1"),
    setting("roles-duplicate", POLICY_READ, "/spec/roles", ["authenticated", "authenticated"]),
    setting("roles-empty", POLICY_READ, "/spec/roles", []),
    setting("command-unknown", POLICY_READ, "/spec/command", "truncate"),
    setting("select-policy-with-withCheck", POLICY_READ, "/spec/withCheck", "true"),
    setting("insert-policy-with-using", POLICY_UPDATE, "/spec/command", "insert", "/spec/using"),
    setting("enum-values-a-string", PROJECT, "/spec/enums/0/values", "new"),
    setting("enum-values-empty", PROJECT, "/spec/enums/0/values", []),
    setting("enum-values-duplicate", PROJECT, "/spec/enums/0/values", ["new", "new"]),
    setting("enum-label-over-long", PROJECT, "/spec/enums/0/values", ["é" * 32], "/spec/enums/0/values/0"),
    setting("deletionPolicy-lowercase", PROJECT, "/spec/deletionPolicy", "delete"),
    setting("displayName-over-long", PROJECT, "/spec/displayName", "x" * 201),
    setting("namespace-is-a-number", PROJECT, "/metadata/namespace", 7),
    setting("labels-is-a-list", PROJECT, "/metadata/labels", ["a"]),
    setting("annotation-value-is-a-number", PROJECT, "/metadata/annotations", {"a": 1}, "/metadata/annotations/a"),
    setting("column-type-is-a-number", ORDERS, "/spec/columns/4/type", 5),
    setting("column-description-over-long", ORDERS, "/spec/columns/4/description", "x" * 1025),
    setting("maxObjectSize-not-a-size", BUCKET, "/spec/maxObjectSize", "5 MB"),
    setting("maxObjectSize-negative", BUCKET, "/spec/maxObjectSize", -1),
    setting("public-is-a-string", BUCKET, "/spec/public", "true"),
    setting("content-type-injection", BUCKET, "/spec/allowedContentTypes/0", "image/png; drop"),
    setting("cors-origin-with-path", BUCKET, "/spec/cors/0/allowedOrigins/0", "https://shop.example/x"),
    setting("cors-method-unknown", BUCKET, "/spec/cors/0/allowedMethods/0", "TRACE"),
    setting("lifecycle-days-zero", BUCKET, "/spec/lifecycle/0/expireAfterDays", 0),
    editing(
        "secret-both-sources",
        SECRET,
        "/spec/valueFrom",
        lambda d: set_at(d[SECRET], "/spec/generate", {"length": 32}),
    ),
    editing("secret-no-source", SECRET, "/spec", lambda d: delete_at(d[SECRET], "/spec/valueFrom")),
    setting("secret-generate-too-short", SECRET, "/spec/generate", {"length": 8}, "/spec/generate/length"),
    setting("timeoutSeconds-is-a-string", FUNCTION, "/spec/timeoutSeconds", "10"),
    setting("timeoutSeconds-is-a-float", FUNCTION, "/spec/timeoutSeconds", 10.5),
    setting("timeoutSeconds-too-large", FUNCTION, "/spec/timeoutSeconds", 100000),
    setting("runtime-unknown", FUNCTION, "/spec/runtime", "python"),
    setting("http-auth-unknown", FUNCTION, "/spec/http/auth", "basic"),
    setting("schedule-not-cron", FUNCTION, "/spec/schedule", "every day; rm -rf /"),
    setting("inline-source-empty", FUNCTION, "/spec/source/inline", "  "),
    setting("inline-source-over-1-MiB", FUNCTION, "/spec/source/inline", "x" * (1024 * 1024 + 1)),
    setting("secret-listed-twice", FUNCTION, "/spec/secrets", ["STRIPE_KEY", "STRIPE_KEY"], "/spec/secrets/1"),
    setting("env-and-secret-same-name", FUNCTION, "/spec/env", {"STRIPE_KEY": "x"}, "/spec/env/STRIPE_KEY"),
    setting("subject-multiline-header-injection", TEMPLATE, "/spec/subject", "Hi\r\nBcc: x@evil.example"),
    setting("template-include", TEMPLATE, "/spec/markdown", "{% include '/etc/passwd' %}"),
    setting("template-syntax-error", TEMPLATE, "/spec/markdown", "{{ name "),
    setting("template-string-multiplication", TEMPLATE, "/spec/markdown", "{{ 'x' * 1500000000 }}"),
    setting("template-python-internals", TEMPLATE, "/spec/subject", "{{ ''.__class__.__mro__ }}"),
    setting("template-attr-filter", TEMPLATE, "/spec/markdown", "{{ name | attr('__class__') }}"),
    setting("template-range-loop", TEMPLATE, "/spec/markdown", "{% for i in range(9999999) %}x{% endfor %}"),
    setting("template-nul", TEMPLATE, "/spec/markdown", "Hi\x00 there"),
    setting("sender-name-nul", TEMPLATE, "/spec/from/name", "Shop\x00"),
    setting("table-description-nul", ORDERS, "/spec/description", "orders\x00"),
    setting("enum-label-nul", PROJECT, "/spec/enums/0/values/0", "a\x00b"),
    setting("sender-address-invalid", TEMPLATE, "/spec/from/address", "not-an-email"),
    setting("variable-name-invalid", TEMPLATE, "/spec/variables", {"1bad": {}}, "/spec/variables/1bad"),
    setting(
        "required-variable-with-default",
        TEMPLATE,
        "/spec/variables/name",
        {"required": True, "default": "x"},
    ),
    setting("identity-with-default", ORDERS, "/spec/columns/0/default", "1"),
    setting("identity-on-text", ORDERS, "/spec/columns/0/type", "text", "/spec/columns/0/identity"),
    setting("primary-key-nullable", ORDERS, "/spec/columns/0/nullable", True),
    setting("table-renamed-from-itself", ORDERS, "/spec/renamedFrom", "orders"),
    setting("column-renamed-from-itself", ORDERS, "/spec/columns/4/renamedFrom", "note"),
]


# -- dangling references and duplicates ------------------------------------------------------------


def _duplicate_document(index: int, **changes: Any) -> Edit:
    def edit(documents: list[dict[str, Any]]) -> None:
        twin = copy.deepcopy(documents[index])
        for pointer, value in changes.items():
            set_at(twin, "/" + pointer.replace("__", "/"), value)
        documents.append(twin)

    return edit


def _no_primary_key(documents: list[dict[str, Any]]) -> None:
    set_at(documents[CUSTOMERS], "/spec/columns/0/primaryKey", False)
    delete_at(documents[ORDERS], "/spec/columns/1/references/column")


REFERENCE_CASES = [
    setting("projectRef-unknown-project", ORDERS, "/spec/projectRef/name", "shopp"),
    setting("projectRef-other-namespace", BUCKET, "/metadata/namespace", "prod", "/spec/projectRef/name"),
    setting("fk-table-missing", ORDERS, "/spec/columns/1/references/table", "clients"),
    setting("fk-column-missing", ORDERS, "/spec/columns/1/references/column", "uid"),
    setting("fk-column-not-unique", ORDERS, "/spec/columns/1/references/column", "created_at"),
    setting("fk-type-mismatch", ORDERS, "/spec/columns/1/type", "bigint", "/spec/columns/1/type"),
    setting("fk-setNull-on-not-null", ORDERS, "/spec/columns/1/references/onDelete", "setNull"),
    setting("policy-table-missing", POLICY_READ, "/spec/table", "purchases"),
    setting("index-column-missing", ORDERS, "/spec/indexes/0/columns/0", "customer"),
    setting("column-type-enum-missing", ORDERS, "/spec/columns/2/type", "order_status"),
    setting("check-column-missing", CUSTOMERS, "/spec/columns/1/check", "length(mail) > 3"),
    setting("index-where-column-missing", ORDERS, "/spec/indexes/1/where", "status <> 'new'"),
    setting("using-column-missing", POLICY_UPDATE, "/spec/using", "owner_id = auth.uid()"),
    setting("using-exists-table-missing", POLICY_READ, "/spec/using", "exists (select 1 from clients c)"),
    setting(
        "using-exists-alias-column-missing",
        POLICY_READ,
        "/spec/using",
        "exists (select 1 from customers c where c.owner = auth.uid())",
    ),
    setting("using-qualifier-not-in-scope", POLICY_UPDATE, "/spec/using", "p.customer_id = auth.uid()"),
    setting("using-cast-unknown-type", POLICY_UPDATE, "/spec/using", "state = 'new'::order_status"),
    setting("function-secret-missing", FUNCTION, "/spec/secrets/0", "STRIPE_SECRET"),
    setting("template-variable-undeclared", TEMPLATE, "/spec/markdown", "Hi {{ name }}, {{ token }}"),
    setting("template-subject-variable-undeclared", TEMPLATE, "/spec/subject", "Hi {{ nam }}"),
    setting("table-renamedFrom-still-declared", ORDERS, "/spec/renamedFrom", "customers"),
    editing("fk-to-table-without-single-primary-key", ORDERS, "/spec/columns/1/references", _no_primary_key),
    editing("duplicate-table-object", APPENDED, "/metadata/name", _duplicate_document(ORDERS)),
    editing(
        "duplicate-table-physical-name",
        APPENDED,
        "/spec/name",
        _duplicate_document(ORDERS, metadata__name="orders-copy"),
    ),
    editing(
        "duplicate-policy-name-on-table",
        APPENDED,
        "/spec/name",
        _duplicate_document(POLICY_READ, metadata__name="orders-owner-read-2"),
    ),
    editing(
        "duplicate-database-name",
        APPENDED,
        "/spec/database/name",
        _duplicate_document(PROJECT, metadata__name="shop-two"),
    ),
    editing(
        "duplicate-bucket-name",
        APPENDED,
        "/spec/name",
        _duplicate_document(BUCKET, metadata__name="other", spec__name="shop-avatars"),
    ),
    editing(
        "duplicate-secret-name",
        APPENDED,
        "/spec/name",
        _duplicate_document(SECRET, metadata__name="stripe-key-2"),
    ),
    editing(
        "duplicate-enum-name",
        PROJECT,
        "/spec/enums/1/name",
        lambda d: d[PROJECT]["spec"]["enums"].append({"name": "order_state", "values": ["a"]}),
    ),
    setting(
        "duplicate-index-name-in-table",
        ORDERS,
        "/spec/indexes/1/name",
        "orders_customer_idx",
    ),
    editing(
        "index-name-claimed-by-other-table",
        ORDERS,
        "/spec/indexes/0/name",
        lambda d: set_at(d[CUSTOMERS], "/spec/indexes/0/name", "orders_customer_idx"),
    ),
    setting("enum-shadows-builtin-type", PROJECT, "/spec/enums/0/name", "text"),
    setting("duplicate-column-name", ORDERS, "/spec/columns/4/name", "state"),
    setting("column-renamedFrom-collides", ORDERS, "/spec/columns/4/renamedFrom", "total"),
]


ALL_CASES = [*SQL_CASES, *IDENTIFIER_CASES, *YAML_CASES, *FIELD_CASES, *REFERENCE_CASES]

# -- hand-written corpus ---------------------------------------------------------------------------


class TestCorpus:
    """The corpus itself: large enough, distinct, covering every field."""

    def test_baseline_is_valid(self, tmp_path: Path) -> None:
        """The baseline every case mutates validates with exit 0, no errors and no warnings."""
        folder = tmp_path / "baseline"
        folder.mkdir()
        (folder / "specs.yaml").write_text(BASELINE_TEXT, encoding="utf-8")
        result, payload = validate_cli(folder)
        assert result.exit_code == 0, payload
        assert (payload["valid"], payload["errors"], payload["warnings"]) == (True, [], [])
        assert (payload["documents"], payload["projects"]) == (10, 1)

    def test_corpus_is_large_enough(self) -> None:
        """The hand-written corpus alone holds at least 150 distinct cases."""
        ids = [case.id for case in ALL_CASES]
        assert len(ids) >= 150
        assert len(set(ids)) == len(ids), "case ids must be unique"

    def test_every_sql_field_meets_every_injection_family(self) -> None:
        """Each SQL fragment field is attacked with each injection family."""
        ids = {case.id for case in SQL_CASES}
        assert {f"{field}-{family}" for field in SQL_FIELDS for family in INJECTIONS} <= ids


class TestSqlInjection:
    """SQL injection and disallowed constructs in every SQL fragment field."""

    @pytest.mark.parametrize("case", [c.param() for c in SQL_CASES])
    def test_fragment_is_rejected(self, case: Case, tmp_path: Path) -> None:
        """A hostile or disallowed SQL fragment fails validation at its own field."""
        assert_rejected(case, tmp_path / "specs")


class TestIdentifiers:
    """Hostile and malformed names in every identifier field."""

    @pytest.mark.parametrize("case", [c.param() for c in IDENTIFIER_CASES])
    def test_name_is_rejected(self, case: Case, tmp_path: Path) -> None:
        """An injected, unicode, over-long, reserved or malformed name fails at its field."""
        assert_rejected(case, tmp_path / "specs")

    @pytest.mark.parametrize("word", ["role", "name", "status"])
    def test_non_reserved_keyword_is_accepted(self, word: str, tmp_path: Path) -> None:
        """Non-reserved keywords stay usable as column names (the rule is not over-broad)."""
        case = setting(f"column-{word}", ORDERS, "/spec/columns/4/name", word)
        result, payload = validate_cli(_write(case, tmp_path / "specs"))
        assert result.exit_code == 0, payload["errors"]


class TestYamlAttacks:
    """YAML-level attacks and malformed files."""

    @pytest.mark.parametrize("case", [c.param() for c in YAML_CASES])
    def test_document_is_rejected(self, case: Case, tmp_path: Path) -> None:
        """Alias bombs, duplicate keys, tags, broken YAML and non-spec documents are refused."""
        assert_rejected(case, tmp_path / "specs")

    def test_oversized_file_is_refused_unread(self, tmp_path: Path) -> None:
        """A file over the size limit is refused before it is read."""
        folder = tmp_path / "specs"
        folder.mkdir()
        with (folder / "huge.yaml").open("wb") as handle:
            handle.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
        result, payload = validate_cli(folder)
        assert result.exit_code == 1
        assert [(e["document"], e["path"]) for e in payload["errors"]] == [(0, "")]

    def test_extremely_deep_nesting_does_not_crash_the_process(self, tmp_path: Path) -> None:
        """A 200 kB file of nested brackets gets a clean error, not a segmentation fault (own process)."""
        spec = tmp_path / "deep.yaml"
        spec.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
        env = {"KLIV_CONFIG": str(tmp_path / "absent-kliv.toml"), "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, "-m", "kliv", "validate", str(spec), "--output", "json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        assert done.returncode == 1, f"exit {done.returncode}: {done.stderr[-500:]}"
        assert json.loads(done.stdout)["valid"] is False


class TestUnknownFieldsAndTypes:
    """Unknown fields, wrong types and inconsistent values."""

    @pytest.mark.parametrize("case", [c.param() for c in FIELD_CASES])
    def test_field_is_rejected(self, case: Case, tmp_path: Path) -> None:
        """Unknown fields, wrong types, out-of-range values and inconsistent fields fail at their pointer."""
        assert_rejected(case, tmp_path / "specs")


class TestDanglingReferences:
    """References that do not resolve and names claimed twice."""

    @pytest.mark.parametrize("case", [c.param() for c in REFERENCE_CASES])
    def test_reference_is_rejected(self, case: Case, tmp_path: Path) -> None:
        """References to missing projects, tables, columns, types and secrets, and duplicate claims, fail."""
        assert_rejected(case, tmp_path / "specs")
