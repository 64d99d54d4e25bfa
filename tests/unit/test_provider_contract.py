"""The one provider contract and the kind registry, without Postgres.

``check_provider`` must hold for the fake and must catch a provider that breaks the
contract; the registry must list every kind of the spec language exactly once.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kliv.specs import KINDS, Document, Source, validate_documents
from kliv.specs.projects import ProjectSpecs
from kliv.stacks import registry
from kliv.stacks.buckets.desired import Settings, settings
from kliv.stacks.contract import Observation, Record
from kliv.stacks.plans import Change
from kliv.stacks.testing import FakeProvider, check_provider


def group(*buckets: str) -> ProjectSpecs:
    documents = [{"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Project", "metadata": {"name": "shop"}, "spec": {}}]
    documents += [
        {"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Bucket", "metadata": {"name": name},
         "spec": {"projectRef": {"name": "shop"}, "versioning": True}}
        for name in buckets
    ]  # fmt: skip
    validation = validate_documents([Document(Source("specs.yaml", i), d) for i, d in enumerate(documents)])
    assert not validation.errors
    return validation.specs.projects[("default", "shop")]


class TestCheckProvider:
    def test_the_fake_provider_keeps_the_contract(self) -> None:
        provider = FakeProvider("Bucket")
        check_provider(provider, group("images", "exports"))
        assert provider.reality == {}  # removed again by the check
        assert ("create", "Bucket/default/images") in provider.calls

    def test_a_provider_that_does_not_converge_is_caught(self) -> None:
        class Forgetful(FakeProvider):
            def apply(self, ref: str, change: Change) -> dict[str, str]:
                return {}  # claims success, changes nothing

        with pytest.raises(AssertionError, match="not converged"):
            check_provider(Forgetful("Bucket"), group("images"))

    def test_a_provider_whose_delete_of_an_absent_resource_fails_is_caught(self) -> None:
        class Strict(FakeProvider):
            def apply(self, ref: str, change: Change) -> dict[str, str]:
                if change.action == "delete" and ref not in self.reality:
                    raise KeyError(ref)
                return super().apply(ref, change)

        with pytest.raises(KeyError):
            check_provider(Strict("Bucket"), group("images"))

    def test_a_change_that_is_not_data_is_caught(self) -> None:
        class Closure(FakeProvider):
            def observe(self, group: ProjectSpecs, applied: dict[str, Record]) -> list[Observation]:
                found = super().observe(group, applied)
                for observation in found:
                    observation.change.detail["run"] = lambda: None
                return found

        with pytest.raises(TypeError):
            check_provider(Closure("Bucket"), group("images"))


class TestPlannedChangesAreData:
    def test_bucket_settings_survive_json(self) -> None:
        wanted = settings("default", "shop", group("images").buckets[0].resource)
        data: dict[str, Any] = json.loads(json.dumps(wanted.to_json()))
        assert Settings.from_json(data) == wanted


class TestRegistry:
    def test_every_kind_of_the_language_is_registered_once_with_its_model(self) -> None:
        assert [kind.name for kind in registry.KINDS] == list(dict.fromkeys(kind.name for kind in registry.KINDS))
        assert {kind.name: kind.model for kind in registry.KINDS} == dict(KINDS)

    def test_supported_kinds_are_those_without_a_reason(self) -> None:
        supported = {"Project", "Table", "TablePolicy", "DatabaseFunction", "Trigger", "EmailTemplate", "Bucket",
                     "ProjectSecret", "Function"}  # fmt: skip
        assert supported == registry.SUPPORTED

    def test_without_options_only_templates_are_built(self) -> None:
        wiring = registry.Wiring(None, lambda: None, lambda name: None)  # type: ignore[arg-type,return-value]
        assert [p.kind for p in registry.providers(wiring)] == ["EmailTemplate"]

    def test_a_kind_of_a_ref(self) -> None:
        kind = registry.kind_of("Bucket/default/images")
        assert kind is not None
        assert kind.label == "bucket"
        assert kind.shown is not None
        assert kind.shown({"bucket": "b", "endpoint": "e"}) == "b  e"
        assert registry.kind_of("Nope/default/x") is None


class TestProjectSpecsOfAnyKind:
    def test_a_kind_without_a_list_of_its_own_is_kept_and_found_by_kind(self) -> None:
        from typing import ClassVar

        from kliv.specs import Table
        from kliv.specs.documents import Document
        from kliv.specs.errors import Source
        from kliv.specs.projects import Spec

        class Widget(Table):  # a kind added after ProjectSpecs was written
            KIND: ClassVar[str] = "Widget"

        specs = group("images")
        widget = Widget.model_validate({
            "apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Table", "metadata": {"name": "w"},
            "spec": {"projectRef": {"name": "shop"}, "columns": [{"name": "id", "type": "uuid", "primaryKey": True}]},
        })  # fmt: skip
        specs.add(Spec(widget, Document(Source("w.yaml", 0), {})))
        assert [s.resource.name for s in specs.of_kind("Widget")] == ["w"]
        assert specs.tables == []
        assert "Widget/default/w" in {s.resource.ref for s in specs}
        assert [s.resource.name for s in specs.of_kind("Bucket")] == ["images"]


class TestErrorCodes:
    def test_every_engine_error_has_its_documented_code(self) -> None:
        from kliv.stacks import errors

        codes = {
            errors.EngineError: "engine-error", errors.UnavailableError: "unavailable",
            errors.ConflictError: "conflict", errors.AlreadyExistsError: "already-exists",
            errors.RefusedError: "data-loss", errors.ApplyFailedError: "apply-failed",
            errors.PlanRefusedError: "plan-refused", errors.ExternalFailedError: "external-failed",
            errors.MissingValueError: "missing-value", errors.SourceRefusedError: "source-refused",
            errors.InvalidSourceError: "invalid-source",
        }  # fmt: skip
        assert {cls: cls.code for cls in codes} == codes
        found = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.EngineError)]
        assert set(found) == set(codes) | {errors.StoredPlanError}
        assert errors.StoredPlanError("plan-expired", "m", "h").code == "plan-expired"
