"""End to end: a Function as a custom resource, reconciled by the operator and served by `kliv serve`.

The Function reads a secret whose Kubernetes Secret does not exist yet: it waits
(WaitingForDependency, naming the ProjectSecret). Once the Secret exists it is Ready with
its url, version, artifact and target; `kliv serve` answers at that URL with the secret in
the function's environment. A new source is version 2; a module Deno refuses is InvalidSpec,
and version 2 keeps serving.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from clusters import DATABASE_URL, TEST_KEY, cluster, condition, needs_postgres

from kliv.stacks.secrets import jwts
from kliv.stacks.secrets.keys import Keyring

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from serving import serve

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]

API = "cloud.kliv.dev/v1alpha1"
CODE = """export default {
  fetch(req: Request): Response {
    return Response.json({ version: VERSION, keyLength: (Deno.env.get("SHOP_KEY") ?? "").length });
  },
};
const VERSION = 1;
"""


def _documents() -> list[dict[str, Any]]:
    def resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": API, "kind": kind, "metadata": {"name": name},
                "spec": {"projectRef": {"name": "shop"}, **spec}}  # fmt: skip

    return [
        {"apiVersion": API, "kind": "Project", "metadata": {"name": "shop"}, "spec": {}},
        resource("ProjectSecret", "shop-key", {"valueFrom": {"secretKeyRef": {"name": "shop", "key": "key"}}}),
        resource("Function", "hello", {"secrets": ["SHOP_KEY"], "source": {"inline": CODE}}),
    ]


class TestOperatorFunctions:
    def test_function_lifecycle(self) -> None:
        async def scenario() -> dict[str, Any]:
            found: dict[str, Any] = {}
            async with cluster() as kube:
                for document in _documents():
                    await kube.create(kube.own(document))
                found["waiting"] = await kube.wait("Function", "hello", "WaitingForDependency")
                await kube.put_secret("shop", {"key": "k" * 12})
                found["ready"] = await kube.wait("Function", "hello", "Available", timeout=30)
                assert kube.engine is not None
                with serve(DATABASE_URL) as served:
                    secret = await asyncio.to_thread(
                        jwts.ensure, kube.engine.control_session(), Keyring(TEST_KEY), kube.namespace, "shop"
                    )
                    key = jwts.key(secret, kube.namespace, "shop", "anon")
                    url = found["ready"]["status"]["outputs"]["url"].replace("http://127.0.0.1:54321", served.url)

                    async def call() -> dict[str, Any]:
                        async with httpx.AsyncClient(timeout=30) as client:
                            answer = await client.get(url, headers={"authorization": f"Bearer {key}"})
                            return dict(answer.json())

                    found["first"] = await call()
                    changed = CODE.replace("const VERSION = 1;", "const VERSION = 2;")
                    await kube.patch("Function", "hello", {"spec": {"source": {"inline": changed}}})
                    found["second"] = await kube.wait("Function", "hello", "Available", generation=2, timeout=30)
                    for _ in range(100):
                        if (await call())["version"] == 2:
                            break
                        await asyncio.sleep(0.1)
                    found["served"] = await call()
                    await kube.patch("Function", "hello", {"spec": {"source": {"inline": "export default 1;"}}})
                    found["invalid"] = await kube.wait("Function", "hello", "InvalidSpec", generation=3, timeout=30)
                    found["still"] = await call()
            return found

        found = asyncio.run(scenario())
        assert "ProjectSecret shop-key" in condition(found["waiting"], "Ready")["message"]
        outputs = found["ready"]["status"]["outputs"]
        assert outputs["version"] == "1"
        assert outputs["target"] == "embedded"
        assert outputs["artifact"].startswith("sha256:")
        assert outputs["url"].endswith("/functions/v1/hello")
        assert found["first"] == {"version": 1, "keyLength": 12}
        assert found["second"]["status"]["outputs"]["version"] == "2"
        assert found["served"]["version"] == 2
        message = condition(found["invalid"], "Ready")["message"]
        assert "/spec/source/inline" in message
        assert "fetch" in message
        assert found["still"]["version"] == 2
