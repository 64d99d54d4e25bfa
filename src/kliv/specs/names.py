"""Naming rules: Kubernetes object names, Postgres identifiers, S3 buckets, env vars.

Used by the spec models' field validators and by the physical-name defaults
(``metadata.name`` with ``-`` turned into ``_`` for Postgres objects).
"""

from __future__ import annotations

import ipaddress
import re

from pglast.keywords import RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

from kliv.specs.errors import SpecValueError

# "Reserved" and "reserved (can be function or type)" in Postgres' keyword
# appendix: neither can name a column or table unquoted.
RESERVED_WORDS = frozenset(RESERVED_KEYWORDS) | frozenset(TYPE_FUNC_NAME_KEYWORDS)

K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PG_IDENTIFIER_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Always used with fullmatch: `$` alone would accept a trailing newline.
_K8S_NAME = re.compile(K8S_NAME_PATTERN)
_PG_IDENTIFIER = re.compile(PG_IDENTIFIER_PATTERN)
_ENV_NAME = re.compile(ENV_NAME_PATTERN)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TEMPLATE_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

K8S_NAME_MAX = 63


def _shown(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + "…"


def printable(value: str) -> str:
    """Text that goes into SQL literals (comments, enum labels): no control characters."""
    bad = next((i for i, ch in enumerate(value) if ord(ch) < 32 and ch not in "\t\n\r"), None)
    if bad is not None:
        raise SpecValueError(f"control character at position {bad + 1}", "remove it")
    return value


def kubernetes_name(value: str) -> str:
    """A DNS-1123 label: what ``metadata.name`` must be for our kinds."""
    if len(value) > K8S_NAME_MAX:
        raise SpecValueError(
            f"name is {len(value)} characters long; at most {K8S_NAME_MAX} are allowed",
            "shorten the name",
        )
    if not _K8S_NAME.fullmatch(value):
        raise SpecValueError(
            f"`{_shown(value)}` is not a valid name: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit",
            f"try `{suggest_kubernetes_name(value)}`",
        )
    return value


def suggest_kubernetes_name(value: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    return cleaned[:K8S_NAME_MAX].strip("-") or "my-name"


def postgres_identifier(value: str, what: str = "identifier") -> str:
    """A lowercase, unquoted-safe Postgres identifier that is not a reserved word."""
    if len(value.encode()) > 63:
        raise SpecValueError(
            f"{what} `{_shown(value)}` is {len(value.encode())} bytes long; Postgres allows 63",
            "shorten the name",
        )
    if not _PG_IDENTIFIER.fullmatch(value):
        suggestion = re.sub(r"[^a-z0-9_]+", "_", value.lower()).strip("_") or "name"
        if suggestion[0].isdigit():
            suggestion = "_" + suggestion
        raise SpecValueError(
            f"{what} `{_shown(value)}` is not a valid Postgres identifier: use lowercase letters, "
            "digits and '_', starting with a letter or '_'",
            f"try `{suggestion[:63]}`",
        )
    if value in RESERVED_WORDS:
        raise SpecValueError(
            f"{what} `{value}` is a reserved word in Postgres",
            f"pick another name, e.g. `{value}_`, `{value}_name` or `{value}s`",
        )
    if value.startswith("pg_"):
        # pg_catalog is searched first: a table `pg_authid` would be created in public, but every later
        # GRANT or ALTER naming it would reach the system catalog of that name.
        raise SpecValueError(
            f"{what} `{value}` starts with `pg_`, which Postgres keeps for its own objects",
            f"pick another name, e.g. `{value[3:] or 'name'}`",
        )
    return value


# Types of pg_catalog without the `pg_` prefix (PG 15 to 18): pg_catalog is searched first, so an
# enum of one of these names would be created in public but never used: columns would get the system type.
PG_CATALOG_TYPES = frozenset({
    "aclitem", "any", "anyarray", "anycompatible", "anycompatiblearray", "anycompatiblemultirange",
    "anycompatiblenonarray", "anycompatiblerange", "anyelement", "anyenum", "anymultirange", "anynonarray",
    "anyrange", "bit", "bool", "box", "bpchar", "bytea", "char", "cid", "cidr", "circle", "cstring", "date",
    "datemultirange", "daterange", "event_trigger", "fdw_handler", "float4", "float8", "gtsvector",
    "index_am_handler", "inet", "int2", "int2vector", "int4", "int4multirange", "int4range", "int8",
    "int8multirange", "int8range", "internal", "interval", "json", "jsonb", "jsonpath", "language_handler", "line",
    "lseg", "macaddr", "macaddr8", "money", "name", "numeric", "nummultirange", "numrange", "oid", "oidvector",
    "path", "point", "polygon", "record", "refcursor", "regclass", "regcollation", "regconfig", "regdictionary",
    "regnamespace", "regoper", "regoperator", "regproc", "regprocedure", "regrole", "regtype", "table_am_handler",
    "text", "tid", "time", "timestamp", "timestamptz", "timetz", "trigger", "tsm_handler", "tsmultirange",
    "tsquery", "tsrange", "tstzmultirange", "tstzrange", "tsvector", "txid_snapshot", "unknown", "uuid", "varbit",
    "varchar", "void", "xid", "xid8", "xml",
})  # fmt: skip


def type_name(value: str) -> str:
    """A name for a type of the project (an enum): never one Postgres already resolves elsewhere."""
    postgres_identifier(value, "type name")
    if value in PG_CATALOG_TYPES or value.startswith("_"):
        raise SpecValueError(
            f"type name `{value}` is a Postgres system type"
            + (" (Postgres names array types `_<type>`)" if value.startswith("_") else ""),
            f"pick another name, e.g. `{value.strip('_')}_kind`",
        )
    return value


def physical_postgres_name(metadata_name: str) -> str:
    """The default physical name of a Postgres object named by ``metadata.name``."""
    return metadata_name.replace("-", "_")


def env_name(value: str, what: str = "name") -> str:
    """An environment variable name (secrets and function env are exposed as env)."""
    if len(value) > 128 or not _ENV_NAME.fullmatch(value):
        raise SpecValueError(
            f"{what} `{_shown(value)}` is not a valid environment variable name",
            "use letters, digits and '_', not starting with a digit (e.g. `STRIPE_KEY`)",
        )
    return value


# Environment variables that hold the control plane's own configuration or credentials, or the
# usual cloud, cluster and database ones: never a source of a tenant's secret (`valueFrom.env`).
CONTROL_PLANE_ENV_PREFIXES = (
    "KLIV_", "PG", "POSTGRES_", "AWS_", "AMAZON_", "AZURE_", "ARM_", "GOOGLE_", "GCP_", "GCLOUD_", "CLOUDSDK_",
    "KUBE", "DOCKER_", "SSH_", "VAULT_", "PULUMI_", "RABBITMQ_", "GITHUB_", "GH_", "CI_", "ACTIONS_", "RUNNER_",
    "DIGITALOCEAN_", "OS_", "CONSUL_", "NOMAD_", "MINIO_", "TF_", "HCLOUD_", "OCI_", "ALICLOUD_", "CLOUDFLARE_",
    "HEROKU_",
)  # fmt: skip
CONTROL_PLANE_ENV_NAMES = frozenset({
    "DATABASE_URL", "AMQP_URL", "HEROKU_API_KEY", "NPM_TOKEN", "CLOUDFLARE_API_TOKEN", "OP_SERVICE_ACCOUNT_TOKEN",
})  # fmt: skip
# The process's own surroundings: not credentials, but nothing a tenant should read either.
_PROCESS_ENV_NAMES = frozenset({"HOME", "PATH", "USER", "LOGNAME", "SHELL", "PWD", "XDG_RUNTIME_DIR"})


def is_control_plane_env(name: str) -> bool:
    """Whether an environment variable holds the control plane's configuration or a credential."""
    upper = name.upper()
    return upper in CONTROL_PLANE_ENV_NAMES or upper.startswith(CONTROL_PLANE_ENV_PREFIXES)


# Names Postgres gives every table's system columns: a column of one of them cannot be created.
SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid", "oid"})


def column_name(value: str) -> str:
    postgres_identifier(value, "column name")
    if value in SYSTEM_COLUMNS:
        raise SpecValueError(
            f"column name `{value}` is one of Postgres' system columns", f"pick another name, e.g. `{value}_value`"
        )
    return value


def table_name(value: str) -> str:
    postgres_identifier(value, "table name")
    if value == "information_schema":
        raise SpecValueError("table name `information_schema` is the name of Postgres' catalog views",
                             "pick another name")  # fmt: skip
    return value


def secret_source_env(value: str) -> str:
    """A variable `valueFrom.env` may read: not one of the control plane's own (nor cloud credentials)."""
    env_name(value, "variable")
    if is_control_plane_env(value) or value.upper() in _PROCESS_ENV_NAMES:
        raise SpecValueError(
            f"`{value}` is the control plane's own configuration or a cloud or database credential; "
            "kliv never copies it into a project",
            "put the value in a variable of its own (e.g. `STRIPE_KEY`) and read that",
        )
    return value


def template_variable(value: str) -> str:
    if not _TEMPLATE_VARIABLE.fullmatch(value):
        raise SpecValueError(
            f"template variable `{_shown(value)}` is not a valid name",
            "use letters, digits and '_', not starting with a digit",
        )
    return value


def bucket_name(value: str) -> str:
    """S3 general-purpose bucket naming rules."""
    hint = "use 3-63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
    if not _BUCKET.fullmatch(value):
        raise SpecValueError(f"`{_shown(value)}` is not a valid bucket name", hint)
    if ".." in value or ".-" in value or "-." in value:
        raise SpecValueError(f"bucket name `{value}` has adjacent '.'/'-' characters", hint)
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        pass
    else:
        raise SpecValueError(f"bucket name `{value}` looks like an IP address", hint)
    for prefix in ("xn--", "sthree-", "amzn-s3-demo-"):
        if value.startswith(prefix):
            raise SpecValueError(f"bucket names may not start with `{prefix}`", hint)
    for suffix in ("-s3alias", "--ol-s3", "--x-s3", ".mrap"):
        if value.endswith(suffix):
            raise SpecValueError(f"bucket names may not end with `{suffix}`", hint)
    return value
