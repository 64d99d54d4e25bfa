"""End to end: a bucket, two secrets and an email template as custom resources.

The secret read from a Kubernetes Secret waits for it (WaitingForDependency,
naming it); once it exists everything is Ready with outputs that carry the
version and fingerprint, never the value; a changed Secret makes a new version.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from clusters import TEST_KEY, cluster, condition, needs_postgres
from emulating import eventually

from kliv.stacks.secrets import store
from kliv.stacks.secrets.keys import Keyring

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]

API = "cloud.kliv.dev/v1alpha1"


def _documents() -> list[dict[str, Any]]:
    def resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": API,
            "kind": kind,
            "metadata": {"name": name},
            "spec": {"projectRef": {"name": "shop"}, **spec},
        }

    return [
        {"apiVersion": API, "kind": "Project", "metadata": {"name": "shop"}, "spec": {}},
        resource("Bucket", "images", {"public": True, "maxObjectSize": "2Mi", "allowedContentTypes": ["image/png"]}),
        resource("ProjectSecret", "stripe-key", {"valueFrom": {"secretKeyRef": {"name": "stripe", "key": "api-key"}}}),
        resource("ProjectSecret", "signing", {"generate": {"length": 32}}),
        resource(
            "EmailTemplate",
            "welcome",
            {
                "subject": "Hi {{ name }}",
                "markdown": "Welcome, **{{ name }}**!",
                "variables": {"name": {"required": True}},
            },
        ),
    ]


class TestOperatorStorage:
    """Buckets, secrets and templates reconciled by the operator."""

    def test_everything_becomes_ready(self) -> None:
        """Waiting for the Kubernetes Secret, then Ready; outputs without values; a new value, a new version."""
        canary = "sk_live_e2e_canary_value"

        async def scenario() -> tuple[dict[str, dict[str, Any]], dict[str, Any], str, int]:
            async with cluster() as kube:
                for document in _documents():
                    await kube.create(kube.own(document))
                waiting = await kube.wait("ProjectSecret", "stripe-key", "WaitingForDependency")
                ready = {
                    name: await kube.wait(kind, name, "Available")
                    for kind, name in (("Bucket", "images"), ("ProjectSecret", "signing"), ("EmailTemplate", "welcome"))
                }
                await kube.put_secret("stripe", {"api-key": canary})
                ready["stripe-key"] = await kube.wait("ProjectSecret", "stripe-key", "Available", timeout=30)
                await kube.put_secret("stripe", {"api-key": canary + "-rotated"})
                assert kube.engine is not None
                control = kube.engine.control_session()

                async def second_version() -> bool:
                    latest = await asyncio.to_thread(store.latest, control, kube.namespace, "shop", "STRIPE_KEY")
                    return latest is not None and latest.version == 2

                await eventually(second_version, timeout=20)
                value = store.reveal(control, Keyring(TEST_KEY), kube.namespace, "shop", "STRIPE_KEY")
                return ready, waiting, value, len(list(kube.buckets.iterdir()))

        ready, waiting, value, buckets = asyncio.run(scenario())
        message = condition(waiting, "Ready")["message"]
        assert "secretKeyRef stripe/api-key has no value" in message
        bucket = ready["images"]["status"]["outputs"]
        assert bucket["bucket"] == "shop-images"
        assert (bucket["public"], bucket["maxObjectSize"], bucket["allowedContentTypes"]) == (
            "true",
            "2097152",
            "image/png",
        )
        assert buckets == 1
        secret = ready["stripe-key"]["status"]["outputs"]
        assert (secret["name"], secret["version"], secret["store"]) == ("STRIPE_KEY", "1", "postgres")
        assert secret["fingerprint"].startswith("hmac-sha256:")
        assert canary not in str(ready)
        assert ready["welcome"]["status"]["outputs"]["version"] == "1"
        assert value == canary + "-rotated"
