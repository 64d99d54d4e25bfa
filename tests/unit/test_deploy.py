"""deploy/: the kustomization points at real files, RBAC covers every kind, and grants nothing unused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kliv.specs import KINDS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


class TestDeploy:
    """The manifests a cluster admin applies with `kubectl apply -k deploy/`."""

    def test_kustomization_resources_exist(self) -> None:
        """Every resource of the kustomization is a file of the repository, every CRD included."""
        kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
        for resource in kustomization["resources"]:
            assert (DEPLOY / resource).is_file(), resource
        crds = {r for r in kustomization["resources"] if r.startswith("../crds/")}
        assert len(crds) == len(KINDS)

    def test_rbac_covers_every_kind_with_least_privilege(self) -> None:
        """get/list/watch/patch on every kind, patch on every status, create on events; no create/delete of ours."""
        role = next(d for d in yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()) if d["kind"] == "ClusterRole")
        rules = role["rules"]
        plurals = {model.PLURAL for model in KINDS.values()}
        main = next(r for r in rules if "projects" in r["resources"])
        assert set(main["resources"]) == plurals
        assert set(main["verbs"]) == {"get", "list", "watch", "patch"}
        status = next(r for r in rules if "projects/status" in r["resources"])
        assert set(status["resources"]) == {f"{p}/status" for p in plurals}
        assert status["verbs"] == ["patch"]
        assert all("delete" not in r["verbs"] and "*" not in r["verbs"] for r in rules)
        peering = next(r for r in rules if "clusterkopfpeerings" in r["resources"])
        assert set(peering["verbs"]) == {"list", "watch", "patch"}
        secrets = next(r for r in rules if "secrets" in r["resources"])
        assert (secrets["apiGroups"], set(secrets["verbs"])) == ([""], {"list", "watch"})

    def test_peering_object_matches_the_deployment(self) -> None:
        """The ClusterKopfPeering the replicas use exists, under the name passed to --peering."""
        documents = list(yaml.safe_load_all((DEPLOY / "peering.yaml").read_text()))
        [peering] = [d for d in documents if d["kind"] == "ClusterKopfPeering"]
        deployment = next(
            d for d in yaml.safe_load_all((DEPLOY / "deployment.yaml").read_text()) if d["kind"] == "Deployment"
        )
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--peering") + 1] == peering["metadata"]["name"]
        assert deployment["spec"]["replicas"] >= 2

    def test_deployment_probes_and_security(self) -> None:
        """The operator runs as non-root with probes on its liveness endpoint and serves metrics."""
        deployment = next(
            d for d in yaml.safe_load_all((DEPLOY / "deployment.yaml").read_text()) if d["kind"] == "Deployment"
        )
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == [
            "--liveness",
            "http://0.0.0.0:8080/healthz",
            "--metrics-port",
            "9090",
            "--peering",
            "kliv",
        ]
        assert {p["containerPort"] for p in container["ports"]} == {8080, 9090, 9443}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert (DEPLOY / "argocd-health.lua").read_text().count("hs.status") >= 4

    def test_webhook_reaches_the_operators_admission_handler(self) -> None:
        """ValidatingWebhookConfiguration -> Service -> container port -> `kliv operator`'s default
        --webhook-port, at the path of the handler make_registry registers, for every kind;
        the certificate's Secret is the one mounted where KLIV_WEBHOOK_CERT/KEY point."""
        import inspect

        import kopf

        from kliv.cli import operator
        from kliv.operator.handlers import ADMISSION_PATH, make_registry

        documents = list(yaml.safe_load_all((DEPLOY / "webhook.yaml").read_text()))
        [configuration] = [d for d in documents if d["kind"] == "ValidatingWebhookConfiguration"]
        [service] = [d for d in documents if d["kind"] == "Service"]
        [certificate] = [d for d in documents if d["kind"] == "Certificate"]
        [webhook] = configuration["webhooks"]
        client = webhook["clientConfig"]["service"]
        assert (client["name"], client["path"]) == (service["metadata"]["name"], f"/{ADMISSION_PATH}")
        assert set(webhook["rules"][0]["resources"]) == {model.PLURAL for model in KINDS.values()}
        assert webhook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert webhook["failurePolicy"] == "Fail"
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert f"{service['metadata']['name']}.kliv-system.svc" in certificate["spec"]["dnsNames"]

        deployment = next(
            d for d in yaml.safe_load_all((DEPLOY / "deployment.yaml").read_text()) if d["kind"] == "Deployment"
        )
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        [target] = [p for p in service["spec"]["ports"] if p["port"] == client["port"]]
        [port] = [p for p in container["ports"] if p["name"] == target["targetPort"]]
        default_port = inspect.signature(operator).parameters["webhook_port"].default
        assert port["containerPort"] == default_port
        env = {e["name"]: e.get("value") for e in container["env"]}
        [mount] = container["volumeMounts"]
        assert env["KLIV_WEBHOOK_CERT"] == f"{mount['mountPath']}/tls.crt"
        assert env["KLIV_WEBHOOK_KEY"] == f"{mount['mountPath']}/tls.key"
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]

        class Engine:
            providers = ()

        registry, _ = make_registry(Engine(), webhook=kopf.WebhookServer())  # type: ignore[arg-type]
        assert [h.id for h in registry._webhooks.get_all_handlers()] == [ADMISSION_PATH]
        without, _ = make_registry(Engine())  # type: ignore[arg-type]
        assert list(without._webhooks.get_all_handlers()) == []  # no certificate: no webhook

    def test_deployment_relays_events(self) -> None:
        """The relay runs inside the operator when KLIV_AMQP_URL is set: the Deployment passes it."""
        deployment = next(
            d for d in yaml.safe_load_all((DEPLOY / "deployment.yaml").read_text()) if d["kind"] == "Deployment"
        )
        names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "KLIV_AMQP_URL" in names


