"""ProjectSecrets through the native engine: the postgres store (envelope encryption) and
Secrets Manager (moto over HTTP): versions, drift, deletion and key rotation."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_services import client
from postgres_projects import ROOT, ROTATED_KEY, TEST_KEY, Project
from typer.testing import CliRunner

from kliv.cli import app
from kliv.stacks import RefusedError
from kliv.stacks.secrets import store
from kliv.stacks.secrets.keys import Keyring, SecretKeyError

SPECS = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Project
metadata: {name: pay}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: ProjectSecret
metadata: {name: stripe-key}
spec:
  projectRef: {name: pay}
  valueFrom: {env: STRIPE_KEY}
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: ProjectSecret
metadata: {name: webhook-secret}
spec:
  projectRef: {name: pay}
  generate: {length: 40, charset: hex}
"""


def _reveal(created: Project, name: str, keyring: Keyring | None = None) -> str:
    return store.reveal(created.engine.control_session(), keyring or Keyring(TEST_KEY), created.namespace, "pay", name)


def _outputs(created: Project, name: str) -> dict[str, str]:
    return created.prepare().outputs[f"ProjectSecret/{created.namespace}/{name}"]


class TestPostgresStore:
    """Versions sealed with AES-256-GCM in the control database."""

    def test_create_and_reapply(self, project: Callable[[str | Path], Project]) -> None:
        """First apply stores version 1 of each; the same specs and values plan nothing."""
        created = project(SPECS).use(env={"STRIPE_KEY": "sk_test_first"})
        plan = created.apply()
        actions = {c.resource.rsplit("/", 1)[1]: c.action for c in plan.changes if "ProjectSecret" in c.resource}
        assert actions == {"stripe-key": "create", "webhook-secret": "create"}
        assert _reveal(created, "STRIPE_KEY") == "sk_test_first"
        generated = _reveal(created, "WEBHOOK_SECRET")
        assert len(generated) == 40
        assert set(generated) <= set("0123456789abcdef")
        assert created.plan().empty
        outputs = _outputs(created, "stripe-key")
        assert outputs["version"] == "1"
        assert outputs["store"] == "postgres"
        assert outputs["fingerprint"].startswith("hmac-sha256:")

    def test_changed_value_makes_a_version(self, project: Callable[[str | Path], Project]) -> None:
        """A new source value is version 2 with a new fingerprint; the generated one is kept."""
        created = project(SPECS).use(env={"STRIPE_KEY": "sk_test_first"})
        created.apply()
        before = _outputs(created, "stripe-key")
        generated = _reveal(created, "WEBHOOK_SECRET")
        created.env["STRIPE_KEY"] = "sk_test_second"
        [change] = [c for c in created.plan().changes if c.action != "noop"]
        assert change.summary == ["store version 2 of STRIPE_KEY (the value of env:STRIPE_KEY changed)"]
        created.apply()
        after = _outputs(created, "stripe-key")
        assert after["version"] == "2"
        assert after["fingerprint"] != before["fingerprint"]
        assert _reveal(created, "STRIPE_KEY") == "sk_test_second"
        assert _reveal(created, "WEBHOOK_SECRET") == generated
        assert created.plan().empty

    def test_changed_generate_makes_a_version(self, project: Callable[[str | Path], Project]) -> None:
        """Changing `generate` draws a new value."""
        created = project(SPECS).use(env={"STRIPE_KEY": "sk"})
        created.apply()
        first = _reveal(created, "WEBHOOK_SECRET")
        created.edit("ProjectSecret", "webhook-secret", lambda d: d["spec"]["generate"].update(length=64))
        created.apply()
        second = _reveal(created, "WEBHOOK_SECRET")
        assert (len(second), second != first) == (64, True)
        assert _outputs(created, "webhook-secret")["version"] == "2"

    def test_missing_value_is_reported_per_secret(self, project: Callable[[str | Path], Project]) -> None:
        """Without the variable the secret cannot be planned; the others still are."""
        created = project(SPECS).use(env={})
        prepared = created.prepare()
        [problem] = prepared.problems.values()
        assert "env STRIPE_KEY has no value" in problem.message
        refs = {c.resource.rsplit("/", 1)[1] for c in prepared.plan.changes}
        assert "webhook-secret" in refs
        assert "stripe-key" not in refs

    def test_value_gone_keeps_the_stored_version(self, project: Callable[[str | Path], Project]) -> None:
        """Once stored, an unset variable changes nothing (the CLI may run without it)."""
        created = project(SPECS).use(env={"STRIPE_KEY": "sk_kept"})
        created.apply()
        created.env.clear()
        assert created.plan().empty
        assert _reveal(created, "STRIPE_KEY") == "sk_kept"

    def test_deleted_row_is_restored(self, project: Callable[[str | Path], Project]) -> None:
        """Drift: the stored versions vanish; the next apply stores the value again."""
        created = project(SPECS).use(env={"STRIPE_KEY": "sk_drift"})
        created.apply()
        created.engine.control_session().execute("DELETE FROM secrets.versions WHERE name = 'STRIPE_KEY'")
        [change] = [c for c in created.plan().changes if c.action != "noop"]
        assert change.action == "create"
        created.apply()
        assert _reveal(created, "STRIPE_KEY") == "sk_drift"

    def test_removing_a_secret_is_data_loss(self, project: Callable[[str | Path], Project]) -> None:
        """The value is gone with the spec: refused until allowed, then every version is deleted."""
        created = project(SPECS).use(env={"STRIPE_KEY": "sk"})
        created.apply()
        created.write([d for d in created.documents() if d["metadata"]["name"] != "stripe-key"])
        [drop] = [c for c in created.plan().changes if c.action != "noop"]
        assert (drop.action, drop.risk) == ("delete", "data-loss")
        assert drop.summary == ["delete secret STRIPE_KEY and its 1 stored version (its value is lost)"]
        with pytest.raises(RefusedError):
            created.apply()
        assert _reveal(created, "STRIPE_KEY") == "sk"
        created.apply(allow_data_loss=True)
        assert store.count(created.engine.control_session(), created.namespace, "pay", "STRIPE_KEY") == 0
        assert created.plan().empty


