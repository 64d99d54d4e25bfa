"""Near-miss specs agents write: forms from Python, JavaScript/TypeScript, Prisma, MySQL, SQL Server,
SQLite and Supabase's documentation, each with the pointer its problem must name and the word its
hint must contain for the agent to fix it in one try.

Used by tests/unit/test_near_misses.py (every case must hit) and benchmarks/near_misses.py (the hit
rate, in benchmarks/README.md). A case is one or more YAML documents appended to :data:`BASELINE`.
"""

from __future__ import annotations

import dataclasses

BASELINE = """\
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: shop}
spec:
  enums: [{name: order_state, values: [open, paid]}]
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: customers}
spec:
  projectRef: {name: shop}
  columns:
    - {name: id, type: uuid, primaryKey: true, default: gen_random_uuid()}
    - {name: email, type: text, nullable: false}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: customers-read}
spec: {projectRef: {name: shop}, table: customers, command: select, using: "id = auth.uid()"}
"""


@dataclasses.dataclass(frozen=True)
class NearMiss:
    name: str
    documents: str  # appended to BASELINE
    path: str  # the JSON pointer the problem names
    word: str  # what the hint (or message) must contain


def _table(column: str, extra: str = "") -> str:
    return (
        "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Table\nmetadata: {name: orders}\nspec:\n"
        "  projectRef: {name: shop}\n  columns:\n    - {name: id, type: uuid, primaryKey: true}\n"
        f"    - {column}\n{extra}"
    )


def _type(name: str, word: str, origin: str) -> NearMiss:
    return NearMiss(f"type {name} ({origin})", _table(f"{{name: value, type: {name}}}"), "/spec/columns/1/type", word)


def _policy(spec: str) -> str:
    return (
        "apiVersion: cloud.kliv.dev/v1alpha1\nkind: TablePolicy\nmetadata: {name: customers-own}\n"
        f"spec: {{projectRef: {{name: shop}}, table: customers, {spec}}}\n"
    )


def _database_function(body: str) -> str:
    return (
        "apiVersion: cloud.kliv.dev/v1alpha1\nkind: DatabaseFunction\nmetadata: {name: stamp}\nspec:\n"
        f"  projectRef: {{name: shop}}\n  language: plpgsql\n  returns: trigger\n  security: definer\n  body: {body}\n"
    )


def _trigger(function: str, table: str = "customers") -> str:
    return (
        "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Trigger\nmetadata: {name: stamp}\nspec:\n"
        f"  projectRef: {{name: shop}}\n  table: {table}\n  timing: before\n  events: [insert]\n"
        f"  function: '{function}'\n"
    )


