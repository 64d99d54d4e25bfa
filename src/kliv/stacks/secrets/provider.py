"""The ProjectSecret provider: versions in the postgres store (default) or AWS Secrets Manager.

Called by the native engine while it plans and applies a project (:mod:`kliv.stacks.contract`).
A version is added when a secret is first applied, when its source value
changes (compared through the keyed fingerprint, never in the clear) and when
``generate`` changes; the value never enters a plan, an output or an event.
Where the value comes from is the caller's business: ``values`` reads the
environment for the CLI and Kubernetes Secrets for the operator.
"""

from __future__ import annotations

import secrets as random
import string
from collections.abc import Callable, Iterable
from typing import Any, Literal

import psycopg

from kliv.specs import ProjectSecret, ProjectSpecs
from kliv.specs.names import is_control_plane_env
from kliv.stacks.contract import ControlSession, Observation, Record, call
from kliv.stacks.errors import EngineError, MissingValueError, SourceRefusedError
from kliv.stacks.hashing import spec_hash
from kliv.stacks.plans import Change, Step
from kliv.stacks.secrets import keys, store
from kliv.stacks.secrets.aws import TAG_PREFIX, SecretsManagerStore
from kliv.stacks.secrets.keys import Keyring

SecretValues = Callable[[ProjectSecret], "str | None"]
StoreName = Literal["postgres", "aws"]

_ALPHABETS = {
    "alphanumeric": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    "base64url": string.ascii_letters + string.digits + "-_",
}


def source_of(secret: ProjectSecret) -> str:
    """Where a secret's value comes from, as a public description."""
    spec = secret.spec
    if spec.generate is not None:
        return f"generate:length={spec.generate.length},charset={spec.generate.charset}"
    assert spec.value_from is not None
    if spec.value_from.env is not None:
        return f"env:{spec.value_from.env}"
    ref = spec.value_from.secret_key_ref
    assert ref is not None
    return f"secretKeyRef:{ref.name}/{ref.key}"


def generate(secret: ProjectSecret) -> str:
    assert secret.spec.generate is not None
    alphabet = _ALPHABETS[secret.spec.generate.charset]
    return "".join(random.choice(alphabet) for _ in range(secret.spec.generate.length))


# Shorter values are too common to mean anything when found inside a secret.
_WITHHELD_MIN_LENGTH = 8


def environment_values(environ: dict[str, str], withheld: Iterable[str] = ()) -> SecretValues:
    """The CLI's source: ``valueFrom.env`` from ``environ``; ``secretKeyRef`` needs a cluster.

    Specs are untrusted: a variable of the control plane's own (``KLIV_*``, ``PG*``, cloud
    credentials) is never read, and neither is a variable whose value holds one of them or
    one of ``withheld`` (kliv's own credentials from its settings: keys, URLs, passwords),
    so ``MY_KEY=$KLIV_SECRET_KEY`` copies nothing either.
    """
    own = {value for name, value in environ.items() if is_control_plane_env(name)} | set(withheld)
    own = {value for value in own if len(value) >= _WITHHELD_MIN_LENGTH}

    def values(secret: ProjectSecret) -> str | None:
        value_from = secret.spec.value_from
        if value_from is None:
            return None
        if value_from.secret_key_ref is not None:
            raise MissingValueError(
                f"{secret.ref}: valueFrom.secretKeyRef names a Kubernetes Secret, which only the operator can read",
                "for the CLI use `valueFrom: {env: VARIABLE}`",
            )
        name = str(value_from.env)
        if is_control_plane_env(name):
            raise SourceRefusedError(
                f"{secret.ref}: valueFrom.env `{name}` is the control plane's own configuration or a credential",
                "put the value in a variable of its own (e.g. `STRIPE_KEY`) and read that",
            )
        value = environ.get(name)
        if value is not None and any(credential in value for credential in own):
            raise SourceRefusedError(
                f"{secret.ref}: valueFrom.env `{name}` holds one of the control plane's own credentials",
                "kliv never copies its own keys, URLs or passwords into a project: give the secret its own value",
            )
        return value

    return values


