"""The Function kind: a JavaScript/TypeScript edge function."""

from __future__ import annotations

import datetime
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from kliv.specs.base import SET, EnvName, K8sName, KlivModel, ProjectRef, Resource, cel
from kliv.specs.errors import SpecValueError

MAX_SOURCE_BYTES = 1024 * 1024
# Variables the runtime itself reads (a proxy would carry requests past the loopback ban, DENO_*
# and LD_* change how the sandbox runs) and the one kliv sets.
_RUNTIME_ENV = ("DENO_", "LD_", "RUST_", "V8_", "NODE_", "SSL", "OTEL_", "GLIBC_", "MALLOC_", "KLIV_", "NPM_")
_RUNTIME_ENV_NAMES = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "NO_COLOR", "HOME", "PATH",
                                "TMPDIR", "TMP", "TEMP"})  # fmt: skip


def runtime_env(name: str) -> bool:
    """Whether the runtime reads a variable of this name itself."""
    upper = name.upper()
    return upper in _RUNTIME_ENV_NAMES or upper.startswith(_RUNTIME_ENV)


_CRON_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def _cron(value: str) -> str:
    hint = "write five fields `minute hour day-of-month month day-of-week`, e.g. `*/15 * * * *`, or @daily"
    if value != value.strip() or "\n" in value:
        raise SpecValueError(f"`{value[:60]}` has surrounding spaces or line breaks", "write the expression alone")
    if value in _CRON_ALIASES:
        return value
    from croniter import croniter  # imported here: only specs with a schedule pay for it

    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise SpecValueError(f"`{value[:60]}` is not a cron expression", hint)
    try:  # valid fields that never match (`0 0 30 2 *`: February 30th) would stop the scheduler
        croniter(value, datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)).get_next(datetime.datetime)
    except Exception:
        raise SpecValueError(f"`{value[:60]}` never comes due", hint) from None
    return value


def _source_size(value: str) -> str:
    if len(value.encode()) > MAX_SOURCE_BYTES:
        raise SpecValueError("inline source is larger than 1 MiB", "bundle the code or split the function")
    if not value.strip():
        raise SpecValueError("inline source is empty", "write the function's code")
    return value


class Source(KlivModel):
    """The function's code."""

    inline: Annotated[str, AfterValidator(_source_size)] = Field(
        description="The module's source: it must export a default object with a `fetch` handler."
    )


class Http(KlivModel):
    """How the function is reached over HTTP."""

    auth: Literal["jwt", "none"] = Field(default="jwt", description="jwt: callers need a valid JWT.")


class FunctionSpec(KlivModel):
    """Desired state of a Function."""

    model_config = cel(
        (
            "!has(self.env) || !has(self.secrets) || self.secrets.all(s, !(s in self.env))",
            "a name cannot be both a plain env variable and a secret",
        ),
    )

    project_ref: ProjectRef
    name: K8sName | None = Field(
        default=None, description="Name in the URL `/functions/v1/<name>`; default: metadata.name."
    )
    runtime: Literal["deno", "nodejs20"] = Field(default="deno", description="JavaScript runtime.")
    source: Source
    env: dict[EnvName, Annotated[str, Field(max_length=32768)]] = Field(
        default_factory=dict,
        max_length=100,
        description="Plain environment variables (never secrets: use `secrets`).",
    )
    secrets: list[EnvName] = Field(
        default_factory=list,
        max_length=100,
        description="ProjectSecret names exposed as environment variables.",
        json_schema_extra=SET,
    )
    http: Http = Field(default_factory=Http, description="HTTP exposure.")
    schedule: Annotated[str, AfterValidator(_cron)] | None = Field(
        default=None, description="Cron schedule (UTC) to invoke the function."
    )
    timeout_seconds: int = Field(default=10, ge=1, le=900, description="Maximum run time per invocation.")
    memory_mib: int = Field(
        default=128, ge=16, le=1024, alias="memoryMiB", description="Memory limit of one instance, in MiB."
    )
    versions_kept: int = Field(
        default=5, ge=1, le=100, description="Deployed versions kept for rollback (the active one included)."
    )

    @model_validator(mode="after")
    def _secrets_are_not_env(self) -> Self:
        for field, names in (("env", list(self.env)), ("secrets", self.secrets)):
            for index, name in enumerate(names):
                if runtime_env(name):
                    raise SpecValueError(
                        f"`{name}` is read by the function runtime itself (proxies, DENO_*, OTEL_*, SSL*, LD_*, "
                        "KLIV_*)",
                        "give the variable another name, e.g. `APP_" + name.upper().lstrip("_") + "`",
                        field=f"{field}/{name if field == 'env' else index}",
                    )
        seen: set[str] = set()
        for index, secret in enumerate(self.secrets):
            if secret in seen:
                raise SpecValueError(f"secret `{secret}` is listed twice", "list it once", field=f"secrets/{index}")
            seen.add(secret)
            if secret in self.env:
                raise SpecValueError(
                    f"`{secret}` is both a plain env variable and a secret",
                    "remove it from `env`",
                    field=f"env/{secret}",
                )
        return self


class Function(Resource):
    """An edge function of a Project."""

    KIND: ClassVar[str] = "Function"
    PLURAL: ClassVar[str] = "functions"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("kf", "klivfunction")
    COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("Project", ".spec.projectRef.name", "string"),
        ("Runtime", ".spec.runtime", "string"),
        ("URL", ".status.outputs.url", "string"),
    )

    kind: Literal["Function"]
    spec: FunctionSpec

    @property
    def function_name(self) -> str:
        return self.spec.name or self.metadata.name