CASES = [
    # Column types (lowercased by the parser, as Postgres folds them).
    _type("datetime", "timestamptz", "Python, MySQL, Prisma DateTime"),
    _type("DateTime", "timestamptz", "Prisma"),
    _type("datetime2", "timestamptz", "SQL Server"),
    _type("string", "text", "JavaScript, Prisma String"),
    _type("str", "text", "Python"),
    _type("nvarchar", "text", "SQL Server"),
    _type("longtext", "text", "MySQL"),
    _type("mediumtext", "text", "MySQL"),
    _type("tinytext", "text", "MySQL"),
    _type("long", "bigint", "Java"),
    _type("int64", "bigint", "Go"),
    _type("tinyint", "smallint", "MySQL"),
    _type("short", "smallint", "Java"),
    _type("double", "double precision", "MySQL, Java"),
    _type("number", "numeric", "JavaScript, TypeScript"),
    _type("float64", "double precision", "Go"),
    _type("money", "numeric", "SQL Server"),
    _type("object", "jsonb", "JavaScript"),
    _type("dict", "jsonb", "Python"),
    _type("map", "jsonb", "Go"),
    _type("array", "[]", "JavaScript"),
    _type("list", "[]", "Python"),
    _type("blob", "bytea", "MySQL, SQLite"),
    _type("binary", "bytea", "MySQL"),
    _type("bytes", "bytea", "Python, Prisma Bytes"),
    _type("buffer", "bytea", "Node.js"),
    _type("guid", "uuid", ".NET"),
    _type("uniqueidentifier", "uuid", "SQL Server"),
    _type("objectid", "uuid", "MongoDB"),
    _type("autoincrement", "identity", "Prisma, SQLite"),
    _type("serial", "identity", "old Postgres tutorials"),
    _type("bigserial", "identity", "old Postgres tutorials"),
    _type("timedelta", "interval", "Python"),
    _type("duration", "interval", "Go, Java"),
    _type("ip", "inet", "everyday speech"),
    _type("enum", "spec.enums", "MySQL ENUM"),
    _type("year", "smallint", "MySQL"),
    _type("bit", "boolean", "SQL Server"),
    NearMiss("type text(255) (MySQL)", _table("{name: value, type: text(255)}"), "/spec/columns/1/type",
             "varchar(255)"),
    NearMiss("type varchar without a length", _table("{name: value, type: varchar}"), "/spec/columns/1/type", "text"),
    NearMiss("type json (json object)", _table("{name: value, type: json}"), "/spec/columns/1/type", "jsonb"),
    NearMiss("a wrong type beside an unknown field (both at once)",
             _table("{name: value, type: datetime}", "  colour: red\n"), "/spec/columns/1/type", "timestamptz"),
    # Column fields from ORMs.
    NearMiss("primary_key (snake_case)", _table("{name: value, type: text, primary_key: true}"),
             "/spec/columns/1/primary_key", "primaryKey"),
    NearMiss("required (Mongoose, JSON Schema)", _table("{name: value, type: text, required: true}"),
             "/spec/columns/1/required", "nullable: false"),
    NearMiss("notNull (Drizzle)", _table("{name: value, type: text, notNull: true}"), "/spec/columns/1/notNull",
             "nullable: false"),
    NearMiss("allowNull (Sequelize)", _table("{name: value, type: text, allowNull: false}"),
             "/spec/columns/1/allowNull", "nullable"),
    NearMiss("autoIncrement (Sequelize)", _table("{name: value, type: bigint, autoIncrement: true}"),
             "/spec/columns/1/autoIncrement", "identity"),
    NearMiss("defaultValue (Sequelize)", _table("{name: value, type: text, defaultValue: \"'x'\"}"),
             "/spec/columns/1/defaultValue", "default"),
    NearMiss("foreignKey (ORMs)", _table("{name: customer_id, type: uuid, foreignKey: customers}"),
             "/spec/columns/1/foreignKey", "references"),
    NearMiss("comment (MySQL)", _table("{name: value, type: text, comment: the value}"),
             "/spec/columns/1/comment", "description"),
    NearMiss("references auth.users as text (Supabase)",
             _table("{name: owner, type: text, references: {table: auth.users}}"),
             "/spec/columns/1/type", "type: uuid"),
    NearMiss("references auth.users by email", _table("{name: owner, type: text, references: {table: auth.users, "
             "column: email}}"), "/spec/columns/1/references/column", "leave `column` out"),
    NearMiss("references a schema-qualified table",
             _table("{name: c, type: uuid, references: {table: public.customers}}"),
             "/spec/columns/1/references/table", "table: customers"),
    # Defaults from other databases.
    NearMiss("default uuid_generate_v4() (uuid-ossp)", _table("{name: value, type: uuid, default: uuid_generate_v4()}"),
             "/spec/columns/1/default", "gen_random_uuid()"),
    NearMiss("default getdate() (SQL Server)", _table("{name: value, type: timestamptz, default: getdate()}"),
             "/spec/columns/1/default", "now()"),
    NearMiss("default datetime('now') (SQLite)",
             _table("{name: value, type: timestamptz, default: \"datetime('now')\"}"),
             "/spec/columns/1/default", "now()"),
    NearMiss("default cuid() (Prisma)", _table("{name: value, type: text, default: cuid()}"),
             "/spec/columns/1/default", "gen_random_uuid()"),
    NearMiss("default uuid() (Prisma, MySQL)", _table("{name: value, type: uuid, default: uuid()}"),
             "/spec/columns/1/default", "gen_random_uuid()"),
    # Policies.
    NearMiss("command read", _policy("command: read, using: 'id = auth.uid()'"), "/spec/command", "select"),
    NearMiss("command write", _policy("command: write, using: 'id = auth.uid()'"), "/spec/command", "insert"),
    NearMiss("role public (SQL)", _policy("command: select, roles: [public], using: 'true'"), "/spec/roles/0", "anon"),
    NearMiss("role admin", _policy("command: select, roles: [admin], using: 'true'"), "/spec/roles/0", "service_role"),
    NearMiss("role misspelt in a list", _policy("command: select, roles: [anon, authentcated], using: 'true'"),
             "/spec/roles/1", "authenticated"),
    NearMiss("auth.uid without ()", _policy("command: select, using: 'id = auth.uid'"), "/spec/using", "auth.uid()"),
    NearMiss("== (JavaScript)", _policy("command: select, using: 'id == auth.uid()'"), "/spec/using", "="),
    NearMiss("&& (JavaScript)", _policy("command: select, using: \"id = auth.uid() && email <> ''\""),
             "/spec/using", "and"),
    NearMiss("with_check (snake_case)", _policy("command: insert, with_check: 'id = auth.uid()'"),
             "/spec/with_check", "withCheck"),
    NearMiss("check (SQL's WITH CHECK)", _policy("command: insert, check: 'id = auth.uid()'"), "/spec/check",
             "withCheck"),
    NearMiss("(select ...) over a table (Supabase)",
             _policy("command: select, using: 'id = (select id from customers limit 1)'"), "/spec/using",
             "(select auth.uid())"),
    # Kinds and versions.
    NearMiss("kind Tabel", "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Tabel\nmetadata: {name: x}\n", "/kind", "Table"),
    NearMiss("kind Policy", "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Policy\nmetadata: {name: x}\n", "/kind",
             "TablePolicy"),
    NearMiss("kind RLSPolicy", "apiVersion: cloud.kliv.dev/v1alpha1\nkind: RLSPolicy\nmetadata: {name: x}\n", "/kind",
             "TablePolicy"),
    NearMiss("kind Secret (Kubernetes)", "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Secret\nmetadata: {name: x}\n",
             "/kind", "ProjectSecret"),
    NearMiss("kind EdgeFunction (Supabase)",
             "apiVersion: cloud.kliv.dev/v1alpha1\nkind: EdgeFunction\nmetadata: {name: x}\n", "/kind", "Function"),
    NearMiss("apiVersion kliv.dev/v1", "apiVersion: kliv.dev/v1\nkind: Table\nmetadata: {name: x}\n", "/apiVersion",
             "cloud.kliv.dev/v1alpha1"),
    # Email templates.
    NearMiss("template variable typo",
             "apiVersion: cloud.kliv.dev/v1alpha1\nkind: EmailTemplate\nmetadata: {name: receipt}\nspec:\n"
             "  projectRef: {name: shop}\n  subject: 'Hi {{ custmer_name }}'\n  markdown: 'Thanks'\n"
             "  variables: {customer_name: {required: true}}\n", "/spec/subject", "customer_name"),
    # Database functions and triggers, as Supabase's SQL writes them.
    NearMiss("body with its dollar quotes", _database_function("'$$ begin return new; end; $$'"), "/spec/body",
             "inside `$$ ... $$`"),
    NearMiss("trigger function as SQL calls it",
             _database_function("'begin return new; end;'") + "---\n" + _trigger("public.stamp()"),
             "/spec/function", "function: stamp"),
    NearMiss("trigger on a schema-qualified table",
             _database_function("'begin return new; end;'") + "---\n" + _trigger("stamp", "public.customers"),
             "/spec/table", "table: customers"),
    NearMiss("definer body with set search_path",
             _database_function("'begin set search_path = public; return new; end;'"), "/spec/body", "SELECT"),
]  # fmt: skip
