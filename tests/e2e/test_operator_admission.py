"""End to end: `kliv operator` serves admission over HTTPS, the way the apiserver calls it.

The operator runs as a process (its own login, its own kopf webhook server with the certificate
given by --webhook-cert/--webhook-key); each AdmissionReview is POSTed to /validate, the path of
deploy/webhook.yaml, over TLS verified against that certificate.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from clusters import DATABASE_URL, cluster, needs_postgres
from processes import certificate, free_port, kliv_operator, wait_for_port

pytestmark = [needs_postgres, pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]

API = "cloud.kliv.dev/v1alpha1"


def review(namespace: str, obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    """An admission.k8s.io/v1 AdmissionReview as the apiserver sends it."""
    plural = {"Project": "projects", "Table": "tables", "TablePolicy": "tablepolicies"}[obj["kind"]]
    obj["metadata"]["namespace"] = namespace
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "cloud.kliv.dev", "version": "v1alpha1", "kind": obj["kind"]},
            "resource": {"group": "cloud.kliv.dev", "version": "v1alpha1", "resource": plural},
            "requestKind": {"group": "cloud.kliv.dev", "version": "v1alpha1", "kind": obj["kind"]},
            "name": obj["metadata"]["name"],
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "alice@example.com", "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
        },
    }


def table(name: str, **spec: Any) -> dict[str, Any]:
    columns = [{"name": "id", "type": "uuid", "primaryKey": True}]
    return {"apiVersion": API, "kind": "Table", "metadata": {"name": name},
            "spec": {"projectRef": {"name": "shop"}, "columns": columns, **spec}}  # fmt: skip


class TestAdmissionWebhook:
    def test_allowed_and_denied_over_https(self, tmp_path: Path) -> None:
        async def scenario() -> list[dict[str, Any]]:
            cert, key = certificate(tmp_path)
            port = free_port()
            async with cluster(running=False) as kube:
                args = ("--webhook-cert", str(cert), "--webhook-key", str(key),
                        "--webhook-port", str(port), "--webhook-address", "127.0.0.1")  # fmt: skip
                async with kliv_operator(tmp_path, kube.url_base, kube.namespace, DATABASE_URL, *args) as operator:
                    await wait_for_port(port, operator)
                    # The project exists in the cluster (and so in the operator's view): a Table's column
                    # types are checked against its enums, a policy's table against its tables.
                    await kube.create(
                        kube.own(
                            {
                                "apiVersion": API,
                                "kind": "Project",
                                "metadata": {"name": "shop"},
                                "spec": {"enums": [{"name": "state", "values": ["open"]}]},
                            }
                        )
                    )
                    try:
                        await kube.wait("Project", "shop", "Available", timeout=60)
                    except AssertionError:
                        raise AssertionError(operator.output()[-4000:]) from None
                    trusted = ssl.create_default_context(cafile=str(cert))
                    reviews = [
                        review(
                            kube.namespace,
                            {"apiVersion": API, "kind": "Project", "metadata": {"name": "other"}, "spec": {}},
                        ),
                        review(kube.namespace, table("items")),
                        review(
                            kube.namespace,
                            table(
                                "orders",
                                colour="red",
                                columns=[
                                    {"name": "id", "type": "uuid", "primaryKey": True},
                                    {"name": "placed_at", "type": "datetime"},
                                ],
                            ),
                        ),
                        review(
                            kube.namespace,
                            {
                                "apiVersion": API,
                                "kind": "TablePolicy",
                                "metadata": {"name": "items-read"},
                                "spec": {
                                    "projectRef": {"name": "shop"},
                                    "table": "items",
                                    "command": "select",
                                    "using": "pg_sleep(10) IS NULL",
                                },
                            },
                        ),
                    ]
                    answers = []
                    async with aiohttp.ClientSession() as http:
                        for sent in reviews:
                            async with http.post(f"https://127.0.0.1:{port}/validate", json=sent, ssl=trusted) as r:
                                assert r.status == 200, await r.text()
                                answer = await r.json()
                                assert answer["response"]["uid"] == sent["request"]["uid"]
                                answers.append(answer["response"])
                    # A client that does not trust the certificate is refused the connection.
                    async with aiohttp.ClientSession() as http:
                        with pytest.raises(aiohttp.ClientConnectorCertificateError):
                            await http.post(f"https://127.0.0.1:{port}/validate", json=reviews[0])
                    return answers

        project, items, orders, policy = asyncio.run(scenario())
        assert project["allowed"] is True
        assert items["allowed"] is True
        assert orders["allowed"] is False
        assert orders["status"]["code"] == 422
        message = orders["status"]["message"]
        assert "/spec/colour: unknown field `colour`" in message
        assert "/spec/columns/1/type" in message  # every problem of the document at once
        assert "timestamptz" in message  # the Postgres answer to `datetime`
        assert policy["allowed"] is False
        assert "/spec/using" in policy["status"]["message"]
        assert "pg_sleep" in policy["status"]["message"]


class TestClientCertificates:
    def test_only_the_ca_s_clients_are_served(self, tmp_path: Path) -> None:
        """--webhook-client-ca: the apiserver's certificate is served, a client without one is refused at TLS."""

        async def scenario() -> tuple[bool, bool]:
            cert, key = certificate(tmp_path)
            client_cert, client_key = certificate(tmp_path, "apiserver")
            port = free_port()
            async with cluster(running=False) as kube:
                args = ("--webhook-cert", str(cert), "--webhook-key", str(key), "--webhook-client-ca", str(client_cert),
                        "--webhook-port", str(port), "--webhook-address", "127.0.0.1")  # fmt: skip
                async with kliv_operator(tmp_path, kube.url_base, kube.namespace, DATABASE_URL, *args) as operator:
                    await wait_for_port(port, operator)
                    sent = review(kube.namespace, table("items"))
                    anonymous = ssl.create_default_context(cafile=str(cert))
                    apiserver = ssl.create_default_context(cafile=str(cert))
                    apiserver.load_cert_chain(str(client_cert), str(client_key))
                    async with aiohttp.ClientSession() as http:
                        try:
                            async with http.post(f"https://127.0.0.1:{port}/validate", json=sent, ssl=anonymous):
                                anonymous_served = True
                        except aiohttp.ClientError:
                            anonymous_served = False
                        async with http.post(f"https://127.0.0.1:{port}/validate", json=sent, ssl=apiserver) as r:
                            served = r.status == 200 and "response" in await r.json()
                    return anonymous_served, served

        anonymous_served, served = asyncio.run(scenario())
        assert not anonymous_served
        assert served
