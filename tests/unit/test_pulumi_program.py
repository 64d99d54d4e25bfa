"""The Pulumi engine's program and its preview translation, without the Pulumi CLI.

The program runs under ``pulumi.runtime.set_mocks`` with a monitor that records every
registration as the engine would receive it (:mod:`kliv.stacks.pulumi.testing`); the
translation of preview events is checked on streams written by hand and on the streams
the programs imply, against the native engine's golden plans (tests/golden/): the same
resources, actions and risks (steps may differ).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import dill
import pytest

from kliv.specs import ProjectSpecs
from kliv.specs.loading import load
from kliv.stacks.plans import Change, Plan
from kliv.stacks.pulumi import dynamic
from kliv.stacks.pulumi.declaring import DYNAMIC, Backends, Program, declare
from kliv.stacks.pulumi.previewing import translate
from kliv.stacks.pulumi.program import Connection
from kliv.stacks.pulumi.testing import Registered, implied_events, register

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
sys.path.insert(0, str(ROOT / "benchmarks"))
from generate import write_project  # noqa: E402

PASSWORD = "canary-pg-password-7f3a"
CONNECTION = Connection(
    host="127.0.0.1", port=5432, username="postgres", password=PASSWORD,
    admin_url=f"postgresql://postgres:{PASSWORD}@127.0.0.1/postgres",
    options={"secret_key": "canary-kliv-key-91c2"},
    secret_values={"ProjectSecret/default/stripe-key": "canary-value-5d1e"},
)  # fmt: skip
EXAMPLES = ["blog", "saas", "storefront", "generated-100"]


def _group(folder: Path) -> ProjectSpecs:
    validation = load([folder])
    assert not validation.errors, validation.errors
    (group,) = validation.specs.projects.values()
    return group


def _folder(example: str, tmp_path: Path) -> Path:
    if example == "generated-100":
        return write_project(tmp_path / "generated", 100)
    return ROOT / "examples" / example


def _golden(name: str, namespace: str) -> list[tuple[str, str, str]]:
    plans = json.loads((GOLDEN / name).read_text())["plans"]
    return [
        (c["resource"].replace("NAMESPACE", namespace), c["action"], c["risk"]) for p in plans for c in p["changes"]
    ]


def _blog_deleting_comments(tmp_path: Path) -> Path:
    """examples/blog with Table comments at deletionPolicy Delete."""
    folder = tmp_path / "blog"
    folder.mkdir()
    for file in (ROOT / "examples" / "blog").iterdir():
        text = file.read_text()
        if file.name == "tables.yaml":
            text = text.replace("  name: comments\nspec:\n", "  name: comments\nspec:\n  deletionPolicy: Delete\n", 1)
        (folder / file.name).write_text(text)
    return folder


def _triples(plan: Plan) -> list[tuple[str, str, str]]:
    return [(c.resource, c.action, c.risk) for c in plan.changes if c.action != "noop"]


class TestProgram:
    @pytest.mark.parametrize("example", EXAMPLES)
    def test_the_graph_registers_as_declared(self, example: str, tmp_path: Path) -> None:
        group = _group(_folder(example, tmp_path))
        program = declare(group, {})
        registered = register(program, CONNECTION)
        # Registered as their inputs resolve (the order Pulumi chooses), each once.
        assert sorted((r.type, r.name) for r in registered) == sorted((d.type, d.name) for d in program.resources)
        urns = {r.name: r.urn for r in registered}
        found_by_name = {r.name: r for r in registered}
        for declared in program.resources:
            found = found_by_name[declared.name]
            assert found.protect == declared.protect, declared.name
            assert found.retain_on_delete == declared.retain_on_delete, declared.name
            assert set(found.dependencies) == {urns[n] for n in declared.depends_on}, declared.name
            assert found.secret_inputs >= set(declared.secrets), declared.name
            if declared.dynamic:  # its outputs keep the connection, for Delete
                assert found.secret_outputs == {"connection"}, declared.name
            if declared.provider:  # explicit providers only
                assert found.provider.startswith(urns[declared.provider] + "::"), declared.name
            else:
                assert found.type.startswith("pulumi:providers:"), declared.name

    @pytest.mark.parametrize("example", EXAMPLES)
    def test_no_secret_in_the_program_and_every_secret_input_marked(self, example: str, tmp_path: Path) -> None:
        program = declare(_group(_folder(example, tmp_path)), {})
        text = json.dumps([d.inputs for d in program.resources])
        for canary in ("canary-pg-password", "canary-kliv-key", "canary-value"):
            assert canary not in text
        registered = register(program, CONNECTION)
        for found in registered:
            for key, value in found.inputs.items():
                if any(c in json.dumps(value, default=str) for c in ("canary-pg-password", "canary-kliv-key",
                                                                     "canary-value")):  # fmt: skip
                    assert key in found.secret_inputs, (found.name, key)

    @pytest.mark.parametrize("example", EXAMPLES)
    def test_every_dynamic_resource_is_made_from_its_own_inputs(self, example: str, tmp_path: Path) -> None:
        """What the dynamic-provider process validates and plans from: its Project's part and its own
        document only (so one spec's change changes one resource's inputs)."""
        from kliv.stacks.pulumi.converging import group_of

        program = declare(_group(_folder(example, tmp_path)), {})
        for declared in program.resources:
            if declared.dynamic:
                group = group_of(declared.inputs["documents"])
                assert declared.ref in {spec.resource.ref for spec in group}, declared.name
                assert len(declared.inputs["documents"]) <= 2

    def test_options_follow_the_specs(self) -> None:
        program = declare(_group(ROOT / "examples" / "blog"), {})
        by_name = program.by_name()
        database = by_name["Project:blog:database"]
        assert (database.protect, database.stateful, database.provider) == (True, True, "postgresql")
        for table in ("posts", "comments", "profiles"):
            declared = by_name[f"Table:{table}"]
            assert (declared.protect, declared.retain_on_delete) == (True, True)  # Retain: the default
            assert "Project:blog:bootstrap" in declared.depends_on
        assert "Table:posts" in by_name["Table:comments"].depends_on  # comments.post_id references posts
        assert by_name["TablePolicy:posts-public-read"].depends_on == ("Project:blog:bootstrap", "Table:posts")
        assert not by_name["TablePolicy:posts-public-read"].protect

    def test_composite_and_auth_users_keys_order_the_tables(self, tmp_path: Path) -> None:
        """A composite key's target is created first; `auth.users` is the bootstrap's, not a Table."""
        (tmp_path / "specs.yaml").write_text(
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Project\nmetadata: {name: team}\n---\n"
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Table\nmetadata: {name: memberships}\nspec:\n"
            "  projectRef: {name: team}\n  columns:\n    - {name: team, type: text, primaryKey: true}\n"
            "    - {name: member, type: uuid, primaryKey: true, references: {table: auth.users}}\n---\n"
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Table\nmetadata: {name: bookings}\nspec:\n"
            "  projectRef: {name: team}\n  columns:\n    - {name: id, type: bigint, primaryKey: true}\n"
            "    - {name: team, type: text}\n    - {name: member, type: uuid}\n"
            "  foreignKeys: [{columns: [team, member], references: {table: memberships, columns: [team, member]}}]\n"
        )
        by_name = declare(_group(tmp_path), {}).by_name()
        assert by_name["Table:bookings"].depends_on == ("Project:team:bootstrap", "Table:memberships")
        assert by_name["Table:memberships"].depends_on == ("Project:team:bootstrap",)

    def test_deletion_policy_delete_is_not_retained(self, tmp_path: Path) -> None:
        declared = declare(_group(_blog_deleting_comments(tmp_path)), {}).by_name()["Table:comments"]
        assert (declared.protect, declared.retain_on_delete) == (True, False)

    def test_aws_backends_use_pulumi_aws(self) -> None:
        group = _group(ROOT / "examples" / "storefront")
        program = declare(group, {}, Backends(buckets="aws", secrets="aws", functions="aws", lambda_role="arn:role"))
        types = {d.type for d in program.resources}
        assert {"pulumi:providers:aws", "aws:s3/bucketV2:BucketV2", "aws:secretsmanager/secret:Secret",
                "aws:secretsmanager/secretVersion:SecretVersion", "aws:lambda/function:Function"} <= types  # fmt: skip
        assert not any(t in types for t in (f"{DYNAMIC}Bucket", f"{DYNAMIC}ProjectSecret", f"{DYNAMIC}Function"))
        registered = {r.name: r for r in register(program, CONNECTION)}
        value = registered["ProjectSecret:stripe-key:value"]
        assert "secretString" in value.secret_inputs
        assert "source" not in value.inputs
        function = registered["Function:checkout"]
        assert function.inputs["runtime"] == "nodejs20.x"
        assert function.inputs["role"] == "arn:role"
        assert "environment" in function.secret_inputs  # it holds the secrets' values
        variables = function.inputs["environment"]["value"]["variables"]  # as sent: wrapped as a secret
        assert (variables["KLIV_ROUTE"], variables["KLIV_AUTH"]) == ("checkout", "jwt")
        assert set(function.inputs["code"].assets) == {"index.mjs", "function.mjs"}  # the zip's two files
        module = function.inputs["code"].assets["function.mjs"].text
        assert "fetch" in module
        assert ": Request" not in module  # transpiled: the TypeScript annotations are gone
        assert not {"source", "variables", "secretNames", "specHash"} & set(function.inputs)  # not Lambda's inputs

    def test_dynamic_providers_are_pickled_by_reference(self) -> None:
        registered: list[Registered] = register(declare(_group(ROOT / "examples" / "blog"), {}), CONNECTION)
        table = next(r for r in registered if r.type == f"{DYNAMIC}Table")
        pickled = base64.b64decode(table.inputs["__provider"])
        assert len(pickled) < 200  # a module path, not code
        assert b"kliv.stacks.pulumi.dynamic" in pickled
        assert type(dill.loads(pickled)) is dynamic.TableProvider
        assert vars(dill.loads(pickled)) == {}  # stateless: no attribute to carry a connection


class TestConformance:
    """The program covers exactly the native plan's resources; the translation of the preview it
    implies gives the native plan's resources, actions and risks."""

    @pytest.mark.parametrize("example", EXAMPLES)
    def test_creates_from_empty_match_the_native_plan(self, example: str, tmp_path: Path) -> None:
        group = _group(_folder(example, tmp_path))
        program = declare(group, {})
        golden = _golden(f"{example}.plan.json", group.namespace)
        assert sorted(program.refs()) == sorted(ref for ref, _, _ in golden)
        plan = translate(implied_events(program), program, Plan(group.project.resource.ref), group.namespace)
        assert sorted(_triples(plan)) == sorted(golden)

    def test_a_refused_evolution_matches_the_native_plan(self, tmp_path: Path) -> None:
        """The golden refusal: drop a column of posts, drop table comments (deletionPolicy Delete)."""
        group = _group(_blog_deleting_comments(tmp_path))
        comments = next(t for t in group.tables if t.resource.name == "comments")
        before = declare(group, {})
        group.tables.remove(comments)
        group.policies = [p for p in group.policies if p.resource.spec.table != "comments"]
        after = declare(group, {})
        golden = _golden("blog.refused.json", group.namespace)
        # What only the native differ knows: dropping a column loses data (an `update` to Pulumi).
        native = Plan("p", [Change(r, a, k, [], []) for r, a, k in golden if r.endswith("/posts")])  # type: ignore[arg-type]
        events = implied_events(after, before, updated=frozenset({"Table:posts"}))
        plan = translate(events, after, native, group.namespace)
        assert sorted(_triples(plan)) == sorted(golden)
        assert {c.resource for c in plan.refused(allow_data_loss=False)} == {
            f"Table/{group.namespace}/posts", f"Table/{group.namespace}/comments"}  # fmt: skip

    def test_removing_a_retained_table_forgets_it(self) -> None:
        group = _group(ROOT / "examples" / "blog")
        before = declare(group, {})
        group.tables = [t for t in group.tables if t.resource.name != "comments"]
        group.policies = [p for p in group.policies if p.resource.spec.table != "comments"]
        after = declare(group, {})
        plan = translate(implied_events(after, before), after, Plan("p"), group.namespace)
        change = next(c for c in plan.changes if c.resource.endswith("Table/default/comments"))
        assert (change.action, change.risk) == ("delete", "safe")


