"""The ``s3`` bucket backend: boto3 against AWS or any S3-compatible endpoint.

Called by the bucket provider from the engine's threads: every call blocks, and
the operator reaches this only through ``asyncio.to_thread``. Public read is a
bucket policy granting ``s3:GetObject`` to everyone, with the public access
block relaxed for policies only (ACLs stay blocked); private buckets have every
block on and no policy.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from kliv.stacks.buckets.desired import Settings, cors_rule
from kliv.stacks.errors import AlreadyExistsError, EngineError, UnavailableError

MAX_PURGE_PAGES = 10_000  # of 1,000 versions each
_PRIVATE_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                  "RestrictPublicBuckets": True}  # fmt: skip
_PUBLIC_BLOCK = {**_PRIVATE_BLOCK, "BlockPublicPolicy": False, "RestrictPublicBuckets": False}
_MISSING = {
    "NoSuchTagSet", "NoSuchCORSConfiguration", "NoSuchLifecycleConfiguration",
    "NoSuchPublicAccessBlockConfiguration", "NoSuchBucketPolicy",
}  # fmt: skip


def public_policy(bucket: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "KlivPublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }


class S3Buckets:
    """Buckets on an S3 endpoint."""

    name = "s3"

    def __init__(self, endpoint_url: str | None = None, region: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.endpoint_url = endpoint_url
        self.region = region or "us-east-1"
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=self.region,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )

    def endpoint(self, bucket: str) -> str:
        base = (self.endpoint_url or f"https://s3.{self.region}.amazonaws.com").rstrip("/")
        return f"{base}/{bucket}"

    def _call(self, operation: str, bucket: str, **arguments: Any) -> Any:
        """One API call; absent configuration is None, other failures are engine errors."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=bucket, **arguments)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING or (code == "BucketAlreadyOwnedByYou" and operation == "create_bucket"):
                return None
            if code in ("BucketAlreadyExists", "AccessDenied", "403") and operation in ("create_bucket", "head_bucket"):
                raise AlreadyExistsError(
                    f"bucket {bucket} exists and belongs to someone else ({code}); kliv never takes one over",
                    "give the Bucket another `spec.name` or metadata.name",
                ) from None
            if code in ("NoSuchBucket", "404"):
                raise
            raise EngineError(
                f"S3 refused {operation} on bucket {bucket}: {code}", "check the S3 credentials"
            ) from None
        except BotoCoreError as exc:
            raise UnavailableError(
                f"cannot reach S3 for {operation} on bucket {bucket} ({type(exc).__name__})",
                "check KLIV_S3_ENDPOINT and the network; the next attempt retries",
            ) from None

    def read(self, bucket: str) -> Settings | None:
        from botocore.exceptions import ClientError

        try:
            self._call("head_bucket", bucket)
        except ClientError:
            return None
        tags = self._call("get_bucket_tagging", bucket) or {}
        versioning = self._call("get_bucket_versioning", bucket) or {}
        cors = self._call("get_bucket_cors", bucket) or {}
        lifecycle = self._call("get_bucket_lifecycle_configuration", bucket) or {}
        block = (self._call("get_public_access_block", bucket) or {}).get("PublicAccessBlockConfiguration", {})
        policy = self._call("get_bucket_policy", bucket)
        policy_document = json.loads(policy["Policy"]) if policy else None
        public = block == _PUBLIC_BLOCK and policy_document == public_policy(bucket)
        rules = []
        for rule in lifecycle.get("Rules") or []:
            prefix = (rule.get("Filter") or {}).get("Prefix", rule.get("Prefix", ""))
            days = (rule.get("Expiration") or {}).get("Days")
            if rule.get("Status") == "Enabled" and days is not None:
                rules.append((str(prefix), int(days)))
        observed = Settings(
            public=public,
            versioning=versioning.get("Status") == "Enabled",
            cors=tuple(
                cors_rule(
                    r.get("AllowedOrigins", []),
                    r.get("AllowedMethods", []),
                    r.get("AllowedHeaders", []),
                    r.get("ExposeHeaders", []),
                    r.get("MaxAgeSeconds"),
                )
                for r in cors.get("CORSRules") or []
            ),
            lifecycle=tuple(rules),
            tags=tuple(sorted((t["Key"], t["Value"]) for t in tags.get("TagSet") or [])),
        )
        # A private bucket must be entirely private: a stray policy or a relaxed block is drift.
        if not public and (block != _PRIVATE_BLOCK or policy_document is not None):
            return dataclasses.replace(observed, public=None)
        return observed

    def create(self, bucket: str) -> None:
        from botocore.exceptions import ClientError

        arguments: dict[str, Any] = {}
        if self.region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._call("create_bucket", bucket, **arguments)
        except ClientError as exc:  # pragma: no cover - _call converts all but NoSuchBucket
            raise EngineError(f"cannot create bucket {bucket}: {exc}") from None
        except AlreadyExistsError:
            if self._owned(bucket):
                return  # BucketAlreadyOwnedByYou on some servers, BucketAlreadyExists on others
            raise

    def _owned(self, bucket: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError:
            return False
        return True

    def put_public(self, bucket: str, public: bool) -> None:
        if public:
            self._call("put_public_access_block", bucket, PublicAccessBlockConfiguration=_PUBLIC_BLOCK)
            self._call("put_bucket_policy", bucket, Policy=json.dumps(public_policy(bucket)))
        else:
            self._call("delete_bucket_policy", bucket)
            self._call("put_public_access_block", bucket, PublicAccessBlockConfiguration=_PRIVATE_BLOCK)

    def put_versioning(self, bucket: str, enabled: bool) -> None:
        status = "Enabled" if enabled else "Suspended"  # S3 cannot un-version a bucket, only suspend it
        self._call("put_bucket_versioning", bucket, VersioningConfiguration={"Status": status})

    def put_cors(self, bucket: str, settings: Settings) -> None:
        if not settings.cors:
            self._call("delete_bucket_cors", bucket)
            return
        rules = []
        for rule in settings.cors_rules():
            entry: dict[str, Any] = {"AllowedOrigins": list(rule["origins"]), "AllowedMethods": list(rule["methods"])}
            if "headers" in rule:
                entry["AllowedHeaders"] = list(rule["headers"])
            if "expose" in rule:
                entry["ExposeHeaders"] = list(rule["expose"])
            if "maxAge" in rule:
                entry["MaxAgeSeconds"] = rule["maxAge"]
            rules.append(entry)
        self._call("put_bucket_cors", bucket, CORSConfiguration={"CORSRules": rules})

    def put_lifecycle(self, bucket: str, settings: Settings) -> None:
        if not settings.lifecycle:
            self._call("delete_bucket_lifecycle", bucket)
            return
        rules = [
            {"ID": f"kliv-{i}", "Status": "Enabled", "Filter": {"Prefix": prefix}, "Expiration": {"Days": days}}
            for i, (prefix, days) in enumerate(settings.lifecycle)
        ]
        self._call("put_bucket_lifecycle_configuration", bucket, LifecycleConfiguration={"Rules": rules})

    def put_tags(self, bucket: str, tags: dict[str, str]) -> None:
        self._call("put_bucket_tagging", bucket, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})

    def count_objects(self, bucket: str, limit: int = 100_000) -> int:
        found = 0
        token: dict[str, Any] = {}
        while True:
            page = self._call("list_object_versions", bucket, MaxKeys=1000, **token) or {}
            found += len(page.get("Versions") or [])
            if found >= limit or not page.get("IsTruncated"):
                return min(found, limit)
            token = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}

    def delete(self, bucket: str, purge: bool) -> None:
        """The bucket (absent: nothing to do); with ``purge`` every object version and delete
        marker first. Without, S3 itself refuses a bucket that is not empty."""
        from botocore.exceptions import ClientError

        try:
            for _ in range(MAX_PURGE_PAGES):
                if not purge:
                    break
                page = self._call("list_object_versions", bucket, MaxKeys=1000) or {}
                doomed = [
                    {"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in (page.get("Versions") or []) + (page.get("DeleteMarkers") or [])
                ]
                if not doomed:
                    break
                answer = self._call("delete_objects", bucket, Delete={"Objects": doomed, "Quiet": True}) or {}
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise EngineError(
                        f"S3 kept {len(answer['Errors'])} object(s) of bucket {bucket} ({first.get('Code')})",
                        "check Object Lock and the s3:DeleteObjectVersion permission",
                    )
            else:
                raise EngineError(f"bucket {bucket} still holds objects after {MAX_PURGE_PAGES} pages", "retry")
            self._call("delete_bucket", bucket)
        except ClientError:
            return  # NoSuchBucket: already gone