class TestKeyRotation:
    """A new KLIV_SECRET_KEY: every secret still opens, the old key is no longer needed."""

    def test_rotate(self, project: Callable[[str | Path], Project]) -> None:
        """Re-wrapping under key B (A still listed), then B alone opens everything and A nothing."""
        created = project(SPECS).use(env={"STRIPE_KEY": "sk_rotate"})
        created.apply()
        created.env["STRIPE_KEY"] = "sk_rotate_2"
        created.apply()
        generated = _reveal(created, "WEBHOOK_SECRET")
        old, new = TEST_KEY, ROTATED_KEY
        control = created.engine.control_session()
        try:
            self._rotate(created, control, old, new, generated)
        finally:
            # Put the shared control database back under the test key for the other tests.
            store.rotate(control, Keyring(old, [new]))

    @staticmethod
    def _rotate(created: Project, control: Any, old: str, new: str, generated: str) -> None:
        rotation = store.rotate(control, Keyring(new, [old]))
        # 3 versions of this project (more from other tests may share the control database).
        assert rotation.rewrapped >= 3
        assert rotation.key_id == Keyring(new).current_id
        only_new = Keyring(new)
        assert _reveal(created, "STRIPE_KEY", only_new) == "sk_rotate_2"
        assert _reveal(created, "WEBHOOK_SECRET", only_new) == generated
        with pytest.raises(SecretKeyError, match="neither KLIV_SECRET_KEY"):
            _reveal(created, "STRIPE_KEY", Keyring(old))
        # The engine keeps working with the new key alone: nothing to do, fingerprints unchanged.
        created.use(key=new, previous_keys=())
        assert created.plan().empty
        assert store.rotate(control, only_new).rewrapped == 0

    def test_rotate_key_command(self, project: Callable[[str | Path], Project]) -> None:
        """`kliv secrets rotate-key` re-wraps under the new key; `kliv secrets list` shows no value."""
        created = project(SPECS).use(env={"STRIPE_KEY": "sk_cli_rotation"})
        created.apply()

        def kliv(*args: str, key: str, previous: str) -> str:
            env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": key,
                   "KLIV_SECRET_PREVIOUS_KEYS": previous}  # fmt: skip
            result = CliRunner().invoke(app, list(args), env=env)
            assert result.exit_code == 0, result.output
            return result.output

        try:
            rotation = json.loads(kliv("secrets", "rotate-key", "-o", "json", key=ROTATED_KEY, previous=TEST_KEY))
            assert rotation["rewrapped"] >= 3  # the fingerprint key and this project's 2 versions
            assert rotation["key_id"] == Keyring(ROTATED_KEY).current_id
            assert _reveal(created, "STRIPE_KEY", Keyring(ROTATED_KEY)) == "sk_cli_rotation"
        finally:
            kliv("secrets", "rotate-key", key=TEST_KEY, previous=ROTATED_KEY)
        listing = kliv("secrets", "list", "--project", f"{created.namespace}/pay", key=TEST_KEY, previous="")
        header = listing.splitlines()[0].split()
        assert header == ["PROJECT", "SECRET", "VERSION", "STORE", "FINGERPRINT", "SOURCE", "CREATED"]
        assert "STRIPE_KEY" in listing
        assert "WEBHOOK_SECRET" in listing
        assert "sk_cli_rotation" not in listing
        assert listing.count("hmac-sha256:") == 2

    def test_malformed_key_only_stops_secrets(self, project: Callable[[str | Path], Project]) -> None:
        """A KLIV_SECRET_KEY too short to use: a project without secrets still plans; one with them says why."""
        blog = project(ROOT / "examples" / "blog")
        env = {"KLIV_DATABASE_URL": blog.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": "hunter2"}
        result = CliRunner().invoke(app, ["plan", str(blog.folder)], env=env)
        assert result.exit_code == 0, result.output
        created = project(SPECS)
        result = CliRunner().invoke(app, ["plan", str(created.folder)], env={**env, "STRIPE_KEY": "sk"})
        assert result.exit_code == 3
        assert "KLIV_SECRET_KEY is too short" in result.output
        assert "hunter2" not in result.output

    def test_unknown_key_is_a_clear_error(self, project: Callable[[str | Path], Project]) -> None:
        """Planning with a key that wrapped nothing names both key ids and how to fix it."""
        created = project(SPECS).use(env={"STRIPE_KEY": "sk"})
        created.apply()
        created.use(key="an-entirely-different-key-0003", previous_keys=())
        problems = list(created.prepare().problems.values())
        assert len(problems) == 2  # each secret reports it; the rest of the project still plans
        assert all(isinstance(p, SecretKeyError) for p in problems)
        assert "KLIV_SECRET_PREVIOUS_KEYS" in problems[0].hint


class TestSecretsManager:
    """The aws store on moto: values in Secrets Manager, versions and fingerprints in the control database."""

    def test_lifecycle(self, project: Callable[[str | Path], Project], aws_url: str) -> None:
        """Create, new version, drift restored, delete refused then done."""
        created = project(SPECS).use(env={"STRIPE_KEY": "sk_aws_1"}, secret_store="aws", secrets_url=aws_url)
        sm = client(aws_url, "secretsmanager")
        name = f"kliv/{created.namespace}/pay/STRIPE_KEY"
        created.apply()
        assert sm.get_secret_value(SecretId=name)["SecretString"] == "sk_aws_1"
        tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=name)["Tags"]}
        assert tags["kliv:project"] == "pay"
        assert _outputs(created, "stripe-key")["store"] == "aws"
        assert created.plan().empty
        created.env["STRIPE_KEY"] = "sk_aws_2"
        created.apply()
        assert sm.get_secret_value(SecretId=name)["SecretString"] == "sk_aws_2"
        assert _outputs(created, "stripe-key")["version"] == "2"
        # Someone writes a value behind kliv's back: the plan makes kliv's version current again.
        sm.put_secret_value(SecretId=name, SecretString="sk_intruder")
        prepared = created.prepare()
        [drift] = [c for c in prepared.plan.changes if c.action != "noop"]
        assert drift.summary == ["make version 2 of STRIPE_KEY current again (changed outside kliv)"]
        created.engine.apply(prepared)
        # AWSCURRENT is what readers get; moto (unlike AWS) needs the stage named after a move.
        assert sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["SecretString"] == "sk_aws_2"
        provider = next(p for p in created.engine.providers if p.kind == "ProjectSecret")
        provider.apply(drift.resource, drift)  # the same restore again (a retry): nothing to do
        assert sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["SecretString"] == "sk_aws_2"
        assert created.plan().empty
        created.write([d for d in created.documents() if d["metadata"]["name"] != "stripe-key"])
        with pytest.raises(RefusedError):
            created.apply()
        created.apply(allow_data_loss=True)
        with pytest.raises(sm.exceptions.ResourceNotFoundException):
            sm.describe_secret(SecretId=name)

    def test_same_token_other_value_is_an_error(self, aws_url: str) -> None:
        """Version tokens carry the value's fingerprint: a retry never keeps a stale value."""
        from kliv.stacks.errors import EngineError
        from kliv.stacks.secrets.aws import SecretsManagerStore

        aws = SecretsManagerStore(aws_url)
        name = f"kliv/review/{uuid.uuid4().hex[:8]}/TOKEN"
        first = aws.version_id(name, 1, "hmac-sha256:aaaa")
        aws.put(name, first, "value-a", {})
        aws.put(name, first, "value-a", {})  # the same write again: idempotent
        with pytest.raises(EngineError, match="ResourceExistsException"):
            aws.put(name, first, "value-b", {})
        second = aws.version_id(name, 1, "hmac-sha256:bbbb")
        assert second != first
        aws.put(name, second, "value-b", {})
        sm = client(aws_url, "secretsmanager")
        assert sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["SecretString"] == "value-b"

    def test_foreign_secret_is_refused(self, project: Callable[[str | Path], Project], aws_url: str) -> None:
        """A Secrets Manager secret of that name without kliv's tags is never overwritten."""
        created = project(SPECS).use(env={"STRIPE_KEY": "sk"}, secret_store="aws", secrets_url=aws_url)
        sm = client(aws_url, "secretsmanager")
        name = f"kliv/{created.namespace}/pay/STRIPE_KEY"
        sm.create_secret(Name=name, SecretString="theirs")
        with pytest.raises(Exception, match="never takes a secret over"):
            created.apply()
        assert sm.get_secret_value(SecretId=name)["SecretString"] == "theirs"


