"""Configuration: environment variables (``KLIV_*``) over a ``kliv.toml`` file over defaults.

Read once by each CLI command (``kliv operator`` included) and passed down; lower layers
receive the parts they need as plain values and never read the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE = "kliv.toml"


def _url(schemes: tuple[str, ...]) -> Any:
    """A validator: ``None`` or a URL of one of ``schemes`` with a host (never echoing it: it may hold a password)."""

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            valid = parts.scheme in schemes and bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f"not a {' or '.join(schemes)} URL with a host, e.g. {schemes[0]}://host:port")
        return value

    return AfterValidator(check)


def _comma_separated(value: Any) -> Any:
    """``a,b`` from the environment; a list from kliv.toml stays as it is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class PolicySettings(BaseModel):
    """The ``[policies]`` table: turn guardrail rules off or change their severity."""

    model_config = ConfigDict(extra="forbid")

    disable: list[str] = Field(default_factory=list, description="Rule ids to skip.")
    severity: dict[str, Literal["error", "warning", "info"]] = Field(
        default_factory=dict, description="Rule id -> severity override."
    )


class Settings(BaseSettings):
    """Everything ``kliv`` can be configured with."""

    model_config = SettingsConfigDict(env_prefix="KLIV_", extra="forbid", env_nested_delimiter="__")

    database_url: str | None = Field(default=None, description="Admin DSN of the Postgres server.")
    amqp_url: Annotated[str | None, _url(("amqp", "amqps"))] = Field(
        default=None, description="RabbitMQ URL for audit events."
    )
    s3_endpoint: Annotated[str | None, _url(("http", "https"))] = Field(
        default=None, description="S3 endpoint; unset: filesystem buckets."
    )
    region: str | None = Field(default=None, description="AWS region for S3 and Secrets Manager (us-east-1).")
    buckets_dir: Path | None = Field(
        default=None, description="Root of the filesystem buckets; unset: ~/.local/share/kliv/buckets."
    )
    secret_key: SecretStr | None = Field(default=None, description="Key-encryption key for secrets.")
    secret_previous_keys: SecretStr | None = Field(
        default=None, description="Comma-separated older keys still accepted for reading (key rotation)."
    )
    secret_store: Literal["postgres", "aws"] = Field(
        default="postgres", description="Where ProjectSecret values live: the control database or Secrets Manager."
    )
    secrets_endpoint: Annotated[str | None, _url(("http", "https"))] = Field(
        default=None, description="Secrets Manager endpoint (e.g. a local one)."
    )
    adopt_buckets: Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)] = Field(
        default_factory=list,
        description="Existing buckets (names or shell patterns) that Bucket specs annotated "
        "cloud.kliv.dev/adopt may take over; the platform's consent (KLIV_ADOPT_BUCKETS, comma-separated).",
    )
    engine: Literal["native", "pulumi"] = Field(
        default="native",
        description="native applies plans directly; pulumi runs them as Pulumi stacks (needs the `pulumi` CLI).",
    )
    pulumi_backend: SecretStr | None = Field(
        default=None,
        description="The Pulumi engine's state backend (file://... or postgres://...); "
        "default: file:// under kliv's data folder.",
    )
    functions_target: Literal["embedded", "lambda"] = Field(
        default="embedded", description="Where Functions run: `kliv serve`'s Deno runtime, or AWS Lambda."
    )
    lambda_endpoint: Annotated[str | None, _url(("http", "https"))] = Field(
        default=None, description="Lambda API endpoint (e.g. a local one); unset: AWS."
    )
    lambda_role: str | None = Field(
        default=None, description="IAM role ARN the functions created on Lambda run as (the lambda target)."
    )
    api_url: Annotated[str | None, _url(("http", "https"))] = Field(
        default=None,
        description="Where `kliv serve` is reached, for the URLs in outputs; unset: http://127.0.0.1:54321.",
    )
    relay_batch_size: int = Field(default=500, ge=1, le=10000, description="Events per confirmed batch.")
    outbox_retention_days: float = Field(default=7, ge=0, description="Keep delivered events this long.")
    policies: PolicySettings = Field(default_factory=PolicySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("KLIV_CONFIG", CONFIG_FILE))
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file)


def load_settings() -> Settings:
    """Settings from the environment and ``kliv.toml`` (or the file named by ``KLIV_CONFIG``)."""
    return Settings()