def _event(op: str, name: str, type_: str = f"{DYNAMIC}Table", **state: Any) -> dict[str, Any]:
    urn = f"urn:pulumi:ns.p::kliv::{type_}::{name}"
    return {"resourcePreEvent": {"metadata": {"op": op, "urn": urn, "type": type_, "old": state}}}


def _summary(**counts: int) -> dict[str, Any]:
    return {"summaryEvent": {"resourceChanges": counts}}


PROGRAM = Program("ns.p", ())


class TestTranslation:
    """Event streams in the engine's JSON format, written as the engine writes them."""

    def _plan(self, *events: dict[str, Any], native: Plan | None = None) -> list[tuple[str, str, str]]:
        return _triples(translate(list(events), PROGRAM, native or Plan("Project/ns/p"), "ns"))

    def test_create_update_and_same(self) -> None:
        assert self._plan(_event("create", "Table:a"), _event("update", "TablePolicy:r", f"{DYNAMIC}TablePolicy"),
                          _event("same", "Table:b"), _summary(create=1, update=1, same=1)) == [
            ("Table/ns/a", "create", "safe"), ("TablePolicy/ns/r", "update", "safe")]  # fmt: skip

    def test_replace_of_a_stateful_resource_is_data_loss_in_either_order(self) -> None:
        create_first = [_event("create-replacement", "Table:a"), _event("replace", "Table:a"),
                        _event("delete-replaced", "Table:a")]  # fmt: skip
        delete_first = [_event("delete-replaced", "Table:a"), _event("replace", "Table:a"),
                        _event("create-replacement", "Table:a")]  # fmt: skip
        for stream in (create_first, delete_first):
            assert self._plan(*stream, _summary(replace=1)) == [("Table/ns/a", "update", "data-loss")]

    def test_replace_of_a_stateless_resource_is_safe(self) -> None:
        assert self._plan(_event("replace", "TablePolicy:r", f"{DYNAMIC}TablePolicy"), _summary(replace=1)) == [
            ("TablePolicy/ns/r", "update", "safe")]  # fmt: skip

    def test_delete_of_protected_and_retained(self) -> None:
        assert self._plan(_event("delete", "Table:a", protect=True), _summary(delete=1)) == [
            ("Table/ns/a", "delete", "data-loss")]  # fmt: skip
        assert self._plan(_event("delete", "Table:a", protect=True, retainOnDelete=True), _summary(delete=1)) == [
            ("Table/ns/a", "delete", "safe")]  # fmt: skip

    def test_an_unknown_op_is_refused_not_dropped(self) -> None:
        plan = self._plan(_event("teleport", "Table:a"), _summary(teleport=1))
        assert ("Table/ns/a", "update", "destructive") in plan

    def test_a_summary_the_events_do_not_account_for_is_refused(self) -> None:
        """The Python SDK drops events of op types it cannot parse: the summary still counts them."""
        plan = translate([_event("create", "Table:a"), _summary(create=1, delete=2)], PROGRAM, Plan("Project/ns/p"),
                         "ns")  # fmt: skip
        refused = plan.refused(allow_data_loss=False)
        assert [c.resource for c in refused] == ["Project/ns/p"]
        assert "summary counts 2 `delete`" in refused[0].summary[0]

    def test_protected_resources_the_program_dropped_are_deleted_by_the_engine(self) -> None:
        """Pulumi refuses to preview the delete of a protected resource: the engine excludes them and
        adds their deletes from the state's flags; an allowed plan unprotects exactly those and the
        protected resources it replaces."""
        from kliv.stacks.pulumi.previewing import held_deletes, protected

        kept = declare(_group(ROOT / "examples" / "blog"), {})
        urn = "urn:pulumi:default.blog::kliv::pulumi-python:dynamic/kliv:Table::Table:gone"
        state = [{"urn": "urn:pulumi:default.blog::kliv::pulumi:pulumi:Stack::kliv-default.blog"},
                 {"urn": urn, "type": f"{DYNAMIC}Table", "protect": True, "retainOnDelete": False},
                 {"urn": kept.resources[5].urn("default.blog"), "type": kept.resources[5].type, "protect": True},
                 {"urn": urn.replace("Table:gone", "Table:loose"), "type": f"{DYNAMIC}Table"}]  # fmt: skip
        held, events = held_deletes(state, kept)
        assert held == [urn]
        plan = translate([*events, _event("replace", "Table:b", protect=True), _event("update", "Table:c",
                                                                                      protect=True)],
                         PROGRAM, Plan("Project/ns/p"), "ns")  # fmt: skip
        assert ("Table/ns/gone", "delete", "data-loss") in _triples(plan)
        assert protected([*events, _event("replace", "Table:b", protect=True),
                          _event("update", "Table:c", protect=True)]) == [urn, "urn:pulumi:ns.p::kliv::"
                                                                                f"{DYNAMIC}Table::Table:b"]  # fmt: skip

    def test_native_steps_and_risk_where_the_native_plan_has_the_change(self) -> None:
        native = Plan("Project/ns/p", [Change("Table/ns/a", "update", "data-loss", ["drop column x"], [])])
        plan = translate([_event("update", "Table:a"), _summary(update=1)], PROGRAM, native, "ns")
        (change,) = plan.changes
        assert (change.action, change.risk, change.summary) == ("update", "data-loss", ["drop column x"])