class TestControlPlaneCredentials:
    """Through the real command: kliv's own key and database password never become a project's secret."""

    @staticmethod
    def _kliv(created: Project, **env: str) -> Any:
        base = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY,
                "KLIV_BUCKETS_DIR": str(created.buckets_dir)}  # fmt: skip
        return CliRunner().invoke(app, ["apply", str(created.folder), "--output", "json"], env={**base, **env})

    def test_reading_kliv_secret_key_is_invalid(self, project: Callable[[str | Path], Project]) -> None:
        created = project(SPECS.replace("env: STRIPE_KEY", "env: KLIV_SECRET_KEY"))
        result = self._kliv(created)
        assert result.exit_code == 1
        [error] = json.loads(result.output)["errors"]
        assert error["path"] == "/spec/valueFrom/env"
        assert TEST_KEY not in result.output

    def test_a_copy_of_the_key_is_refused_and_nothing_stored(self, project: Callable[[str | Path], Project]) -> None:
        created = project(SPECS)
        result = self._kliv(created, STRIPE_KEY=TEST_KEY)
        assert result.exit_code == 2  # refused: a source kliv never reads
        assert "holds one of the control plane's own credentials" in result.output
        assert TEST_KEY not in result.output
        versions = store.listing(created.engine.control_session(), f"{created.namespace}/pay")
        assert versions == []

    def test_a_copy_of_the_database_password_is_refused(self, project: Callable[[str | Path], Project]) -> None:
        created = project(SPECS)
        url = created.url.replace("postgres@", "postgres:letmein-kliv-admin@", 1)
        if url == created.url:
            pytest.skip("the server's URL has no user part to add a password to")
        result = self._kliv(created, KLIV_DATABASE_URL=url, STRIPE_KEY="x-letmein-kliv-admin-x")
        assert result.exit_code == 2
        assert "holds one of the control plane's own credentials" in result.output
