"""The inline Pulumi program: instantiates a declared :class:`~.declaring.Program`.

Called by Pulumi's language host inside ``stack.preview()``/``stack.up()`` (the engine
passes :func:`inline` as the workspace's program) and by the tests under
``pulumi.runtime.set_mocks``. It decides nothing: every type, input and option comes
from the declarations; this module only adds what must never be data, the secret inputs
(:class:`Connection`), each wrapped in ``pulumi.Output.secret``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any, cast

import pulumi
import pulumi.dynamic

from kliv.stacks.pulumi import dynamic
from kliv.stacks.pulumi.declaring import AWS_PROVIDER, DYNAMIC, DYNAMIC_PROVIDER, POSTGRES_PROVIDER, Declared, Program


@dataclasses.dataclass(frozen=True, kw_only=True)
class Connection:
    """What the program's providers connect with: secrets, never part of a program's data."""

    host: str
    port: int
    username: str
    password: str
    admin_url: str  # for kliv's dynamic providers (they connect as the native engine does)
    sslmode: str = "prefer"  # the admin URL's: pulumi-postgresql connects as securely as kliv does
    sslrootcert: str = ""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # ProviderOptions as plain data
    aws_access_key: str = ""  # empty: the aws provider's own chain (environment, profile, role)
    aws_secret_key: str = ""
    aws_token: str = ""
    aws_endpoints: Mapping[str, str] = dataclasses.field(default_factory=dict)  # service -> URL (moto, LocalStack)
    # ProjectSecret values by ref, from the engine's own source (the CLI's environment, the
    # operator's Kubernetes Secrets); on AWS a generated one too, made once (its declaration
    # ignores later changes). Never read from the dynamic-provider process's environment.
    secret_values: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # What a Lambda function's environment holds of the project's secrets: function ref -> name -> value.
    function_secrets: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:  # never shown: it holds the password
        return "Connection(...)"

    def value(self, declared: Declared, key: str) -> Any:
        """The secret input ``key`` of ``declared``."""
        if declared.type == POSTGRES_PROVIDER:
            return {"host": self.host, "port": self.port, "username": self.username, "password": self.password,
                    "sslmode": self.sslmode, "sslrootcert": self.sslrootcert or None}[key]  # fmt: skip
        if declared.type == AWS_PROVIDER:
            if key == "endpoints":
                return [dict(self.aws_endpoints)] if self.aws_endpoints else []
            return {"accessKey": self.aws_access_key, "secretKey": self.aws_secret_key,
                    "token": self.aws_token}[key] or None  # fmt: skip
        if key == "connection":
            return json.dumps({"url": self.admin_url, "options": dict(self.options)}, sort_keys=True)
        if key in ("secretString", "value"):
            return self.secret_values.get(declared.ref)
        if key == "environment":
            found = dict(self.function_secrets.get(declared.ref, {}))
            return {"variables": {**declared.inputs.get("variables", {}), **found}}
        return None


class _Project(pulumi.dynamic.Resource, module="kliv", name="Project"):
    pass


class _Table(pulumi.dynamic.Resource, module="kliv", name="Table"):
    pass


class _TablePolicy(pulumi.dynamic.Resource, module="kliv", name="TablePolicy"):
    pass


class _DatabaseFunction(pulumi.dynamic.Resource, module="kliv", name="DatabaseFunction"):
    pass


class _Trigger(pulumi.dynamic.Resource, module="kliv", name="Trigger"):
    pass


class _EmailTemplate(pulumi.dynamic.Resource, module="kliv", name="EmailTemplate"):
    pass


class _Bucket(pulumi.dynamic.Resource, module="kliv", name="Bucket"):
    pass


class _ProjectSecret(pulumi.dynamic.Resource, module="kliv", name="ProjectSecret"):
    pass


class _Function(pulumi.dynamic.Resource, module="kliv", name="Function"):
    pass


_DYNAMIC_CLASSES: dict[str, type[pulumi.dynamic.Resource]] = {
    cls._resource_type_name.split(":", 1)[1]: cls
    for cls in (
        _Project,
        _Table,
        _TablePolicy,
        _DatabaseFunction,
        _Trigger,
        _EmailTemplate,
        _Bucket,
        _ProjectSecret,
        _Function,
    )
}


def _options(declared: Declared, made: dict[str, pulumi.Resource]) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(
        protect=declared.protect,
        retain_on_delete=declared.retain_on_delete,
        ignore_changes=list(declared.ignore_changes) or None,
        # A dynamic resource keeps its connection in its outputs (Delete is given only those): secret there too.
        additional_secret_outputs=["connection"] if declared.dynamic else None,
        depends_on=[made[name] for name in declared.depends_on],
        provider=made[declared.provider] if declared.provider else None,  # type: ignore[arg-type]
    )


def _inputs(declared: Declared, connection: Connection) -> dict[str, Any]:
    inputs: dict[str, Any] = dict(declared.inputs)
    for key in declared.secrets:
        inputs[key] = pulumi.Output.secret(connection.value(declared, key))
    return inputs


def _instantiate(declared: Declared, connection: Connection, made: dict[str, pulumi.Resource]) -> pulumi.Resource:
    inputs = _inputs(declared, connection)
    if declared.dynamic:
        kind = declared.type[len(DYNAMIC) :]
        cls = _DYNAMIC_CLASSES[kind]
        return cls(dynamic.PROVIDERS[kind], declared.name, inputs, _options(declared, made))
    if declared.type == DYNAMIC_PROVIDER:
        return pulumi.ProviderResource("pulumi-python", declared.name, {})
    if declared.type == POSTGRES_PROVIDER:
        import pulumi_postgresql

        return cast(pulumi.Resource, pulumi_postgresql.Provider(declared.name, **_snake(inputs)))
    if declared.type == AWS_PROVIDER:
        import pulumi_aws

        return cast(pulumi.Resource, pulumi_aws.Provider(declared.name, **_snake(inputs)))
    if declared.type == "aws:secretsmanager/secretVersion:SecretVersion":
        inputs.pop("source", None)  # where the value comes from: read by Connection.value
    if declared.type == "aws:lambda/function:Function":
        inputs["code"] = _lambda_code(str(inputs.pop("source")))
        inputs.pop("variables", None)  # in `environment`, with the secrets' values
        inputs.pop("secretNames", None)
    # Any other declared type is a typed resource of pulumi-postgresql or pulumi-aws: a CustomResource
    # with the same type token and inputs, registered with its explicit provider.
    return pulumi.CustomResource(declared.type, declared.name, inputs, _options(declared, made))


def _lambda_code(source: str) -> pulumi.AssetArchive:
    """The function's zip, as the native Lambda target builds it: the adapter and the module
    transpiled to JavaScript (``deno``, run here: the program runs off any event loop)."""
    from kliv.stacks.functions import checking, lambdas

    return pulumi.AssetArchive({
        "index.mjs": pulumi.StringAsset(lambdas.ADAPTER.read_text()),
        "function.mjs": pulumi.StringAsset(checking.transpile(source)),
    })  # fmt: skip


def _snake(inputs: Mapping[str, Any]) -> dict[str, Any]:
    return {"".join(f"_{c.lower()}" if c.isupper() else c for c in key): value for key, value in inputs.items()}


def run(program: Program, connection: Connection) -> dict[str, pulumi.Resource]:
    """Register every declared resource (inside a Pulumi program); the resources by logical name."""
    made: dict[str, pulumi.Resource] = {}
    for declared in program.resources:
        made[declared.name] = _instantiate(declared, connection, made)
    return made


def inline(program: Program, connection: Connection) -> Callable[[], None]:
    """The Automation API's ``program`` argument for ``program``."""

    def pulumi_program() -> None:
        run(program, connection)

    return pulumi_program
