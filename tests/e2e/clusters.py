"""A test cluster: the emulated Kubernetes API, the operator in a thread, a real Postgres behind it.

Used by the e2e scenarios (one per file). Each scenario gets its own namespace
and database, dropped afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
import yaml
from emulating import emulator_running, eventually, operator_in_thread

from keyrings import ROTATED_KEY, TEST_KEY
from kliv.operator.cluster_secrets import ClusterSecrets
from kliv.operator.handlers import OperatorState, make_registry
from kliv.specs import GROUP, KINDS, VERSION
from kliv.stacks import PostgresEngine
from kliv.stacks.providers import ProviderOptions

__all__ = ["DATABASE_URL", "TEST_KEY", "Cluster", "cluster", "condition", "needs_postgres"]

ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("KLIV_TEST_DATABASE_URL", "")
PLURALS = {model.KIND: model.PLURAL for model in KINDS.values()}
needs_postgres = pytest.mark.skipif(
    not DATABASE_URL, reason="KLIV_TEST_DATABASE_URL is not set and no PostgreSQL answers on 127.0.0.1:5432"
)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


class Cluster:
    """Create, patch and read custom resources of one namespace."""

    def __init__(self, http: aiohttp.ClientSession, namespace: str, database: str, state: OperatorState) -> None:
        self.http = http
        self.namespace = namespace
        self.database = database
        self.state = state
        self.url_base = ""
        self.engine: PostgresEngine | None = None
        self.drift_interval = 300.0
        self.buckets = Path()

    async def put_secret(self, name: str, data: dict[str, str]) -> None:
        """Create or replace a core v1 Secret of this namespace (values in clear, sent base64)."""
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        path = f"/api/v1/namespaces/{self.namespace}/secrets"
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": self.namespace},
                "data": encoded}  # fmt: skip
        async with self.http.get(f"{path}/{name}") as response:
            exists = response.status == 200
        if exists:
            headers = {"Content-Type": "application/merge-patch+json"}
            request = self.http.patch(f"{path}/{name}", data=json.dumps({"data": encoded}), headers=headers)
        else:
            request = self.http.post(path, json=body)
        async with request as response:
            assert response.status == 200, await response.text()

    @contextlib.asynccontextmanager
    async def operator(self, peering: tuple[str, int] | None = None) -> AsyncIterator[OperatorState]:
        """Another operator process on the same cluster (restarts; replicas with ``peering``)."""
        assert self.engine is not None
        registry, state = make_registry(
            self.engine, quiet=0.2, drift_interval=self.drift_interval, secrets=self.state.secrets
        )
        url, namespace = self.url_base, self.namespace

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=url, default_namespace=namespace)

        async with operator_in_thread(registry, peering):
            yield state

    def url(self, kind: str, name: str = "") -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURALS[kind]}"
        return f"{base}/{name}" if name else base

    def example(self, name: str) -> list[dict[str, Any]]:
        """An example's documents, moved into this namespace and database."""
        documents = []
        for path in sorted((ROOT / "examples" / name).glob("*.yaml")):
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
        return [self.own(d) for d in documents]

    def own(self, document: dict[str, Any]) -> dict[str, Any]:
        document["metadata"]["namespace"] = self.namespace
        if document["kind"] == "Project":
            document.setdefault("spec", {})["database"] = {"name": self.database}
        return document

    async def create(self, document: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(self.url(document["kind"]), json=document) as response:
            assert response.status == 200, await response.text()
            return await response.json()  # type: ignore[no-any-return]

    async def patch(self, kind: str, name: str, change: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.http.patch(self.url(kind, name), data=json.dumps(change), headers=headers) as response:
            assert response.status == 200, await response.text()
            return await response.json()  # type: ignore[no-any-return]

    async def delete(self, kind: str, name: str) -> None:
        async with self.http.delete(self.url(kind, name)) as response:
            assert response.status == 200, await response.text()

    async def gone(self, kind: str, name: str, timeout: float = 60) -> None:
        async def absent() -> bool:
            return await self.get(kind, name) is None

        await eventually(absent, timeout=timeout)

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        async with self.http.get(self.url(kind, name)) as response:
            return await response.json() if response.status == 200 else None

    async def wait(self, kind: str, name: str, reason: str, generation: int = 1, timeout: float = 60) -> dict[str, Any]:
        """Until the object's Ready condition has ``reason`` for ``generation``."""

        async def matches() -> dict[str, Any] | None:
            obj = await self.get(kind, name)
            if obj and obj.get("status", {}).get("observedGeneration") == generation:
                return obj if condition(obj, "Ready").get("reason") == reason else None
            return None

        return await eventually(matches, timeout=timeout)  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def cluster(
    drift_interval: float = 300.0, running: bool = True, database_url: str = ""
) -> AsyncIterator[Cluster]:
    """A fresh namespace on an emulated cluster (with the operator ``running``); its database dropped after."""
    namespace, database = f"test-{uuid.uuid4().hex[:8]}", f"t_{uuid.uuid4().hex[:10]}"
    buckets = Path(tempfile.mkdtemp(prefix="kliv-e2e-buckets-"))
    secrets = ClusterSecrets()  # as `kliv operator` does: the secret provider reads Kubernetes Secrets
    options = ProviderOptions(
        buckets_dir=buckets, secret_values=secrets.value, secret_key=TEST_KEY, previous_secret_keys=(ROTATED_KEY,)
    )
    engine = PostgresEngine(database_url or DATABASE_URL, options=options)
    engine.drop_project(database)
    try:
        async with emulator_running() as emulator:
            url = str(emulator.url).rstrip("/")
            emulator.namespaces.add(namespace)
            registry, state = make_registry(engine, quiet=0.2, drift_interval=drift_interval, secrets=secrets)

            @kopf.on.login(registry=registry)
            def login(**_: Any) -> kopf.ConnectionInfo:
                return kopf.ConnectionInfo(server=url, default_namespace=namespace)

            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(base_url=url, connector=connector) as http:
                kube = Cluster(http, namespace, database, state)
                kube.url_base, kube.engine, kube.drift_interval = url, engine, drift_interval
                kube.buckets = buckets
                if running:
                    async with operator_in_thread(registry):
                        yield kube
                else:
                    yield kube
    finally:
        engine.drop_project(database)
        engine.close()
        shutil.rmtree(buckets, ignore_errors=True)