class SecretProvider:
    """Observes and writes ProjectSecret versions."""

    kind = "ProjectSecret"
    in_database = False

    def __init__(
        self,
        control: ControlSession,
        values: SecretValues,
        keyring: Keyring | EngineError | Callable[[], Keyring | EngineError | None] | None,
        store_name: StoreName = "postgres",
        aws: SecretsManagerStore | None = None,
    ) -> None:
        """``keyring``: or a function giving it, called on the first secret (deriving a passphrase
        key costs scrypt's work: a project without secrets never pays it)."""
        self.control = control
        self.values = values
        self._make_keyring = keyring if callable(keyring) else None
        self.keyring: Keyring | EngineError | None = None if callable(keyring) else keyring
        self.store_name = store_name
        self.aws = aws
        if store_name == "aws" and aws is None:
            raise ValueError("the aws store needs a SecretsManagerStore")

    def _keyring(self) -> Keyring:
        if self._make_keyring is not None:
            self.keyring, self._make_keyring = self._make_keyring(), None
        if isinstance(self.keyring, EngineError):
            raise self.keyring  # a malformed KLIV_SECRET_KEY: reported on the secrets, not a crash
        if self.keyring is None:
            raise EngineError(
                "KLIV_SECRET_KEY is not set: ProjectSecrets are encrypted (postgres store) and fingerprinted with it",
                'set KLIV_SECRET_KEY (e.g. `python -c "import secrets; print(secrets.token_urlsafe(32))"`); '
                "`kliv up` creates one for the embedded setup",
            )
        return self.keyring

    def observe(self, group: ProjectSpecs, applied: dict[str, Record]) -> list[Observation]:
        if not group.secrets and not applied:
            return []
        control = self.control()
        present = {spec.resource.ref for spec in group.secrets}
        # Removals need no key: they are planned even when the key is missing.
        found = [self._removed(control, ref, record.physical) for ref, record in applied.items() if ref not in present]
        try:
            keyring = self._keyring()
            with control.transaction():
                fingerprint_key = store.fingerprint_key(control, keyring)
        except EngineError as exc:
            return found + [Observation.unplannable(s.resource.ref, exc) for s in group.secrets]
        for spec in group.secrets:
            try:
                found.append(self._one(control, fingerprint_key, group, spec.resource))
            except EngineError as exc:  # missing or refused source, a foreign secret, an unreachable store
                found.append(Observation.unplannable(spec.resource.ref, exc))
        return found

    # -- one secret ----------------------------------------------------------------------------

    def _one(
        self, control: psycopg.Connection[Any], fingerprint_key: bytes, group: ProjectSpecs, secret: ProjectSecret
    ) -> Observation:
        namespace, project, name = group.namespace, group.name, secret.secret_name
        physical = f"{namespace}/{project}/{name}"
        row = Record(self.kind, secret.name, physical, spec_hash(secret.spec), False)
        latest = store.latest(control, namespace, project, name)
        source = source_of(secret)
        value: str | None = None
        if secret.spec.value_from is not None:
            value = self.values(secret)
            if value is None and latest is None:
                raise MissingValueError(
                    f"{secret.ref}: {source.replace(':', ' ', 1)} has no value, and no version is stored yet",
                    "set the environment variable (CLI) or create the Kubernetes Secret (operator)",
                )
        fingerprint = keys.fingerprint(fingerprint_key, physical, value) if value is not None else None
        why = ""
        restore: tuple[str, str | None] | None = None
        if latest is None:
            why = f"store version 1 of {name} (value from {source})"
        elif latest.store != self.store_name:
            why = f"move {name} to the {self.store_name} store as version {latest.version + 1}"
        elif secret.spec.generate is not None and latest.source != source:
            why = f"generate version {latest.version + 1} of {name} ({source})"
        elif fingerprint is not None and fingerprint != latest.fingerprint:
            why = f"store version {latest.version + 1} of {name} (the value of {source} changed)"
        elif self.store_name == "aws" and self.aws is not None:
            aws_name = self.aws.physical(namespace, project, name)
            described = self.aws.describe(aws_name)
            if described is None:
                why = f"store version {latest.version + 1} of {name}: {aws_name} was deleted outside kliv"
            elif described.current_version != latest.external_version:
                self.aws.refuse_foreign(aws_name, described, namespace, project)
                if latest.external_version in described.versions:
                    why = f"make version {latest.version} of {name} current again (changed outside kliv)"
                    restore = (str(latest.external_version), described.current_version)
                else:
                    why = f"store version {latest.version + 1} of {name}: its version was removed outside kliv"
        if not why:
            assert latest is not None
            return Observation.unchanged(secret.ref, _outputs(latest), row)
        if restore is not None:
            version_id, current = restore
            aws_name = SecretsManagerStore.physical(namespace, project, name)
            assert latest is not None
            step = call(f"secretsmanager:UpdateSecretVersionStage {aws_name} AWSCURRENT -> version {latest.version}")
            restoring = {"operation": "restore", "secret": aws_name, "version_id": version_id, "current": current,
                         "outputs": _outputs(latest)}  # fmt: skip
            return Observation(Change(secret.ref, "update", "safe", [why], [step], restoring), _outputs(latest), row)
        version = 1 if latest is None else latest.version + 1
        steps = [self._step(namespace, project, name, version)]
        action: Any = "create" if latest is None else "update"
        # The spec, not the value: apply reads the value from its source again.
        spec = secret.model_dump(mode="json", by_alias=True, exclude_none=True)
        # The keyed fingerprint binds a stored plan to the value it saw (kliv.stacks.stored_plans).
        detail: dict[str, Any] = {"operation": "write", "version": version, "spec": spec, "fingerprint": fingerprint}
        planned = {"name": name, "store": self.store_name, "version": str(version)}
        return Observation(Change(secret.ref, action, "safe", [why], steps, detail), planned, row, latest is not None)

    def apply(self, ref: str, change: Change) -> dict[str, str]:
        """Make a planned secret change. A write runs inside the engine's control-database
        transaction, which also records the inventory row and the audit event."""
        detail = change.detail
        operation = detail.get("operation")
        if operation == "write":
            secret = ProjectSecret.model_validate(detail["spec"])
            fingerprint = detail.get("fingerprint")
            return self._write(secret, secret.namespace, secret.project_name, int(detail["version"]),
                               str(fingerprint) if fingerprint else None)  # fmt: skip
        if operation == "restore":
            if self.aws is None:
                raise EngineError(f"{ref}: restoring a Secrets Manager version needs the aws store", "")
            self.aws.restore(str(detail["secret"]), str(detail["version_id"]), detail["current"])
            return dict(detail["outputs"])
        if operation == "delete":
            namespace, project, name = str(detail["physical"]).split("/", 2)
            if detail.get("aws"):
                if self.aws is None:
                    raise EngineError(f"{ref}: secret {name} lives in Secrets Manager", "set KLIV_SECRET_STORE=aws")
                self.aws.delete(self.aws.physical(namespace, project, name))
            store.delete(self.control(), namespace, project, name)  # in the engine's transaction
            return {}
        return {}  # forget: nothing to do

    def _step(self, namespace: str, project: str, name: str, version: int) -> Step:
        if self.store_name == "aws":
            return call(f"secretsmanager:PutSecretValue {SecretsManagerStore.physical(namespace, project, name)} "
                        f"(version {version}, value not shown)")  # fmt: skip
        return call(f"secrets.versions: add sealed version {version} of {namespace}/{project}/{name} (AES-256-GCM)")

    def _write(
        self, secret: ProjectSecret, namespace: str, project: str, planned: int, planned_fingerprint: str | None
    ) -> dict[str, str]:
        """Store version ``planned`` (once: when it, or a later one, exists, that is the outcome)."""
        name, source = secret.secret_name, source_of(secret)
        physical = f"{namespace}/{project}/{name}"
        # Runs inside the engine's control-database transaction, which also records the
        # inventory row and the audit event: the version exists with them or not at all.
        control = self.control()
        assert control.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS, "needs the engine's transaction"
        fingerprint_key = store.fingerprint_key(control, self._keyring())
        control.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"kliv.secret:{physical}"])
        latest = store.latest(control, namespace, project, name)
        if latest is not None and latest.version >= planned and latest.store == self.store_name:
            return _outputs(latest)  # applied already (a retry): never a second version for one change
        value = generate(secret) if secret.spec.generate is not None else self.values(secret)
        if value is None:
            raise MissingValueError(f"{secret.ref}: the value of {source} disappeared while applying", "retry")
        if (
            planned_fingerprint is not None
            and keys.fingerprint(fingerprint_key, physical, value) != planned_fingerprint
        ):
            raise MissingValueError(
                f"{secret.ref}: the value of {source} changed since the plan; nothing was stored", "plan again"
            )
        number = 1 if latest is None else latest.version + 1
        external_version = None
        if self.store_name == "aws":
            assert self.aws is not None
            aws_name = self.aws.physical(namespace, project, name)
            fingerprint = keys.fingerprint(fingerprint_key, physical, value)
            external_version = self.aws.version_id(aws_name, number, fingerprint)
            tags = {TAG_PREFIX + "namespace": namespace, TAG_PREFIX + "project": project,
                    TAG_PREFIX + "resource": secret.name}  # fmt: skip
            described = self.aws.describe(aws_name)
            if described is not None and latest is None:
                self.aws.refuse_foreign(aws_name, described, namespace, project)
            self.aws.put(aws_name, external_version, value, tags)
        version = store.Version(
            namespace, project, name, number, self.store_name, source,
            keys.fingerprint(fingerprint_key, physical, value), external_version,
        )  # fmt: skip
        store.add(control, self._keyring(), version, value if self.store_name == "postgres" else None)
        return _outputs(version)

    def _removed(self, control: psycopg.Connection[Any], ref: str, physical: str) -> Observation:
        namespace, project, name = physical.split("/", 2)
        versions = store.count(control, namespace, project, name)
        if versions == 0:
            forget = Change(ref, "delete", "safe", [f"forget secret {name} (no version is stored)"], [])
            return Observation(forget, {}, None, exists=False)
        why = f"delete secret {name} and its {versions} stored version{'s' * (versions != 1)} (its value is lost)"
        # Delete where the value lives, whatever the store configured today.
        in_aws = any(v.store == "aws" for v in store.versions(control, namespace, project, name))
        if in_aws and self.aws is None:
            problem = EngineError(
                f"{ref}: secret {name} lives in Secrets Manager, which this kliv is not configured for",
                "set KLIV_SECRET_STORE=aws (and KLIV_SECRETS_ENDPOINT if needed) to delete it",
            )
            return Observation.unplannable(ref, problem)
        steps = [call(f"secrets.versions: delete {physical}")]
        if in_aws and self.aws is not None:
            steps.insert(0, call(f"secretsmanager:DeleteSecret {self.aws.physical(namespace, project, name)}"))
        detail = {"operation": "delete", "physical": physical, "aws": in_aws}
        return Observation(Change(ref, "delete", "data-loss", [why], steps, detail), {}, None)


def _outputs(version: store.Version) -> dict[str, str]:
    return {
        "name": version.name,
        "store": version.store,
        "version": str(version.version),
        "fingerprint": version.fingerprint,
    }
