"""CustomResourceDefinitions and JSON Schemas generated from the spec models.

Called by ``kliv crds``; a test keeps the committed ``crds/`` folder equal to
a fresh generation. pydantic's JSON Schema is turned into a *structural*
OpenAPI v3 schema as the API server demands: references inlined, ``null``
alternatives dropped (the API server prunes nulls), no ``title``/``$defs``, and
each object either has ``properties`` or ``additionalProperties``, never both.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from kliv.specs.base import GROUP, VERSION, Resource
from kliv.specs.kinds import KINDS

_DROPPED = {"title", "$defs", "propertyNames", "patternProperties"}
_STATUS_DESCRIPTION = "Observed state, written by the operator."

CONDITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A metav1.Condition: Ready or Synced.",
    "required": ["type", "status", "reason", "message", "lastTransitionTime"],
    "properties": {
        "type": {"type": "string", "description": "Ready or Synced."},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string", "description": "CamelCase reason, e.g. WaitingForDependency."},
        "message": {"type": "string", "description": "Full human-readable message."},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "format": "int64"},
    },
}
STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": _STATUS_DESCRIPTION,
    "properties": {
        "observedGeneration": {"type": "integer", "format": "int64"},
        "conditions": {
            "type": "array",
            "items": CONDITION_SCHEMA,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
        "outputs": {
            "type": "object",
            "description": "What was created: names, endpoints, versions (never secret values).",
            "x-kubernetes-preserve-unknown-fields": True,
        },
    },
}


# Only on a Project: the state of every object of the project, refreshed by each of its reconciles.
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The project's objects at its last reconcile: how many are Ready, and which are not and why.",
    "properties": {
        "objects": {"type": "integer"},
        "ready": {"type": "integer"},
        "notReady": {
            "type": "array",
            "description": "Kind/name: Reason (at most 20).",
            "items": {"type": "string"},
        },
    },
}


def structural(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with references inlined and non-structural constructs rewritten."""
    schema = dict(schema)
    ref = schema.pop("$ref", None)
    if ref is not None:
        target = structural(definitions[ref.rsplit("/", 1)[-1]], definitions)
        target.update({k: v for k, v in schema.items() if k not in _DROPPED})
        schema = target
    patterns = schema.get("patternProperties")
    if patterns:
        # The API server refuses patternProperties: values become additionalProperties and the
        # key pattern a CEL rule, so keys are still checked at `kubectl apply`.
        ((pattern, values),) = patterns.items()
        schema["additionalProperties"] = values
        rule = {"rule": f"self.all(k, k.matches({json.dumps(pattern)}))", "message": f"keys must match {pattern}"}
        schema["x-kubernetes-validations"] = [*schema.get("x-kubernetes-validations", []), rule]
    if "anyOf" in schema and not schema.get("x-kubernetes-int-or-string"):
        options = [o for o in schema.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express union {options} structurally")
        inner = structural(options[0], definitions)
        inner.update({k: v for k, v in schema.items() if k not in _DROPPED and k != "default"})
        schema = inner
    if schema.get("x-kubernetes-int-or-string"):
        schema.pop("anyOf", None)
        schema.pop("type", None)
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    if schema.get("default", 0) is None:
        del schema["default"]
    for key in _DROPPED:
        schema.pop(key, None)
    if "properties" in schema:
        schema["properties"] = {k: structural(v, definitions) for k, v in schema["properties"].items()}
        schema.pop("additionalProperties", None)
        if "default" in schema and schema["default"] == {}:
            del schema["default"]
    elif isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = structural(schema["additionalProperties"], definitions)
    if "items" in schema:
        schema["items"] = structural(schema["items"], definitions)
    return schema


def _printer_columns(model: type[Resource]) -> list[dict[str, Any]]:
    columns = [
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Synced", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Synced")].status'},
    ]
    columns += [{"name": n, "type": t, "jsonPath": p} for n, p, t in model.COLUMNS]
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return columns


def crd(model: type[Resource]) -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition of one kind."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.get("$defs", {})
    spec = structural(schema["properties"]["spec"], definitions)
    spec.setdefault("description", f"Desired state of the {model.KIND}.")
    status = copy.deepcopy(STATUS_SCHEMA)
    if model.KIND == "Project":
        status["properties"]["summary"] = copy.deepcopy(SUMMARY_SCHEMA)
    root = {
        "type": "object",
        "description": (model.__doc__ or "").strip(),
        "properties": {
            "apiVersion": {"type": "string", "description": "cloud.kliv.dev/v1alpha1"},
            "kind": {"type": "string", "description": model.KIND},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if model.model_fields["spec"].is_required():
        root["required"] = ["spec"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{model.PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": model.KIND,
                "listKind": f"{model.KIND}List",
                "plural": model.PLURAL,
                "singular": model.KIND.lower(),
                "shortNames": list(model.SHORT_NAMES),
                "categories": ["kliv"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(model),
                }
            ],
        },
    }


def json_schema(model: type[Resource]) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of a whole document of one kind, for editors and agents."""
    schema = model.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://{GROUP}/schemas/{VERSION}/{model.KIND}.json",
        **schema,
    }


def render() -> dict[str, str]:
    """Relative path -> file content of everything ``kliv crds`` writes."""
    files: dict[str, str] = {}
    for model in KINDS.values():
        files[f"{GROUP}_{model.PLURAL}.yaml"] = yaml.safe_dump(
            crd(model), sort_keys=False, width=100, allow_unicode=True
        )
        files[f"schemas/{model.KIND}.json"] = json.dumps(json_schema(model), indent=2, sort_keys=False) + "\n"
    return files


# A line of a deploy manifest that lists the kinds, marked for `kliv crds` to keep in step.
_KIND_LIST = re.compile(r"^(?P<head>\s*resources: )\[[^\]\n]*\](?P<mark>\s*# kliv crds: (?P<what>kinds|status))$", re.M)
DEPLOY_FILES = ("rbac.yaml", "webhook.yaml")


def kind_lists(text: str) -> str:
    """``text`` with every marked list of kinds (``# kliv crds: kinds`` or ``status``) as KINDS says."""
    plurals = [model.PLURAL for model in KINDS.values()]

    def listed(match: re.Match[str]) -> str:
        names = plurals if match["what"] == "kinds" else [f"{plural}/status" for plural in plurals]
        return f"{match['head']}[{', '.join(names)}]{match['mark']}"

    return _KIND_LIST.sub(listed, text)


def write_deploy(deploy: Path) -> list[Path]:
    """Bring the marked kind lists of the deploy manifests (RBAC, admission) up to date."""
    written = []
    for name in DEPLOY_FILES:
        path = deploy / name
        if path.exists():
            text = path.read_text()
            updated = kind_lists(text)
            if updated != text:
                path.write_text(updated)
                written.append(path)
    return written


def write(out: Path) -> list[Path]:
    """Write the generated files under ``out``, removing stale generated ones."""
    files = render()
    (out / "schemas").mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(f"{GROUP}_*.yaml"), *(out / "schemas").glob("*.json")]:
        if str(stale.relative_to(out)) not in files:
            stale.unlink()
    written = []
    for relative, content in files.items():
        path = out / relative
        path.write_text(content)
        written.append(path)
    return written