class TestDocs:
    def test_the_pinned_versions_are_the_installed_sdks(self) -> None:
        """docs/pulumi.md and the operator image pin the CLI and plugins to the SDKs kliv installs."""
        from kliv.stacks.pulumi.engine import versions

        found = versions()
        docs = (ROOT / "docs" / "pulumi.md").read_text()
        image = (ROOT / "deploy" / "pulumi.Dockerfile").read_text()
        for text in (docs, image):
            assert f"pulumi-v{found['pulumi']}-linux-x64.tar.gz" in text
            assert f"pulumi-resource-postgresql-v{found['pulumi-postgresql']}-linux-amd64.tar.gz" in text
        assert f"pulumi plugin install resource aws {found['pulumi-aws']}" in docs
        assert f"pulumi-resource-aws-v{found['pulumi-aws']}-linux-amd64.tar.gz" in image
        assert f"ARG PULUMI_VERSION={found['pulumi']}" in image


class TestEngineInputs:
    """What the engine hands the program and the dynamic providers (no CLI, no server needed)."""

    def _engine(self, url: str, values: Any) -> Any:
        from kliv.stacks.providers import ProviderOptions
        from kliv.stacks.pulumi.engine import PulumiEngine

        options = ProviderOptions(buckets_dir=Path("/nonexistent"), secret_values=values, secret_key="k" * 44)
        return PulumiEngine(url, options, backend="file:///nonexistent", command=object())

    def test_secret_values_come_from_the_engines_source_never_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """In the operator the source is Kubernetes Secrets: the operator's own environment is never read."""
        from kliv.stacks.pulumi import converging

        monkeypatch.setenv("STRIPE_KEY", "from-the-operators-environment")
        group = _group(ROOT / "examples" / "storefront")
        engine = self._engine("postgresql://kliv:pw@db.example:6432/postgres?sslmode=verify-full",
                              lambda secret: f"from-the-cluster:{secret.name}")  # fmt: skip
        try:
            connection = engine.connection(group)
        finally:
            engine.close()
        assert connection.secret_values == {
            f"ProjectSecret/{group.namespace}/stripe-key": "from-the-cluster:stripe-key"
        }
        assert (connection.host, connection.port, connection.sslmode) == ("db.example", 6432, "verify-full")
        assert "k" * 44 not in json.dumps(dict(connection.options))  # keys go through the environment
        secret = next(s.resource for s in group.secrets if s.resource.name == "stripe-key")
        options = converging.options_of({"url": connection.admin_url, "options": dict(connection.options)})
        assert options.secret_values(secret) is None  # the provider process: never the environment's value
        given = converging.options_of({"url": connection.admin_url, "options": {}}, "from-the-cluster:stripe-key")
        assert given.secret_values(secret) == "from-the-cluster:stripe-key"

    def test_the_clis_environment(self) -> None:
        """The passphrase is an HMAC of the key; the dynamic providers get the key and kliv's Python."""
        import sys

        from kliv.stacks.pulumi.engine import passphrase

        engine = self._engine("postgresql://postgres@127.0.0.1/postgres", lambda secret: None)
        try:
            env = engine.cli_environment()
        finally:
            engine.close()
        assert env["PULUMI_PYTHON_CMD"] == sys.executable
        assert env["PULUMI_CONFIG_PASSPHRASE"] == passphrase("k" * 44)
        assert env["KLIV_SECRET_KEY"] == "k" * 44  # for the dynamic providers (never in inputs: above)
        assert passphrase("k" * 44) != "k" * 44
        assert passphrase("k" * 44) == passphrase("k" * 44)
        assert passphrase("k" * 44) != passphrase("j" * 44)


