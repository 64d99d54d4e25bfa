"""The generated CustomResourceDefinitions: fresh and structural.

- :class:`TestFreshGeneration`: the committed ``crds/`` folder equals what ``kliv crds`` writes now.
- :class:`TestStructuralSchema`: every CRD schema is *structural* as the API server demands, checked
  by :func:`crd_schemas.structural_problems`, a re-implementation of the Kubernetes rules that matter here.

The CEL rules are tested in ``test_crd_cel_rules.py``.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import pytest
from crd_schemas import (
    COMMITTED,
    CRDS,
    GROUP,
    KINDS,
    REGENERATE,
    KnownBugError,
    root_schema,
    structural_problems,
)
from typer.testing import CliRunner

from kliv.cli import app

# -- tests -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder freshly written by `kliv crds --out <folder>` (in-process)."""
    out = tmp_path_factory.mktemp("crds")
    result = CliRunner().invoke(app, ["crds", "--out", str(out)])
    assert result.exit_code == 0, f"`kliv crds` failed:\n{result.output}\n{result.exception!r}"
    return out


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


COMMITTED_FILES = sorted(_files(COMMITTED))


class TestFreshGeneration:
    """`crds/` equals a fresh generation."""

    def test_committed_folder_has_generated_files(self) -> None:
        """The committed folder holds a CRD and a JSON Schema per kind."""
        expected = {f"{GROUP}_{crd['spec']['names']['plural']}.yaml" for crd in CRDS.values()}
        expected |= {f"schemas/{kind}.json" for kind in KINDS}
        assert expected <= set(COMMITTED_FILES), f"crds/ lacks {sorted(expected - set(COMMITTED_FILES))}: {REGENERATE}"

    def test_same_files(self, fresh: Path) -> None:
        """No file is missing from or extra in the committed folder."""
        committed, generated = _files(COMMITTED), _files(fresh)
        assert committed == generated, (
            f"crds/ is stale: missing {sorted(generated - committed)}, extra {sorted(committed - generated)}; "
            f"{REGENERATE}"
        )

    @pytest.mark.parametrize("relative", COMMITTED_FILES)
    def test_file_is_identical(self, fresh: Path, relative: str) -> None:
        """The committed file is byte-for-byte the generated one."""
        generated = fresh / relative
        assert generated.is_file(), f"crds/{relative} is no longer generated: {REGENERATE}"
        committed_bytes, generated_bytes = (COMMITTED / relative).read_bytes(), generated.read_bytes()
        if committed_bytes != generated_bytes:
            diff = difflib.unified_diff(
                committed_bytes.decode(errors="replace").splitlines(),
                generated_bytes.decode(errors="replace").splitlines(),
                f"crds/{relative} (committed)",
                f"crds/{relative} (generated)",
                lineterm="",
            )
            excerpt = "\n".join(list(diff)[:60])
            pytest.fail(f"crds/{relative} differs from a fresh generation: {REGENERATE}\n{excerpt}")


# Kind -> (path prefix of the known problems, reason); every other problem still fails the test.
KNOWN_NON_STRUCTURAL: dict[str, tuple[str, str]] = {}


def _structural_params() -> list[Any]:
    params = []
    for kind in KINDS:
        marks = []
        if kind in KNOWN_NON_STRUCTURAL:
            marks.append(pytest.mark.xfail(strict=True, raises=KnownBugError, reason=KNOWN_NON_STRUCTURAL[kind][1]))
        params.append(pytest.param(kind, marks=marks, id=kind))
    return params


NON_STRUCTURAL = {
    "untyped-property": (
        {"type": "object", "properties": {"spec": {"description": "no type"}}},
        ".spec: type is missing",
    ),
    "untyped-items": ({"type": "array", "items": {"description": "x"}}, "[*]: type is missing"),
    "untyped-root": ({"properties": {"a": {"type": "string"}}}, ": type is missing"),
    "properties-with-additionalProperties": (
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}},
        "mutually exclusive",
    ),
    "ref": ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}, "$ref is not supported"),
    "defs": ({"type": "object", "$defs": {"A": {"type": "string"}}}, "$defs is not supported"),
    "definitions": ({"type": "object", "definitions": {"A": {"type": "string"}}}, "definitions is not supported"),
    "patternProperties": (
        {"type": "object", "patternProperties": {"^a": {"type": "string"}}},
        "patternProperties is not supported",
    ),
    "type-inside-anyOf": (
        {"type": "string", "anyOf": [{"type": "string", "minLength": 1}]},
        "`type` is not allowed inside",
    ),
    "description-inside-oneOf": (
        {"type": "string", "oneOf": [{"description": "x", "pattern": "a"}]},
        "`description` is not allowed inside",
    ),
    "null-type-in-union": ({"anyOf": [{"type": "string"}, {"type": "null"}]}, "type is missing"),
    "map-list-key-not-required": (
        {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
        "list-map key 'name' must be required",
    ),
    "set-of-objects": (
        {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "object", "properties": {}}},
        "must be scalars",
    ),
    "enum-value-of-wrong-type": ({"type": "integer", "enum": [1, "2"]}, "enum value '2' does not match"),
    "default-of-wrong-type": ({"type": "boolean", "default": "false"}, "default 'false' does not match"),
    "default-not-in-enum": ({"type": "string", "enum": ["a"], "default": "b"}, "not one of the enum values"),
    "array-without-items": ({"type": "array"}, "needs an items schema"),
    "unique-items": ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
    "exclusive-minimum-number": ({"type": "integer", "exclusiveMinimum": 0}, "exclusiveMinimum must be a boolean"),
    "unknown-keyword": ({"type": "object", "propertyNames": {"maxLength": 3}}, "unknown keyword `propertyNames`"),
}


