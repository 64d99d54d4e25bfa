"""The operator's reconcile decisions, on the fake engine: no Postgres, milliseconds each.

Each test scripts what the engine plans (``kliv.stacks.testing.FakeEngine``) and asserts
the statuses every object gets, what the engine was asked, and the events it queued.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kliv.operator import conditions
from kliv.operator.reconciling import (
    ALLOW_DATA_LOSS,
    MANAGEMENT_POLICY,
    PAUSED,
    REQUESTED_BY,
    ProjectResult,
    Reconciler,
)
from kliv.stacks.errors import AlreadyExistsError, ExternalFailedError, MissingValueError, UnavailableError
from kliv.stacks.testing import FakeEngine

NS = "ns"
COLUMNS = [{"name": "id", "type": "uuid", "primaryKey": True}, {"name": "title", "type": "text"}]


def body(kind: str, name: str, spec: dict[str, Any], generation: int = 1, **annotations: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": NS, "generation": generation}
    if annotations:
        metadata["annotations"] = annotations
    if kind != "Project":
        spec = {"projectRef": {"name": "shop"}, **spec}
    return {"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


def shop(**project_annotations: str) -> list[dict[str, Any]]:
    return [
        body("Project", "shop", {}, **project_annotations),
        body("Table", "items", {"columns": COLUMNS}),
        body("TablePolicy", "items-read", {"table": "items", "command": "select", "using": "true"}),
        body("Bucket", "images", {}),
    ]


def reconcile(engine: FakeEngine, bodies: list[dict[str, Any]], reconciler: Reconciler | None = None) -> ProjectResult:
    used = reconciler or Reconciler(engine)

    async def scenario() -> ProjectResult:
        result = await used.reconcile(NS, "shop", bodies)
        await used.recorder.flush()  # the statuses' write runs in the background
        return result

    return asyncio.run(scenario())


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


class TestReconcileDecisions:
    def test_a_safe_plan_is_applied_and_every_object_is_ready_with_its_outputs(self, engine: FakeEngine) -> None:
        engine.change("Table/ns/items", summary="create table items", action="create")
        engine.outputs["Bucket/ns/images"] = {"bucket": "shop-images"}
        result = reconcile(engine, shop(**{REQUESTED_BY: "alice"}))
        assert engine.applies == [("shop", False, "alice")]
        objects = (("Project", "shop"), ("Table", "items"), ("TablePolicy", "items-read"), ("Bucket", "images"))
        for kind, name in objects:
            status = result.status_of(kind, name)
            assert (status.ready.status, status.ready.reason) == ("True", conditions.AVAILABLE)
            assert status.synced.reason == conditions.RECONCILE_SUCCESS
            assert status.retry_in is None
        assert result.status_of("Bucket", "images").outputs == {"bucket": "shop-images"}
        assert ("applied", "Table/ns/items", "alice") in engine.events
        assert not engine.changes  # applied: the next plan is empty

    def test_data_loss_without_consent_is_refused_on_its_object_and_nothing_is_applied(
        self, engine: FakeEngine
    ) -> None:
        engine.change("Table/ns/items", risk="data-loss", summary="drop column title")
        engine.change("TablePolicy/ns/items-read", summary="change using")
        result = reconcile(engine, shop())
        assert engine.applies == []
        assert engine.events == [("refused", "Table/ns/items", "kliv-operator")]
        refused = result.status_of("Table", "items")
        assert refused.ready.reason == conditions.DATA_LOSS_REFUSED
        assert 'cloud.kliv.dev/allow-data-loss: "1"' in refused.ready.message
        assert "drop column title (data-loss)" in refused.ready.message
        assert refused.retry_in is None  # not retried until the spec or the annotation changes
        waiting = result.status_of("TablePolicy", "items-read")
        assert waiting.synced.reason == conditions.DATA_LOSS_REFUSED
        assert "Table/ns/items" in waiting.ready.message

    def test_consent_naming_the_current_generation_applies_with_data_loss_allowed(self, engine: FakeEngine) -> None:
        engine.change("Table/ns/items", risk="data-loss")
        bodies = shop()
        bodies[1] = body("Table", "items", {"columns": COLUMNS}, generation=4, **{ALLOW_DATA_LOSS: "4"})
        result = reconcile(engine, bodies)
        assert engine.applies == [("shop", True, "kliv-operator")]
        assert result.status_of("Table", "items").ready.status == "True"

    def test_consent_for_an_older_generation_is_no_consent(self, engine: FakeEngine) -> None:
        engine.change("Table/ns/items", risk="data-loss")
        bodies = shop()
        bodies[1] = body("Table", "items", {"columns": COLUMNS}, generation=5, **{ALLOW_DATA_LOSS: "4"})
        result = reconcile(engine, bodies)
        assert engine.applies == []
        assert 'allow-data-loss: "5"' in result.status_of("Table", "items").ready.message

    def test_observe_only_applies_nothing_and_reports_drift_per_object(self, engine: FakeEngine) -> None:
        engine.hashes = {}  # never applied: every spec is new, so no drift event
        engine.change("Table/ns/items", risk="data-loss", summary="add column title")
        result = reconcile(engine, shop(**{MANAGEMENT_POLICY: "observe"}))
        assert engine.applies == []
        assert [e for e in engine.events if e[0] == "refused"] == []  # observing refuses nothing
        drifted = result.status_of("Table", "items")
        assert (drifted.synced.status, drifted.synced.reason) == ("False", conditions.DRIFTED)
        assert "add column title" in drifted.synced.message
        matching = result.status_of("TablePolicy", "items-read")
        assert (matching.synced.status, matching.synced.reason) == ("True", conditions.OBSERVE_ONLY)

    def test_drift_of_an_unchanged_spec_is_reported_then_corrected(self, engine: FakeEngine) -> None:
        reconciler = Reconciler(engine)
        reconcile(engine, shop(), reconciler)  # applied once: the specs' hashes are recorded
        engine.change("Table/ns/items", summary="add column title (dropped outside kliv)")
        result = reconcile(engine, shop(), reconciler)
        assert ("drifted", "Table/ns/items", "kliv-operator") in engine.events
        assert reconciler.drifted[(NS, "shop")] == ["Table/ns/items"]
        assert result.status_of("Table", "items").ready.status == "True"
        assert len(engine.applies) == 2

    def test_paused_plans_nothing(self, engine: FakeEngine) -> None:
        result = reconcile(engine, shop(**{PAUSED: "true"}))
        assert engine.plans == []
        assert result.status_of("Table", "items").synced.reason == conditions.PAUSED

    def test_a_failed_bucket_fails_alone_and_is_retried(self, engine: FakeEngine) -> None:
        engine.failures["Bucket/ns/images"] = ExternalFailedError("Bucket/ns/images", "AccessDenied", "fix the policy")
        reconciler = Reconciler(engine)
        result = reconcile(engine, shop(), reconciler)
        failed = result.status_of("Bucket", "images")
        assert failed.ready.status == "False"
        assert failed.retry_in is not None
        assert failed.retry_in > 0
        assert result.status_of("Table", "items").ready.status == "True"
        assert reconciler.attempts[(NS, "shop")] == 1
        assert ("failed", "Bucket/ns/images", "kliv-operator") in engine.events

    def test_an_unplannable_secret_waits_for_its_value_and_the_rest_applies(self, engine: FakeEngine) -> None:
        bodies = [*shop(), body("ProjectSecret", "stripe", {"valueFrom": {"env": "STRIPE_KEY"}})]
        engine.problems["ProjectSecret/ns/stripe"] = MissingValueError("no value for STRIPE_KEY", "set it")
        result = reconcile(engine, bodies)
        waiting = result.status_of("ProjectSecret", "stripe")
        assert waiting.ready.reason == conditions.WAITING_FOR_DEPENDENCY
        assert waiting.retry_in is not None
        assert result.status_of("Table", "items").ready.status == "True"
        assert engine.applies == [("shop", False, "kliv-operator")]

    def test_an_unavailable_server_is_temporary_with_growing_backoff(self, engine: FakeEngine) -> None:
        engine.plan_error = UnavailableError("cannot connect to Postgres", "the next attempt reconnects")
        reconciler = Reconciler(engine)
        delays = [reconcile(engine, shop(), reconciler).status_of("Table", "items").retry_in for _ in range(3)]
        assert delays == [1.0, 2.0, 4.0]
        assert reconcile(engine, shop(), reconciler).status_of("Table", "items").ready.reason == "Unavailable"

    def test_a_database_claimed_by_another_project_is_permanent(self, engine: FakeEngine) -> None:
        engine.plan_error = AlreadyExistsError("database `shop` is already claimed by Project other/shop", "rename")
        status = reconcile(engine, shop()).status_of("Table", "items")
        assert status.ready.reason == conditions.ALREADY_EXISTS
        assert status.retry_in is None

    def test_an_invalid_object_is_reported_and_the_rest_is_reconciled_without_it(self, engine: FakeEngine) -> None:
        bodies = [*shop(), body("TablePolicy", "typo", {"table": "items", "command": "select", "using": "colour = 1"})]
        result = reconcile(engine, bodies)
        assert result.status_of("TablePolicy", "typo").ready.reason == conditions.INVALID_SPEC
        assert "colour" in result.status_of("TablePolicy", "typo").ready.message
        assert result.status_of("Table", "items").ready.status == "True"
        assert engine.applies == [("shop", False, "kliv-operator")]

    def test_a_reference_to_a_table_not_declared_yet_waits(self, engine: FakeEngine) -> None:
        bodies = [*shop(), body("TablePolicy", "early", {"table": "orders", "command": "select", "using": "true"})]
        status = reconcile(engine, bodies).status_of("TablePolicy", "early")
        assert status.ready.reason == conditions.WAITING_FOR_DEPENDENCY
        assert status.retry_in is not None

    def test_a_kind_without_a_provider_is_not_supported_and_blocks_nothing(
        self, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A registered kind no engine applies yet (none today: Function was one until issue 13)."""
        import dataclasses

        from kliv.stacks import registry

        later = dataclasses.replace(registry.BY_NAME["Function"], not_supported="comes later")
        monkeypatch.setitem(registry.BY_NAME, "Function", later)
        monkeypatch.setattr(registry, "SUPPORTED", registry.SUPPORTED - {"Function"})
        function = body("Function", "checkout", {"runtime": "deno", "source": {"inline": "export default {}"}})
        result = reconcile(engine, [*shop(), function])
        assert result.status_of("Function", "checkout").ready.reason == conditions.NOT_SUPPORTED
        assert result.status_of("Table", "items").ready.status == "True"

    def test_objects_without_their_project_wait_for_it(self, engine: FakeEngine) -> None:
        result = reconcile(engine, shop()[1:])
        assert result.status_of("Table", "items").ready.reason == conditions.WAITING_FOR_DEPENDENCY
        assert engine.plans == []

    def test_every_live_object_s_status_is_recorded_for_readers_outside_the_cluster(self, engine: FakeEngine) -> None:
        engine.change("Table/ns/items", risk="data-loss", summary="drop column title")
        bodies = [
            *shop(),
            {
                **body("Bucket", "old", {}),
                "metadata": {"name": "old", "namespace": NS, "deletionTimestamp": "2026-12-01T00:00:00Z"},
            },
        ]
        reconcile(engine, bodies)
        states = {(s.kind, s.name): s for s in engine.statuses["ns/shop"]}
        assert set(states) == {("Project", "shop"), ("Table", "items"), ("TablePolicy", "items-read"),
                               ("Bucket", "images")}  # fmt: skip
        table = states[("Table", "items")]
        assert table.generation == 1
        assert [(c["type"], c["status"], c["reason"]) for c in table.conditions] == [
            ("Ready", "False", conditions.DATA_LOSS_REFUSED), ("Synced", "False", conditions.DATA_LOSS_REFUSED)
        ]  # fmt: skip

    def test_statuses_are_written_newest_only_and_never_unchanged(self, engine: FakeEngine) -> None:
        from kliv.stacks.statuses import ObjectState, failed, ready

        reconciler = Reconciler(engine)
        recorder = reconciler.recorder
        older: list[ObjectState] = [ready("Table", "items", 1, {})]
        newer: list[ObjectState] = [failed("Table", "items", 2, "DataLossRefused", "refused")]

        async def scenario() -> None:
            recorder.record(NS, "shop", older)
            recorder.record(NS, "shop", newer)  # before the first ran: it is overtaken
            await recorder.flush()
            assert recorder.writes == 1
            assert engine.statuses["ns/shop"] == newer
            recorder.record(NS, "shop", list(newer))  # the same statuses again: no write
            await recorder.flush()
            assert recorder.writes == 1
            await reconciler.reconcile(NS, "shop", shop())  # a reconcile's own statuses: written
            await recorder.flush()
            assert recorder.writes == 2

        asyncio.run(scenario())