class TestForgetting:
    def test_what_the_native_engine_forgets_is_forgotten_in_the_state_not_deleted(self) -> None:
        from kliv.stacks.pulumi.previewing import acting_steps, forgotten

        native = Plan("Project/ns/p", [Change("Table/ns/a", "delete", "safe", ["forget table a"], [])])
        events = [_event("delete", "Table:a", protect=True), _event("same", "Table:b"), _summary(delete=1)]
        plan = translate(events, PROGRAM, native, "ns")
        (change,) = plan.changes
        assert (change.action, change.risk, change.steps) == ("delete", "safe", [])
        assert "forget Table:a in the stack's state" in change.summary[-1]
        assert forgotten(events, native, "ns") == ["urn:pulumi:ns.p::kliv::pulumi-python:dynamic/kliv:Table::Table:a"]
        retained = [_event("delete", "Table:a", protect=True, retainOnDelete=True)]
        assert forgotten(retained, native, "ns") == []  # Pulumi's delete of it only forgets it already
        assert acting_steps(events) == [("urn:pulumi:ns.p::kliv::pulumi-python:dynamic/kliv:Table::Table:a",
                                         "delete")]  # fmt: skip

    def test_an_unattributed_change_is_marked_for_refusal(self) -> None:
        from kliv.stacks.pulumi.previewing import UNATTRIBUTED

        plan = translate([_event("teleport", "Table:a")], PROGRAM, Plan("Project/ns/p"), "ns")
        assert [c.resource for c in plan.changes if c.detail.get(UNATTRIBUTED)] == ["Project/ns/p"]