class TestStructuralSchema:
    """Every CRD schema is structural and the CRDs are complete for kubectl."""

    @pytest.mark.parametrize("kind", _structural_params())
    def test_schema_is_structural(self, kind: str) -> None:
        """The openAPIV3Schema passes every structural-schema rule."""
        problems = structural_problems(root_schema(kind))
        prefix, _ = KNOWN_NON_STRUCTURAL.get(kind, (None, ""))
        unexpected = [p for p in problems if prefix is None or not p.startswith(prefix)]
        assert not unexpected, f"{kind} CRD is not structural:\n" + "\n".join(unexpected)
        if problems:
            raise KnownBugError(f"{kind} CRD is not structural:\n" + "\n".join(problems))

    @pytest.mark.parametrize(("schema", "expected"), list(NON_STRUCTURAL.values()), ids=list(NON_STRUCTURAL))
    def test_checker_rejects_non_structural(self, schema: dict[str, Any], expected: str) -> None:
        """The checker reports a deliberately non-structural schema."""
        problems = structural_problems(schema)
        assert any(expected in problem for problem in problems), problems

    def test_checker_accepts_structural(self) -> None:
        """The checker finds nothing wrong with a structural schema using every construct we generate."""
        schema = {
            "type": "object",
            "properties": {
                "metadata": {"type": "object"},
                "items": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "mode": {"type": "string", "enum": ["a", "b"]}},
                        "x-kubernetes-validations": [{"rule": "self.name != ''", "message": "named"}],
                    },
                },
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "size": {"x-kubernetes-int-or-string": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "count": {"type": "integer", "default": 3, "minimum": 1},
            },
        }
        assert structural_problems(schema) == []

    @pytest.mark.parametrize("kind", KINDS)
    def test_group_scope_and_version(self, kind: str) -> None:
        """Group cloud.kliv.dev, namespaced, one served storage version with the status subresource."""
        crd = CRDS[kind]
        spec = crd["spec"]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{GROUP}"
        assert spec["group"] == GROUP
        assert spec["scope"] == "Namespaced"
        [version] = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"].get("status") == {}

    @pytest.mark.parametrize("kind", KINDS)
    def test_names(self, kind: str) -> None:
        """Category `kliv`, short names, and DNS-1035 plural/singular/short names."""
        names = CRDS[kind]["spec"]["names"]
        label = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
        assert names["kind"] == kind
        assert names["listKind"] == f"{kind}List"
        assert "kliv" in names["categories"]
        assert names["shortNames"], f"{kind} has no shortNames"
        for name in [names["plural"], names["singular"], *names["shortNames"], *names["categories"]]:
            assert label.match(name), f"{name!r} is not a DNS-1035 label"
            assert len(name) <= 63, f"{name!r} is longer than 63 characters"

    @pytest.mark.parametrize("kind", KINDS)
    def test_printer_columns(self, kind: str) -> None:
        """Ready, Synced and Age (type date) columns; every column has a valid type and a JSON path."""
        columns = {c["name"]: c for c in CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]}
        assert {"Ready", "Synced", "Age"} <= set(columns), sorted(columns)
        assert columns["Age"]["type"] == "date"
        assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
        for column in columns.values():
            assert column["type"] in {"integer", "number", "string", "boolean", "date"}, column
            assert column["jsonPath"].startswith("."), column

    @pytest.mark.parametrize("kind", KINDS)
    def test_spec_fields_are_described(self, kind: str) -> None:
        """Every property in the top two levels of spec has a description (for `kubectl explain`)."""
        spec = root_schema(kind)["properties"]["spec"]
        undescribed = []
        for name, field in spec["properties"].items():
            if not field.get("description"):
                undescribed.append(f".spec.{name}")
            inner = field.get("items") or field.get("additionalProperties") or field
            children = inner.get("properties") if isinstance(inner, dict) else None
            undescribed += [f".spec.{name}.{c}" for c, sub in (children or {}).items() if not sub.get("description")]
        assert not undescribed, f"{kind}: no description on {undescribed}"
