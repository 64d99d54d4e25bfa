"""A project's Pulumi program as data: every resource, its type, inputs and options (pure).

Called by the Pulumi engine (:mod:`.engine`) at plan time and by the tests, which check
the graph under ``pulumi.runtime.set_mocks`` and against the native engine's plan. The
inline program (:mod:`.program`) only instantiates what is declared here, so a program is
data like a plan: it can be shown, compared and hashed. Inputs never hold a secret value:
a declaration names the secret inputs it needs (``secrets``) and the program fills them
from the engine's :class:`~.program.Connection` at run time, marked secret.

Which Pulumi provider manages what (DESIGN.md, "Pulumi engine"): pulumi-postgresql the
project database, its roles and the grants of CONNECT; pulumi-aws S3 buckets, Secrets
Manager secrets and Lambda functions when those backends are configured; kliv's dynamic
providers (:mod:`.dynamic`) everything no Pulumi provider manages (the bootstrap of the
database, tables, policies, templates, and buckets, secrets and functions on the embedded
backends).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from kliv.specs import ProjectSpecs, Spec
from kliv.specs.base import Resource
from kliv.stacks.contract import Outputs

# The dynamic resources' type tokens, as `pulumi.dynamic.Resource` spells them.
DYNAMIC = "pulumi-python:dynamic/kliv:"
POSTGRES_PROVIDER = "pulumi:providers:postgresql"
AWS_PROVIDER = "pulumi:providers:aws"
# The dynamic providers' own package, given as an explicit provider too: the stack disables
# every default provider (`pulumi:disable-default-providers: ["*"]`).
DYNAMIC_PROVIDER = "pulumi:providers:pulumi-python"

Backend = Literal["embedded", "aws"]


@dataclasses.dataclass(frozen=True)
class Declared:
    """One Pulumi resource of the program."""

    name: str  # its logical name, unique in the stack
    type: str  # its type token
    ref: str  # the kliv resource it belongs to (Kind/namespace/name); "" for a provider
    inputs: dict[str, Any]
    secrets: tuple[str, ...] = ()  # inputs the program fills from its Connection, marked secret
    protect: bool = False
    retain_on_delete: bool = False
    depends_on: tuple[str, ...] = ()
    provider: str = ""  # the logical name of its explicit provider ("" for a provider itself)
    ignore_changes: tuple[str, ...] = ()  # inputs set once (a generated secret's value)
    stateful: bool = False  # deleting or replacing it loses data

    @property
    def dynamic(self) -> bool:
        return self.type.startswith(DYNAMIC)

    def urn(self, stack: str, project: str = "kliv") -> str:
        """The URN Pulumi gives it (no parent: every resource is at the stack's root)."""
        return f"urn:pulumi:{stack}::{project}::{self.type}::{self.name}"


@dataclasses.dataclass(frozen=True)
class Program:
    """Every resource of one project's stack, in declaration order (dependencies first)."""

    stack: str  # `<namespace>.<project>`
    resources: tuple[Declared, ...]

    def by_name(self) -> dict[str, Declared]:
        return {d.name: d for d in self.resources}

    def refs(self) -> list[str]:
        """The kliv resources the program covers, in order, each once."""
        return list(dict.fromkeys(d.ref for d in self.resources if d.ref))


@dataclasses.dataclass(frozen=True)
class Backends:
    """Where the kinds with a choice of backend live (the engine's ProviderOptions, as plain values)."""

    buckets: Backend = "embedded"
    secrets: Backend = "embedded"
    functions: Backend = "embedded"
    region: str = "us-east-1"
    lambda_role: str = ""


def stack_name(namespace: str, project: str) -> str:
    return f"{namespace}.{project}"


def logical(ref: str, part: str = "") -> str:
    """A resource's logical name from its ref: ``Table/ns/posts`` -> ``Table:posts``, and a part of
    it -> ``Project:blog:database``; :func:`ref_of` reads the ref back (of a resource since deleted)."""
    kind, _, name = ref.split("/", 2)
    return f"{kind}:{name}:{part}" if part else f"{kind}:{name}"


def ref_of(name: str, namespace: str) -> str:
    """The ref a logical name belongs to; "" for a provider (no colon)."""
    parts = name.split(":")
    return f"{parts[0]}/{namespace}/{parts[1]}" if len(parts) >= 2 else ""


def declare(group: ProjectSpecs, physical: Outputs, backends: Backends | None = None) -> Program:
    """The program of ``group``; ``physical``: the native engine's outputs (physical names) by ref."""
    assert group.project is not None, "resolve() reports projects without a Project spec"
    backends = backends or Backends()
    declared: list[Declared] = []
    project = group.project.resource
    database = project.database_name
    from kliv.stacks.postgres import naming

    declared.append(Declared("kliv", DYNAMIC_PROVIDER, "", {}))
    declared.append(Declared("postgresql", POSTGRES_PROVIDER, "", {"superuser": True},
                             secrets=("host", "port", "username", "password", "sslmode", "sslrootcert")))  # fmt: skip
    retain_project = project.spec.deletion_policy == "Retain"
    role_names = [naming.role(database, suffix) for suffix in naming.ALL_ROLE_SUFFIXES]
    members = [naming.role(database, suffix) for suffix in naming.ROLE_SUFFIXES]
    for suffix, role in zip(naming.ALL_ROLE_SUFFIXES, role_names, strict=True):
        # As the native bootstrap makes them: NOINHERIT; service_role bypasses RLS; the authenticator
        # logs in and may SET ROLE to the three (its password is kliv up's, never the program's).
        login = suffix == naming.AUTHENTICATOR_SUFFIX
        bypass = suffix in ("service_role", naming.OWNER_SUFFIX)
        inputs: dict[str, Any] = {"name": role, "login": login, "inherit": False, "skipDropRole": retain_project,
                                  "bypassRowLevelSecurity": bypass}  # fmt: skip
        if login:
            inputs["roles"] = members
        declared.append(Declared(logical(project.ref, f"role-{role}"), "postgresql:index/role:Role", project.ref,
                                 inputs, provider="postgresql", retain_on_delete=retain_project,
                                 ignore_changes=("password",) if login else (),
                                 depends_on=tuple(logical(project.ref, f"role-{m}") for m in members) if login
                                 else ()))  # fmt: skip
    role_deps = tuple(logical(project.ref, f"role-{r}") for r in role_names)
    db_name = logical(project.ref, "database")
    declared.append(Declared(db_name, "postgresql:index/database:Database", project.ref, {"name": database},
                             protect=True, retain_on_delete=retain_project, provider="postgresql", stateful=True,
                             depends_on=role_deps))  # fmt: skip
    for role in [naming.role(database, s) for s in (*naming.ROLE_SUFFIXES, naming.AUTHENTICATOR_SUFFIX)]:
        declared.append(Declared(logical(project.ref, f"connect-{role}"), "postgresql:index/grant:Grant", project.ref,
                                 {"database": database, "role": role, "objectType": "database",
                                  "privileges": ["CONNECT"]},
                                 provider="postgresql", depends_on=(db_name,),
                                 retain_on_delete=retain_project))  # fmt: skip
    bootstrap = logical(project.ref, "bootstrap")
    grants = tuple(d.name for d in declared if d.type == "postgresql:index/grant:Grant")
    declared.append(_dynamic(bootstrap, "Project", group.project, None, (db_name, *grants)))
    tables = {spec.resource.table_name: spec for spec in group.tables}
    for spec in group.tables:
        retain = spec.resource.spec.deletion_policy == "Retain"
        direct = [tables[t] for t in _references(spec) if t in tables and t != spec.resource.table_name]
        declared.append(_dynamic(logical(spec.resource.ref), "Table", spec, group.project,
                                 (bootstrap, *(logical(r.resource.ref) for r in direct)),
                                 protect=True, retain=retain, stateful=True))  # fmt: skip
    routines = {spec.resource.function_name: spec for spec in group.database_functions}
    for routine in group.database_functions:
        read = sorted({use.name for use in routine.resource.body.tables} & set(tables))
        called = sorted(
            {use.name for use in routine.resource.body.functions} & set(routines) - {routine.resource.function_name}
        )
        depends = (bootstrap, *(logical(tables[t].resource.ref) for t in read),
                   *(logical(routines[f].resource.ref) for f in called))  # fmt: skip
        declared.append(_dynamic(logical(routine.resource.ref), "DatabaseFunction", routine, group.project, depends))
    for policy in group.policies:
        named = _policy_tables(policy)
        calls = sorted(_policy_calls(policy) & set(routines))
        depends = (bootstrap, *(logical(tables[t].resource.ref) for t in sorted(named) if t in tables),
                   *(logical(routines[f].resource.ref) for f in calls))  # fmt: skip
        declared.append(_dynamic(logical(policy.resource.ref), "TablePolicy", policy, group.project, depends))
    for trigger in group.triggers:
        on = [tables[trigger.resource.spec.table]] if trigger.resource.spec.table in tables else []
        runs = [routines[trigger.resource.spec.function]] if trigger.resource.spec.function in routines else []
        depends = (bootstrap, *(logical(s.resource.ref) for s in [*on, *runs]))
        declared.append(_dynamic(logical(trigger.resource.ref), "Trigger", trigger, group.project, depends))
    for template in group.templates:
        declared.append(
            _dynamic(logical(template.resource.ref), "EmailTemplate", template, group.project, (bootstrap,))
        )
    aws = any(b == "aws" for b in (backends.buckets, backends.secrets, backends.functions)) and bool(
        group.buckets or group.secrets or group.functions
    )
    if aws:
        declared.append(Declared("aws", AWS_PROVIDER, "", {"region": backends.region, "s3UsePathStyle": True,
                                                           "skipCredentialsValidation": True},
                                 secrets=("accessKey", "secretKey", "token", "endpoints")))  # fmt: skip
    for bucket in group.buckets:
        declared += _bucket(bucket, physical.get(bucket.resource.ref, {}), backends, group)
    secret_names: dict[str, str] = {}
    for secret in group.secrets:
        found = _secret(secret, backends, group)
        secret_names[secret.resource.secret_name] = found[-1].name
        declared += found
    for function in group.functions:
        wanted = tuple(secret_names[s] for s in function.resource.spec.secrets if s in secret_names)
        declared.append(_function(function, backends, group, (bootstrap, *wanted)))
    return Program(stack_name(group.namespace, group.name), tuple(declared))


def _references(spec: Spec[Any]) -> list[str]:
    table = spec.resource.spec
    return [c.references.table for c in table.columns if c.references is not None] + [
        k.references.table for k in table.foreign_keys
    ]


def _project_part(project: Spec[Any]) -> dict[str, Any]:
    """What every other resource needs of the Project document: its identity, database and enums."""
    data = project.document.data
    spec = data.get("spec") or {}
    kept = {key: spec[key] for key in ("database", "enums") if key in spec}
    return {"apiVersion": data["apiVersion"], "kind": data["kind"], "metadata": data["metadata"], "spec": kept}


def _policy_calls(policy: Spec[Any]) -> set[str]:
    """The project functions the policy's expressions call."""
    from kliv.specs.base import checked_expression

    spec = policy.resource.spec
    texts = [t for t in (spec.using, spec.with_check) if t is not None]
    return {call[0] for text in texts for call in checked_expression(text, "policy").calls}


def _policy_tables(policy: Spec[Any]) -> set[str]:
    """The policy's table and every table its expressions name (sub-queries)."""
    from kliv.specs.base import checked_expression

    named = {policy.resource.spec.table}
    for text in (policy.resource.spec.using, policy.resource.spec.with_check):
        if text:
            named |= checked_expression(text, "policy").tables
    return named


def _dynamic(
    name: str,
    kind: str,
    spec: Spec[Resource],
    project: Spec[Any] | None,
    depends: tuple[str, ...],
    protect: bool = False,
    retain: bool = False,
    stateful: bool = False,
) -> Declared:
    """A resource of kliv's dynamic provider for ``kind``: its inputs are its spec hash and the
    documents the native machinery makes it from: what it needs of its Project (``project``;
    None: it is the Project), then its own. Only what decides the resource itself, so that a
    change to one spec changes one resource's inputs (its ordering is ``depends``)."""
    from kliv.stacks.hashing import spec_hash

    documents = [spec.document.data] if project is None else [_project_part(project), spec.document.data]
    inputs = {"ref": spec.resource.ref, "specHash": spec_hash(spec.resource), "documents": documents}
    return Declared(name, f"{DYNAMIC}{kind}", spec.resource.ref, inputs, secrets=("connection",), protect=protect,
                    retain_on_delete=retain, depends_on=depends, provider="kliv", stateful=stateful)  # fmt: skip


def _bucket(spec: Spec[Any], outputs: dict[str, str], backends: Backends, group: ProjectSpecs) -> list[Declared]:
    bucket = spec.resource
    retain = bucket.spec.deletion_policy == "Retain"
    if backends.buckets != "aws":
        return [_dynamic(logical(bucket.ref), "Bucket", spec, group.project, (), protect=True, retain=retain,
                         stateful=True)]  # fmt: skip
    name = outputs.get("bucket", bucket.spec.name or bucket.name)
    main = logical(bucket.ref)
    found = [Declared(main, "aws:s3/bucketV2:BucketV2", bucket.ref, {"bucket": name, "forceDestroy": False,
                      "tags": {"kliv.dev/project": f"{group.namespace}/{group.name}"}},
                      protect=True, retain_on_delete=retain, provider="aws", stateful=True)]  # fmt: skip
    block = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
    found.append(Declared(logical(bucket.ref, "public-access"), block,
                          bucket.ref, {"bucket": name, **dict.fromkeys(
                              ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"),
                              not bucket.spec.public)},
                          provider="aws", depends_on=(main,), retain_on_delete=retain))  # fmt: skip
    if bucket.spec.versioning:
        found.append(Declared(logical(bucket.ref, "versioning"), "aws:s3/bucketVersioningV2:BucketVersioningV2",
                              bucket.ref, {"bucket": name, "versioningConfiguration": {"status": "Enabled"}},
                              provider="aws", depends_on=(main,), retain_on_delete=retain))  # fmt: skip
    return found


def _secret(spec: Spec[Any], backends: Backends, group: ProjectSpecs) -> list[Declared]:
    secret = spec.resource
    if backends.secrets != "aws":
        found = _dynamic(logical(secret.ref), "ProjectSecret", spec, group.project, (), stateful=True, protect=True)
        if secret.spec.value_from is not None:  # the value, resolved by the engine from its own source
            found = dataclasses.replace(found, secrets=(*found.secrets, "value"))
        return [found]
    from kliv.stacks.secrets.aws import SecretsManagerStore

    name = SecretsManagerStore.physical(group.namespace, group.name, secret.secret_name)
    main = logical(secret.ref)
    return [
        Declared(main, "aws:secretsmanager/secret:Secret", secret.ref,
                 {"name": name, "recoveryWindowInDays": 7,
                  "tags": {"kliv.dev/project": f"{group.namespace}/{group.name}"}},
                 protect=True, provider="aws", stateful=True),
        # The value is filled from the spec's source at run time (never in the program's data).
        Declared(logical(secret.ref, "value"), "aws:secretsmanager/secretVersion:SecretVersion", secret.ref,
                 {"secretId": name, "source": secret.spec.model_dump(
                     mode="json", by_alias=True, exclude_none=True, include={"value_from", "generate"})},
                 secrets=("secretString",), provider="aws", depends_on=(main,),
                 ignore_changes=("secretString",) if secret.spec.generate is not None else ()),
    ]  # fmt: skip


def _function(spec: Spec[Any], backends: Backends, group: ProjectSpecs, depends: tuple[str, ...]) -> Declared:
    function = spec.resource
    if backends.functions != "aws":
        return _dynamic(logical(function.ref), "Function", spec, group.project, depends)
    from kliv.stacks.functions import lambdas
    from kliv.stacks.hashing import spec_hash

    route = function.function_name
    auth = function.spec.http.auth if function.spec.http is not None else "jwt"
    # The zip (the adapter and the transpiled module) and the environment (with the secrets'
    # values) are made by the program from these, at run time (program.Connection).
    variables = {**function.spec.env, "KLIV_ROUTE": route, "KLIV_PROJECT": f"{group.namespace}/{group.name}",
                 "KLIV_AUTH": auth}  # fmt: skip
    return Declared(
        logical(function.ref), "aws:lambda/function:Function", function.ref,
        {"name": lambdas.physical(group.namespace, group.name, route),
         "runtime": lambdas.RUNTIME, "handler": "index.handler", "role": backends.lambda_role,
         "memorySize": max(128, function.spec.memory_mib), "timeout": function.spec.timeout_seconds,
         "publish": True, "tags": {"kliv.dev/project": f"{group.namespace}/{group.name}",
                                   "kliv.dev/spec-hash": spec_hash(function)},
         "source": function.spec.source.inline, "variables": variables, "secretNames": list(function.spec.secrets)},
        secrets=("environment",), provider="aws", depends_on=tuple(d for d in depends if "bootstrap" not in d),
    )  # fmt: skip
