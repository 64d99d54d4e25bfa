"""The Lambda target of the Function provider (``KLIV_FUNCTIONS_TARGET=lambda``).

Called by :class:`~kliv.stacks.functions.provider.FunctionProvider` (observe: drift; apply:
deploy, switch, retire) and by ``kliv functions rollback`` for a version that lives on
Lambda. A function is one Lambda function (``nodejs20.x``) running kliv's Node adapter
(``adapter/index.mjs``) around the module, transpiled by Deno (types stripped, nothing
executed); each kliv version is a published Lambda version, and the alias ``live`` plays
the active pointer: a deploy publishes then moves the alias (atomic on Lambda's side), a
rollback or a switch to a kept version only moves it. Drift is what kliv did not do: the
alias moved, or the code under it changed (its CodeSha256 differs from the one recorded).
Secrets are environment variables of the Lambda function (Lambda encrypts them at rest;
anyone allowed ``lambda:GetFunctionConfiguration`` can read them: docs/design.md says so).
boto3 is blocking: the engine runs providers in a thread, never on an event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any

from kliv.stacks.errors import EngineError, ExternalFailedError
from kliv.stacks.functions import checking

ALIAS = "live"
RUNTIME = "nodejs20.x"
ADAPTER = Path(__file__).with_name("adapter") / "index.mjs"
TAG_PREFIX = "kliv:"
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed: the same code is the same zip, the same CodeSha256


def package(source: str) -> bytes:
    """The deployment zip: the adapter and the transpiled module (deterministic bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in (("index.mjs", ADAPTER.read_text()), ("function.mjs", checking.transpile(source))):
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, text)
    return buffer.getvalue()


def code_sha256(zipped: bytes) -> str:
    """Lambda's CodeSha256: base64 of the zip's SHA-256."""
    import base64

    return base64.b64encode(hashlib.sha256(zipped).digest()).decode()


def physical(namespace: str, project: str, route: str) -> str:
    """``kliv-<namespace>-<project>-<route>``, hashed down to Lambda's 64 characters when longer."""
    name = re.sub(r"[^A-Za-z0-9-_]", "-", f"kliv-{namespace}-{project}-{route}")
    if len(name) <= 64:
        return name
    return name[:51] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]


class LambdaTarget:
    """Lambda functions, versions and the ``live`` alias through boto3."""

    def __init__(self, endpoint: str | None, region: str | None, role: str | None) -> None:
        self.endpoint, self.region, self.role = endpoint, region or "us-east-1", role
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("lambda", endpoint_url=self.endpoint, region_name=self.region)
        return self._client

    def _call(self, what: str, **arguments: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, what)(**arguments)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                raise LookupError(code) from None
            temporary = code in ("TooManyRequestsException", "ServiceException")
            raise ExternalFailedError(f"lambda:{what}", f"failed: {code}", "check the Lambda permissions and quotas",
                                      temporary=temporary) from None  # fmt: skip
        except BotoCoreError as exc:
            why = f"the endpoint is unreachable ({type(exc).__name__})"
            raise ExternalFailedError(f"lambda:{what}", why, "check KLIV_LAMBDA_ENDPOINT and the network",
                                      temporary=True) from None  # fmt: skip

    def url(self, namespace: str, project: str, route: str) -> str:
        return f"lambda:{physical(namespace, project, route)}:{ALIAS}"

    def drift(self, namespace: str, project: str, route: str, recorded: str | None) -> str | None:
        """Why the live alias is not what kliv left (``recorded``: ``<version>:<CodeSha256>``), or None."""
        name = physical(namespace, project, route)
        if not recorded:
            return None
        version, _, sha = recorded.partition(":")
        try:
            alias = self._call("get_alias", FunctionName=name, Name=ALIAS)
        except LookupError:
            return f"{name} or its alias {ALIAS} was deleted outside kliv"
        live = str(alias["FunctionVersion"])
        try:
            found = self._call("get_function_configuration", FunctionName=name, Qualifier=live)
        except LookupError:
            return f"version {live} of {name} was deleted outside kliv"
        if found.get("CodeSha256") != sha:
            return f"the code of {name}:{ALIAS} was changed outside kliv (CodeSha256 {found.get('CodeSha256')})"
        if live != version:
            return f"alias {ALIAS} of {name} was moved outside kliv (to version {live})"
        return None

    def _wait(self, name: str) -> None:
        for _ in range(120):
            found = self._call("get_function_configuration", FunctionName=name)
            if found.get("LastUpdateStatus", "Successful") != "InProgress" and found.get("State") != "Pending":
                return
            time.sleep(0.5)

    def deploy(
        self, namespace: str, project: str, route: str, source: str, settings: dict[str, Any], secrets: dict[str, str]
    ) -> str:
        """Publish a version of the module with its settings; returns ``<version>:<CodeSha256>``."""
        if self.role is None:
            raise EngineError("the lambda target needs the functions' execution role",
                              "set KLIV_LAMBDA_ROLE to an IAM role ARN Lambda may assume")  # fmt: skip
        name = physical(namespace, project, route)
        zipped = package(source)
        environment = {"Variables": {**dict(settings.get("env", {})), **secrets, "KLIV_ROUTE": route,
                                     "KLIV_PROJECT": f"{namespace}/{project}",
                                     "KLIV_AUTH": str(settings.get("auth", "jwt"))}}  # fmt: skip
        configuration = {"MemorySize": max(128, int(settings.get("memoryMiB", 128))),
                         "Timeout": int(settings.get("timeoutSeconds", 10)), "Environment": environment}  # fmt: skip
        try:
            self._call("get_function", FunctionName=name)
        except LookupError:
            tags = {TAG_PREFIX + "namespace": namespace, TAG_PREFIX + "project": project, TAG_PREFIX + "route": route}
            self._call("create_function", FunctionName=name, Runtime=RUNTIME, Role=self.role, Handler="index.handler",
                       Code={"ZipFile": zipped}, Tags=tags, Publish=False, **configuration)  # fmt: skip
        else:
            self._call("update_function_code", FunctionName=name, ZipFile=zipped)
            self._wait(name)
            self._call("update_function_configuration", FunctionName=name, **configuration)
        self._wait(name)
        published = self._call("publish_version", FunctionName=name, CodeSha256=code_sha256(zipped),
                               Description=json.dumps({"kliv": route})[:256])  # fmt: skip
        return f"{published['Version']}:{published['CodeSha256']}"

    def switch(self, namespace: str, project: str, route: str, external: str) -> None:
        """Point ``live`` at the version (created on first use)."""
        name, version = physical(namespace, project, route), external.partition(":")[0]
        try:
            self._call("update_alias", FunctionName=name, Name=ALIAS, FunctionVersion=version)
        except LookupError:
            self._call("create_alias", FunctionName=name, Name=ALIAS, FunctionVersion=version)

    def retire(self, namespace: str, project: str, route: str) -> None:
        """Remove ``live`` (the function and its versions stay, like kliv's records)."""
        with contextlib.suppress(LookupError):  # deleting what is absent succeeds
            self._call("delete_alias", FunctionName=physical(namespace, project, route), Name=ALIAS)
