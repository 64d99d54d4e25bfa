"""The ``aws`` secret store: values in AWS Secrets Manager (or anything speaking its API).

Called by the secret provider, from the engine's threads (boto3 blocks; the
operator reaches it only through ``asyncio.to_thread``). Each ProjectSecret is
one Secrets Manager secret named ``kliv/<namespace>/<project>/<NAME>``; each kliv
version is one Secrets Manager version whose id is derived from the version, so
a retried write is idempotent.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from kliv.stacks.errors import AlreadyExistsError, EngineError, UnavailableError

TAG_PREFIX = "kliv:"
_NAMESPACE = uuid.UUID("7f0f4c1e-5b8a-4c55-9a55-2b7d3e1f6a10")


@dataclasses.dataclass(frozen=True)
class Described:
    """What Secrets Manager says about a secret: never its value."""

    tags: dict[str, str]
    current_version: str | None
    versions: frozenset[str]


class SecretsManagerStore:
    """Writes, restores and deletes secrets through boto3."""

    def __init__(self, endpoint_url: str | None = None, region: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.client: Any = boto3.client(
            "secretsmanager",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=20),
        )

    @staticmethod
    def physical(namespace: str, project: str, name: str) -> str:
        return f"kliv/{namespace}/{project}/{name}"

    @staticmethod
    def version_id(physical: str, version: int, fingerprint: str) -> str:
        """The request token of a version: a retry of the same write reuses it (idempotent), a
        different value never does (Secrets Manager would keep the old one)."""
        return str(uuid.uuid5(_NAMESPACE, f"{physical}@{version}#{fingerprint}"))

    def _errors(self, action: str, physical: str, exc: Exception) -> EngineError:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            return EngineError(f"Secrets Manager refused {action} on {physical}: {code}", "check the AWS credentials")
        if isinstance(exc, BotoCoreError):
            return UnavailableError(
                f"cannot reach Secrets Manager for {action} on {physical} ({type(exc).__name__})",
                "check KLIV_SECRETS_ENDPOINT and the network; the next attempt retries",
            )
        raise exc

    def describe(self, physical: str) -> Described | None:
        from botocore.exceptions import ClientError

        try:
            found = self.client.describe_secret(SecretId=physical)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise self._errors("DescribeSecret", physical, exc) from None
        except Exception as exc:
            raise self._errors("DescribeSecret", physical, exc) from None
        stages = found.get("VersionIdsToStages") or {}
        current = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
        tags = {t["Key"]: t["Value"] for t in found.get("Tags") or []}
        return Described(tags, current, frozenset(stages))

    def put(self, physical: str, version_id: str, value: str, tags: dict[str, str]) -> None:
        """Create the secret or add a version (idempotent: the version id is the request token)."""
        from botocore.exceptions import ClientError

        try:
            if self.describe(physical) is None:
                self.client.create_secret(
                    Name=physical,
                    SecretString=value,
                    ClientRequestToken=version_id,
                    Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
                )
            else:
                self.client.put_secret_value(SecretId=physical, SecretString=value, ClientRequestToken=version_id)
        except ClientError as exc:
            # Same token, same value: Secrets Manager answers success. ResourceExists means the
            # token was used with another value, which must never pass as written.
            raise self._errors("PutSecretValue", physical, exc) from None
        except EngineError:
            raise
        except Exception as exc:
            raise self._errors("PutSecretValue", physical, exc) from None

    def restore(self, physical: str, version_id: str, current: str | None) -> None:
        """Make ``version_id`` current again (someone wrote another value behind kliv's back);
        nothing to do when it is current already (a retry)."""
        described = self.describe(physical)
        if described is not None and described.current_version == version_id:
            return
        try:
            arguments = {"SecretId": physical, "VersionStage": "AWSCURRENT", "MoveToVersionId": version_id}
            if current is not None:
                arguments["RemoveFromVersionId"] = current
            self.client.update_secret_version_stage(**arguments)
        except Exception as exc:
            raise self._errors("UpdateSecretVersionStage", physical, exc) from None

    def delete(self, physical: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.delete_secret(SecretId=physical, ForceDeleteWithoutRecovery=True)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return
            raise self._errors("DeleteSecret", physical, exc) from None
        except Exception as exc:
            raise self._errors("DeleteSecret", physical, exc) from None

    @staticmethod
    def refuse_foreign(physical: str, described: Described, namespace: str, project: str) -> None:
        owner = (described.tags.get(TAG_PREFIX + "namespace"), described.tags.get(TAG_PREFIX + "project"))
        if owner != (namespace, project):
            raise AlreadyExistsError(
                f"Secrets Manager secret {physical} exists but was not created by kliv for this project; "
                "kliv never takes a secret over",
                "delete or rename that secret, or give the ProjectSecret another `name`",
            )
