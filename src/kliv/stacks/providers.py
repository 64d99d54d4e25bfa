"""Which backend serves buckets and secrets: chosen once from plain values, given to an engine.

Called by the CLI and ``kliv operator`` after reading the settings (lower layers
never read the environment). No S3 endpoint means filesystem buckets under
``buckets_dir``; the secret store is ``postgres`` (envelope-encrypted in the
control database) unless ``aws`` is asked for.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kliv.stacks.errors import EngineError

if TYPE_CHECKING:
    from kliv.stacks.buckets.provider import Backend
    from kliv.stacks.secrets.keys import Keyring
    from kliv.stacks.secrets.provider import SecretValues, StoreName


@dataclasses.dataclass(frozen=True)
class ProviderOptions:
    """Everything the bucket and secret providers need, as plain values."""

    buckets_dir: Path
    secret_values: SecretValues
    s3_endpoint: str | None = None
    region: str | None = None
    secret_store: StoreName = "postgres"
    secrets_endpoint: str | None = None
    secret_key: str | None = None
    previous_secret_keys: tuple[str, ...] = ()
    adoptable_buckets: tuple[str, ...] = ()  # the platform's consent: existing buckets specs may adopt
    functions_target: Literal["embedded", "lambda"] = "embedded"
    lambda_endpoint: str | None = None
    lambda_role: str | None = None  # the execution role's ARN, for functions created on Lambda
    api_url: str = "http://127.0.0.1:54321"  # where `kliv serve` answers: the base of function URLs

    def keyring(self) -> Keyring | None:
        from kliv.stacks.secrets.keys import Keyring

        return Keyring(self.secret_key, list(self.previous_secret_keys)) if self.secret_key else None

    def keyring_or_error(self) -> Keyring | EngineError | None:
        """The keyring, or why it cannot be had (reported on the secrets that need it)."""
        try:
            return self.keyring()
        except EngineError as exc:
            return exc

    def bucket_backend(self) -> Backend:
        from kliv.stacks.buckets.filesystem import FilesystemBuckets

        if self.s3_endpoint:
            from kliv.stacks.buckets.s3 import S3Buckets

            return S3Buckets(self.s3_endpoint, self.region)
        return FilesystemBuckets(self.buckets_dir)
