"""The Lambda target on moto (the Lambda API over HTTP), and kliv's Node adapter under a real Node 20.

moto creates, publishes and aliases functions without Docker but cannot invoke them, so the
adapter is tested on its own: the package kliv uploads is unpacked and its handler run by
`node` on recorded API Gateway v2 events.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_services import client
from postgres_projects import ROOT, TEST_KEY, Project
from test_functions_gateway import project_yaml, source
from typer.testing import CliRunner

from kliv.cli import app
from kliv.stacks.functions import lambdas

CODE = """type Claims = { role?: string; sub?: string };
export default {
  async fetch(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const claims: Claims = JSON.parse(req.headers.get("x-kliv-claims") ?? "{}");
    const body = req.method === "POST" ? await req.json() : null;
    const headers = new Headers({ "content-type": "application/json" });
    headers.append("set-cookie", "a=1");
    headers.append("set-cookie", "b=2");
    return new Response(JSON.stringify({
      version: VERSION, path: url.pathname, query: url.search, method: req.method, body, claims,
      cookie: req.headers.get("cookie"), currency: Deno.env.get("CURRENCY"), key: Deno.env.get("SHOP_KEY")?.length,
    }), { status: 201, headers });
  },
};
const VERSION = 1;
"""


def _role(url: str) -> str:
    iam = client(url, "iam")
    try:
        return str(iam.get_role(RoleName="kliv-functions")["Role"]["Arn"])
    except iam.exceptions.NoSuchEntityException:
        return str(iam.create_role(RoleName="kliv-functions", AssumeRolePolicyDocument="{}")["Role"]["Arn"])


def _alias(url: str, name: str) -> dict[str, Any]:
    return dict(client(url, "lambda").get_alias(FunctionName=name, Name="live"))


@pytest.fixture
def on_lambda(project: Callable[..., Project], aws_url: str) -> tuple[Project, str, str]:
    functions = {"hello": source(CODE, env={"CURRENCY": "eur"}, secrets=["SHOP_KEY"], memoryMiB=256)}
    created = project(project_yaml(functions, secrets=("SHOP_KEY",)))
    created.use(env={"SHOP_KEY": "sk_lambda_canary"}, lambda_url=aws_url, lambda_role=_role(aws_url))
    return created, aws_url, lambdas.physical(created.namespace, "fn", "hello")


class TestLambdaTarget:
    def test_deploy_switch_rollback_drift_retire(self, on_lambda: tuple[Project, str, str]) -> None:
        created, url, name = on_lambda
        ref = f"Function/{created.namespace}/hello"
        plan = created.plan()
        cli_env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY,
                   "KLIV_FUNCTIONS_TARGET": "lambda", "KLIV_LAMBDA_ENDPOINT": url, "KLIV_LAMBDA_ROLE": _role(url),
                   "SHOP_KEY": "sk_lambda_canary"}  # fmt: skip
        planned = CliRunner().invoke(app, ["plan", str(created.folder), "--output", "json"], env=cli_env)
        assert planned.exit_code == 0, planned.output  # the settings' wiring: KLIV_FUNCTIONS_TARGET and friends
        [shown] = [c for c in json.loads(planned.stdout)["plans"][0]["changes"] if c["resource"] == ref]
        assert f"lambda:UpdateAlias {name}:live -> version 1" in [s["sql"] for s in shown["steps"]]
        [change] = [c for c in plan.changes if c.resource == ref]
        assert [s.sql.split(" ")[0] for s in change.steps][:2] == [
            "lambda:UpdateFunctionCode/CreateFunction", "lambda:UpdateAlias"]  # fmt: skip
        created.apply()
        api = client(url, "lambda")
        configuration = api.get_function_configuration(FunctionName=name, Qualifier="live")
        assert configuration["Runtime"] == "nodejs20.x"
        assert configuration["MemorySize"] == 256
        assert configuration["Environment"]["Variables"]["CURRENCY"] == "eur"
        assert configuration["Environment"]["Variables"]["KLIV_ROUTE"] == "hello"
        first = _alias(url, name)["FunctionVersion"]
        outputs = created.prepare().outputs[ref]
        assert (outputs["target"], outputs["version"]) == ("lambda", "1")
        assert outputs["url"] == f"lambda:{name}:live"
        assert created.plan().empty
        assert "sk_lambda_canary" not in json.dumps(plan.to_json())

        created.edit("Function", "hello", lambda d: d["spec"]["source"].update(
            inline=CODE.replace("VERSION = 1", "VERSION = 2")))  # fmt: skip
        created.apply()
        second = _alias(url, name)["FunctionVersion"]
        assert second != first
        assert created.prepare().outputs[ref]["version"] == "2"

        env = {"KLIV_DATABASE_URL": created.url, "KLIV_CONFIG": "/nonexistent", "KLIV_SECRET_KEY": TEST_KEY,
               "KLIV_FUNCTIONS_TARGET": "lambda", "KLIV_LAMBDA_ENDPOINT": url}  # fmt: skip
        rolled = CliRunner().invoke(app, ["functions", "rollback", "hello", "-p", f"{created.namespace}/fn"], env=env)
        assert rolled.exit_code == 0, rolled.output
        assert _alias(url, name)["FunctionVersion"] == first
        assert created.plan().empty  # a moved alias that kliv moved is not drift

        # Behind kliv's back: new code published and the alias moved to it.
        foreign = io.BytesIO()
        with zipfile.ZipFile(foreign, "w") as archive:
            archive.writestr("index.mjs", "export const handler = async () => ({statusCode: 200, body: 'pwned'});")
        api.update_function_code(FunctionName=name, ZipFile=foreign.getvalue())
        published = api.publish_version(FunctionName=name)["Version"]
        api.update_alias(FunctionName=name, Name="live", FunctionVersion=published)
        [drift] = [c for c in created.plan().changes if c.resource == ref]
        assert drift.action == "update"
        assert "changed outside kliv" in drift.summary[0]
        created.apply()
        restored = api.get_function_configuration(FunctionName=name, Qualifier="live")
        assert restored["CodeSha256"] != api.get_function_configuration(FunctionName=name,
                                                                        Qualifier=published)["CodeSha256"]  # fmt: skip
        assert created.plan().empty

        created.write([d for d in created.documents() if d["kind"] != "Function"])
        created.apply()
        with pytest.raises(api.exceptions.ResourceNotFoundException):
            api.get_alias(FunctionName=name, Name="live")
        assert created.plan().empty


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (make install needs it too)")
class TestNodeAdapter:
    """The package kliv uploads, run by Node 20 on recorded API Gateway v2 events."""

    def _run(self, tmp_path: Path, code: str, *events: str, env: dict[str, str] | None = None) -> list[Any]:
        with zipfile.ZipFile(io.BytesIO(lambdas.package(code))) as archive:
            archive.extractall(tmp_path / "package")
        files = [str(ROOT / "tests" / "corpus" / "lambda" / event) for event in events]
        done = subprocess.run(
            ["node", str(ROOT / "tests" / "node" / "lambda_adapter.mjs"), str(tmp_path / "package"), *files],
            capture_output=True, text=True, timeout=60, check=False,
            env={"PATH": "/usr/bin:/bin:/usr/local/bin", "KLIV_ROUTE": "hello", **(env or {})},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    def test_post_with_authorizer_claims(self, tmp_path: Path) -> None:
        [result] = self._run(tmp_path, CODE, "apigw-v2-post.json",
                             env={"CURRENCY": "usd", "SHOP_KEY": "abc", "KLIV_AUTH": "jwt"})  # fmt: skip
        assert result["statusCode"] == 201
        assert result["cookies"] == ["a=1", "b=2"]
        assert result["headers"]["content-type"] == "application/json"
        body = json.loads(result["body"])
        assert body["path"] == "/orders/42"  # what follows /functions/v1/hello
        assert (body["query"], body["method"]) == ("?expand=items&page=2", "POST")
        assert body["body"] == {"order_id": "42", "n": 3}
        assert body["claims"] == {"sub": "6f1b1f6e-8a8e-4a53-9c55-3cdb1d36a1b0", "role": "authenticated",
                                  "iss": "kliv"}  # the authorizer's, not the caller's forged header  # fmt: skip
        assert body["cookie"] == "session=abc; theme=dark"
        assert (body["currency"], body["key"]) == ("usd", 3)

    def test_get_and_failures(self, tmp_path: Path) -> None:
        [refused] = self._run(tmp_path / "jwt", CODE, "apigw-v2-get.json", env={"KLIV_AUTH": "jwt"})
        assert (refused["statusCode"], refused["headers"]["x-kliv-error"]) == (401, "unauthorized")  # no authorizer
        [ok] = self._run(tmp_path / "ok", CODE, "apigw-v2-get.json")
        assert json.loads(ok["body"])["path"] == "/"
        assert json.loads(ok["body"])["claims"] == {}
        throwing = 'export default { fetch(): Response { throw new Error("secret-ish"); } };\n'
        [thrown] = self._run(tmp_path / "throws", throwing, "apigw-v2-get.json")
        assert thrown["statusCode"] == 500
        assert thrown["headers"]["x-kliv-error"] == "function-error"
        assert "secret-ish" not in thrown["body"]
        binary = 'export default { fetch(): Response { return new Response(new Uint8Array([0, 255]), ' \
                 '{ headers: { "content-type": "image/png" } }); } };\n'  # fmt: skip
        [image] = self._run(tmp_path / "binary", binary, "apigw-v2-get.json")
        assert (image["isBase64Encoded"], image["body"]) == (True, "AP8=")