class TestServeManifest:
    """deploy/serve.yaml runs the real `kliv serve` command, probed where the app answers."""

    def test_serve_deployment_and_service(self) -> None:
        import typer

        from kliv.cli import app
        from kliv.serving.app import build

        documents = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "serve.yaml").read_text())}
        container = documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        command = container["command"]
        assert command[:2] == ["kliv", "serve"]
        click_command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
        parsed = click_command.make_context("serve", list(command[2:]))
        assert (parsed.params["host"], parsed.params["port"]) == ("0.0.0.0", 54321)
        [port] = container["ports"]
        [service_port] = documents["Service"]["spec"]["ports"]
        assert service_port["targetPort"] == port["name"]
        assert documents["Service"]["spec"]["selector"] == documents["Deployment"]["spec"]["selector"]["matchLabels"]
        served, _ = build("postgresql://nobody@127.0.0.1:1/x", None)
        paths = {route.path for route in served.routes}  # type: ignore[attr-defined]
        assert container["livenessProbe"]["httpGet"]["path"] in paths
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert documents["Deployment"]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}  # function folders
        assert "serve.yaml" in (DEPLOY / "kustomization.yaml").read_text()
        operator = next(
            d for d in yaml.safe_load_all((DEPLOY / "deployment.yaml").read_text()) if d["kind"] == "Deployment"
        )
        env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["KLIV_API_URL"] == f"http://kliv-serve.kliv-system.svc:{service_port['port']}"


class TestKindListsFollowTheRegistry:
    """`kliv crds` keeps the RBAC and admission kind lists in step with the spec language's kinds."""

    def test_the_manifests_are_up_to_date(self) -> None:
        from kliv.specs.crds import DEPLOY_FILES, kind_lists

        for name in DEPLOY_FILES:
            text = (DEPLOY / name).read_text()
            assert "# kliv crds: kinds" in text
            assert kind_lists(text) == text, f"deploy/{name}: run `kliv crds --out crds`"

    def test_a_new_kind_joins_every_list(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        from typing import ClassVar

        from kliv.specs import Table, crds
        from kliv.specs.crds import DEPLOY_FILES, write_deploy

        class Widget(Table):
            KIND: ClassVar[str] = "Widget"
            PLURAL: ClassVar[str] = "widgets"

        monkeypatch.setattr(crds, "KINDS", {**crds.KINDS, "Widget": Widget})
        for name in DEPLOY_FILES:
            (tmp_path / name).write_text((DEPLOY / name).read_text())
        assert len(write_deploy(tmp_path)) == 2
        rbac = yaml.safe_load_all((tmp_path / "rbac.yaml").read_text())
        rules = next(d for d in rbac if d and d["kind"] == "ClusterRole")["rules"]
        assert "widgets" in rules[0]["resources"]
        assert "widgets/status" in rules[1]["resources"]
        webhook = [d for d in yaml.safe_load_all((tmp_path / "webhook.yaml").read_text()) if d]
        configuration = next(d for d in webhook if d["kind"] == "ValidatingWebhookConfiguration")
        assert "widgets" in configuration["webhooks"][0]["rules"][0]["resources"]
