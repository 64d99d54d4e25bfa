"""End to end: the blog example applied as custom resources becomes Ready, with outputs, in real Postgres."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import psycopg
import pytest
import yaml
from emulating import emulator_running, eventually, operator_in_thread
from psycopg.conninfo import make_conninfo

from kliv.operator.handlers import make_registry
from kliv.specs import GROUP, KINDS, VERSION
from kliv.stacks import PostgresEngine

ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("KLIV_TEST_DATABASE_URL", "")
pytestmark = [
    pytest.mark.skipif(not DATABASE_URL, reason="KLIV_TEST_DATABASE_URL is not set (CI sets it)"),
    pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning"),
]
PLURALS = {model.KIND: model.PLURAL for model in KINDS.values()}


def _blog(namespace: str, database: str) -> list[dict[str, Any]]:
    documents = []
    for path in sorted((ROOT / "examples" / "blog").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                document["metadata"]["namespace"] = namespace
                if document["kind"] == "Project":
                    document["spec"]["database"] = {"name": database}
                documents.append(document)
    return documents


def _url(document: dict[str, Any]) -> str:
    namespace = document["metadata"]["namespace"]
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURALS[document['kind']]}"


def _ready(obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


class TestOperatorBlog:
    """The blog example as custom resources."""

    def test_whole_project_becomes_ready(self) -> None:
        """13 objects created at once are all Ready with outputs; the tables exist in Postgres."""
        namespace, database = f"test-{uuid.uuid4().hex[:8]}", f"t_{uuid.uuid4().hex[:10]}"
        engine = PostgresEngine(DATABASE_URL)
        engine.drop_project(database)
        documents = _blog(namespace, database)

        async def scenario() -> list[dict[str, Any]]:
            async with emulator_running() as emulator:
                url = str(emulator.url).rstrip("/")
                registry, state = make_registry(engine, quiet=0.2)

                @kopf.on.login(registry=registry)
                def login(**_: Any) -> kopf.ConnectionInfo:
                    return kopf.ConnectionInfo(server=url, default_namespace=namespace)

                connector = aiohttp.TCPConnector(force_close=True)
                async with (
                    aiohttp.ClientSession(base_url=url, connector=connector) as http,
                    operator_in_thread(registry),
                ):
                    for document in documents:
                        async with http.post(_url(document), json=document) as response:
                            assert response.status == 200, await response.text()

                    async def everything_ready() -> list[dict[str, Any]] | None:
                        found = []
                        for document in documents:
                            async with http.get(f"{_url(document)}/{document['metadata']['name']}") as response:
                                found.append(await response.json())
                        return found if all(_ready(o) for o in found) else None

                    ready = await eventually(everything_ready, timeout=60)
                    assert state.debouncer is not None
                    assert state.debouncer.runs <= 4  # 13 objects, a few plans
                    return ready

        try:
            objects = asyncio.run(scenario())
            posts = next(o for o in objects if o["kind"] == "Table" and o["metadata"]["name"] == "posts")
            assert posts["status"]["outputs"] == {"database": database, "table": "public.posts"}
            assert posts["status"]["observedGeneration"] == 1
            conditions = {c["type"]: c for c in posts["status"]["conditions"]}
            assert conditions["Synced"]["reason"] == "ReconcileSuccess"
            with psycopg.connect(make_conninfo(DATABASE_URL, dbname=database)) as connection:
                tables = connection.execute(
                    "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1"
                ).fetchall()
            assert tables == [("comments",), ("posts",), ("profiles",)]
        finally:
            engine.drop_project(database)
            engine.close()
