"""Where the operator reads ProjectSecret values: Kubernetes Secrets, never its own environment."""

from __future__ import annotations

import base64

import pytest

from kliv.operator.handlers import OperatorState
from kliv.operator.reconciling import Reconciler
from kliv.specs import ProjectSecret
from kliv.stacks import PostgresEngine
from kliv.stacks.errors import SourceRefusedError


def _secret(value_from: dict[str, object]) -> ProjectSecret:
    return ProjectSecret.model_validate(
        {
            "apiVersion": "cloud.kliv.dev/v1alpha1",
            "kind": "ProjectSecret",
            "metadata": {"name": "stripe-key", "namespace": "shop"},
            "spec": {"projectRef": {"name": "shop"}, "valueFrom": value_from},
        }
    )


@pytest.fixture
def state() -> OperatorState:
    return OperatorState(Reconciler(PostgresEngine("postgresql://unused@127.0.0.1:1/none")))


class TestSecretValue:
    """ClusterSecrets.value, the secret provider's source in the operator."""

    def test_reads_a_key_of_a_kubernetes_secret(self, state: OperatorState) -> None:
        """The key's base64 data decoded; a missing Secret or key is None (waiting)."""
        assert state.secrets.update(("shop", "stripe"), {"api-key": base64.b64encode(b"sk_live_1").decode()})
        assert not state.secrets.update(("shop", "stripe"), {"api-key": base64.b64encode(b"sk_live_1").decode()})
        value = state.secrets.value
        assert value(_secret({"secretKeyRef": {"name": "stripe", "key": "api-key"}})) == "sk_live_1"
        assert value(_secret({"secretKeyRef": {"name": "stripe", "key": "other"}})) is None
        assert value(_secret({"secretKeyRef": {"name": "absent", "key": "api-key"}})) is None
        assert state.secrets.update(("shop", "stripe"), None)
        assert value(_secret({"secretKeyRef": {"name": "stripe", "key": "api-key"}})) is None

    def test_never_its_own_environment(self, state: OperatorState, monkeypatch: pytest.MonkeyPatch) -> None:
        """valueFrom.env is refused: it would copy the operator's own environment into a project.

        (KLIV_SECRET_KEY and the like no longer even validate: tests/unit/test_secret_sources.py.)
        """
        monkeypatch.setenv("STRIPE_KEY", "operator-own-key-material")
        with pytest.raises(SourceRefusedError) as raised:
            state.secrets.value(_secret({"env": "STRIPE_KEY"}))
        assert "secretKeyRef" in raised.value.hint
        assert "operator-own-key-material" not in raised.value.message

    def test_projects_reading_a_secret(self, state: OperatorState) -> None:
        """A changed Secret re-reconciles exactly the projects whose ProjectSecrets read it."""
        body = {"kind": "ProjectSecret", "spec": {"valueFrom": {"secretKeyRef": {"name": "stripe", "key": "k"}}}}
        state.bodies[("shop", "shop")][("ProjectSecret", "stripe-key")] = body
        state.bodies[("other", "shop")][("ProjectSecret", "stripe-key")] = body
        assert state.referencing("shop", "stripe") == [("shop", "shop")]
        assert state.referencing("shop", "paypal") == []
