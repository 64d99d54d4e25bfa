"""Helpers for the CRD tests: the generated CRDs, schema paths, and a structural-schema checker.

Imported by ``test_crds.py`` and ``test_crd_cel_rules.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from kliv.specs.crds import render

COMMITTED = Path(__file__).parents[2] / "crds"
REGENERATE = "run `kliv crds --out crds/` and commit the result"
GROUP = "cloud.kliv.dev"


def _generated_crds() -> dict[str, dict[str, Any]]:
    """Kind -> CRD, exactly as ``kliv crds`` would write it (parsed back from the YAML text)."""
    crds = [yaml.safe_load(text) for name, text in render().items() if name.endswith(".yaml")]
    return {crd["spec"]["names"]["kind"]: crd for crd in crds}


CRDS = _generated_crds()
KINDS = sorted(CRDS)


def root_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


# -- schema paths ------------------------------------------------------------------------------------
#
# A node is named by a path from the root schema: `.field` follows `properties`, `[*]` follows
# `items` and `{*}` follows `additionalProperties`, e.g. `.spec.columns[*]` for a Table column.

_PATH_TOKEN = re.compile(r"\.([A-Za-z0-9_]+)|(\[\*\])|(\{\*\})")


def path_tokens(path: str) -> list[str]:
    tokens = [match.group(0) for match in _PATH_TOKEN.finditer(path)]
    assert "".join(tokens) == path, f"bad schema path {path!r}"
    return tokens


def schema_at(root: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema node at ``path`` below ``root``."""
    node = root
    for token in path_tokens(path):
        if token == "[*]":
            node = node["items"]
        elif token == "{*}":
            node = node["additionalProperties"]
        else:
            node = node["properties"][token[1:]]
    return node


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node that describes data (root, properties, items, additionalProperties)."""
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from schema_nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{*}}")


# -- the structural-schema checker -------------------------------------------------------------------
#
# Follows k8s.io/apiextensions-apiserver (validation.go: ValidateCustomResourceDefinitionOpenAPISchema,
# and pkg/apiserver/schema: NewStructural/ValidateStructural).

# JSON names of apiextensions.k8s.io/v1 JSONSchemaProps: anything else is an unknown field.
KNOWN_KEYWORDS = frozenset(
    {
        "id", "$schema", "$ref", "description", "type", "format", "title", "default", "maximum",
        "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems",
        "minItems", "uniqueItems", "multipleOf", "enum", "maxProperties", "minProperties", "required",
        "items", "allOf", "oneOf", "anyOf", "not", "properties", "additionalProperties", "patternProperties",
        "dependencies", "additionalItems", "definitions", "externalDocs", "example", "nullable",
        "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
        "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type",
        "x-kubernetes-validations",
    }
)  # fmt: skip
# Known to JSONSchemaProps but refused by the API server in a CRD (or pydantic leftovers such as $defs).
FORBIDDEN_KEYWORDS = {
    "$ref": "$ref is not supported",
    "$defs": "$defs is not supported",
    "definitions": "definitions is not supported",
    "dependencies": "dependencies is not supported",
    "additionalItems": "additionalItems is not supported",
    "patternProperties": "patternProperties is not supported",
    "id": "id is not supported",
}
TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
SCALAR_TYPES = frozenset({"string", "integer", "number", "boolean"})
JUNCTORS = ("anyOf", "oneOf", "allOf", "not")
# Inside anyOf/oneOf/allOf/not only value validations are allowed.
NOT_IN_JUNCTORS = ("type", "description", "default", "additionalProperties", "nullable")
INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]
RULE_KEYS = frozenset({"rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"})


def matches_type(value: Any, node: dict[str, Any]) -> bool:
    """Whether ``value`` has the JSON type that ``node`` declares."""
    if node.get("x-kubernetes-preserve-unknown-fields") and "type" not in node:
        return True
    if node.get("x-kubernetes-int-or-string"):
        return isinstance(value, int | str) and not isinstance(value, bool)
    expected = node.get("type")
    if expected == "string":
        return isinstance(value, str)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    return False


def _junctor_problems(node: Any, path: str) -> list[str]:
    """Keys that structural schemas forbid anywhere below a junctor."""
    if not isinstance(node, dict):
        return []
    problems = [f"{path}: `{key}` is not allowed inside {'/'.join(JUNCTORS)}" for key in NOT_IN_JUNCTORS if key in node]
    for key, child in node.items():
        if key in ("properties", "patternProperties", "definitions") and isinstance(child, dict):
            for name, grandchild in child.items():
                problems += _junctor_problems(grandchild, f"{path}.{key}.{name}")
        elif isinstance(child, dict):
            problems += _junctor_problems(child, f"{path}.{key}")
        elif isinstance(child, list) and key in ("anyOf", "oneOf", "allOf"):
            for index, item in enumerate(child):
                problems += _junctor_problems(item, f"{path}.{key}[{index}]")
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value_problems(node: dict[str, Any], path: str) -> list[str]:
    """`enum` and `default` values that do not fit the node."""
    problems = []
    if "enum" in node:
        if not isinstance(node["enum"], list) or not node["enum"]:
            problems.append(f"{path}: enum must be a non-empty list")
        else:
            problems += [
                f"{path}: enum value {value!r} does not match type {node.get('type')!r}"
                for value in node["enum"]
                if not matches_type(value, node)
            ]
    if "default" in node:
        default = node["default"]
        if not matches_type(default, node):
            problems.append(f"{path}: default {default!r} does not match type {node.get('type')!r}")
        elif isinstance(node.get("enum"), list) and default not in node["enum"]:
            problems.append(f"{path}: default {default!r} is not one of the enum values")
        elif isinstance(default, str):
            if len(default) > node.get("maxLength", len(default)) or len(default) < node.get("minLength", 0):
                problems.append(f"{path}: default {default!r} violates minLength/maxLength")
            if "pattern" in node and not re.search(node["pattern"], default):
                problems.append(f"{path}: default {default!r} does not match pattern {node['pattern']!r}")
        elif _is_number(default) and not node.get("minimum", default) <= default <= node.get("maximum", default):
            problems.append(f"{path}: default {default!r} violates minimum/maximum")
    return problems


def _list_problems(node: dict[str, Any], path: str) -> list[str]:
    """x-kubernetes-list-type and x-kubernetes-list-map-keys."""
    list_type = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys")
    items = node.get("items") if isinstance(node.get("items"), dict) else {}
    problems = []
    if list_type is None:
        if keys is not None:
            problems.append(f"{path}: x-kubernetes-list-map-keys needs x-kubernetes-list-type: map")
        return problems
    if node.get("type") != "array":
        problems.append(f"{path}: x-kubernetes-list-type on a node of type {node.get('type')!r}")
    if list_type not in ("atomic", "set", "map"):
        problems.append(f"{path}: x-kubernetes-list-type {list_type!r} is not atomic, set or map")
    if list_type == "set":
        if not (items.get("type") in SCALAR_TYPES or items.get("x-kubernetes-int-or-string")):
            problems.append(f"{path}: items of x-kubernetes-list-type: set must be scalars")
        if keys is not None:
            problems.append(f"{path}: x-kubernetes-list-map-keys needs x-kubernetes-list-type: map")
    if list_type == "map":
        if items.get("type") != "object":
            problems.append(f"{path}: items of x-kubernetes-list-type: map must be objects")
        if not keys:
            problems.append(f"{path}: x-kubernetes-list-type: map needs x-kubernetes-list-map-keys")
        properties = items.get("properties") or {}
        required = items.get("required") or []
        for key in keys or []:
            if key not in properties:
                problems.append(f"{path}: list-map key {key!r} is not a property of the items")
            elif properties[key].get("type") not in SCALAR_TYPES:
                problems.append(f"{path}: list-map key {key!r} must be a scalar")
            if key not in required:
                problems.append(f"{path}: list-map key {key!r} must be required in the items")
    return problems


def _node_problems(node: Any, path: str) -> list[str]:
    """Problems of one schema node, not of its children."""
    if not isinstance(node, dict):
        return [f"{path}: a schema must be a mapping, not {type(node).__name__}"]
    problems = [f"{path}: unknown keyword `{key}`" for key in node if key not in KNOWN_KEYWORDS | {"$defs"}]
    problems += [f"{path}: {message}" for key, message in FORBIDDEN_KEYWORDS.items() if key in node]
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        problems.append(f"{path}: x-kubernetes-preserve-unknown-fields must be true or absent")
    node_type = node.get("type")
    if int_or_string:
        if node_type is not None:
            problems.append(f"{path}: x-kubernetes-int-or-string must not have a type")
        if "anyOf" in node and node["anyOf"] != INT_OR_STRING_ANY_OF:
            problems.append(f"{path}: x-kubernetes-int-or-string allows only anyOf [integer, string]")
    elif not node_type and preserve is not True:
        problems.append(f"{path}: type is missing (structural schemas type every node)")
    elif node_type is not None and node_type not in TYPES:
        problems.append(f"{path}: type {node_type!r} is not one of {sorted(TYPES)}")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties are mutually exclusive")
    if ("properties" in node or "additionalProperties" in node) and node_type != "object":
        problems.append(f"{path}: properties/additionalProperties on a node of type {node_type!r}")
    if node_type == "array" and not isinstance(node.get("items"), dict):
        problems.append(f"{path}: type array needs an items schema")
    if "items" in node and node_type != "array":
        problems.append(f"{path}: items on a node of type {node_type!r}")
    if node.get("uniqueItems") is True:
        problems.append(f"{path}: uniqueItems cannot be true")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            problems.append(f"{path}: {key} must be a boolean in OpenAPI v3.0")
    missing = [name for name in node.get("required") or [] if name not in (node.get("properties") or {})]
    if missing and preserve is not True:
        problems.append(f"{path}: required names undeclared properties {missing}")
    for junctor in JUNCTORS:
        if junctor in node and not (int_or_string and junctor == "anyOf"):
            options = node[junctor] if isinstance(node[junctor], list) else [node[junctor]]
            for index, option in enumerate(options):
                problems += _junctor_problems(option, f"{path}.{junctor}[{index}]")
                undeclared = set((option or {}).get("properties") or {}) - set(node.get("properties") or {})
                if undeclared:
                    problems.append(f"{path}.{junctor}[{index}]: properties {sorted(undeclared)} not declared outside")
    for index, rule in enumerate(node.get("x-kubernetes-validations") or []):
        if not isinstance(rule, dict) or not isinstance(rule.get("rule"), str) or not rule["rule"].strip():
            problems.append(f"{path}: x-kubernetes-validations[{index}] needs a non-empty `rule`")
        elif set(rule) - RULE_KEYS:
            problems.append(
                f"{path}: x-kubernetes-validations[{index}] has unknown keys {sorted(set(rule) - RULE_KEYS)}"
            )
    return problems + _value_problems(node, path) + _list_problems(node, path)


def structural_problems(node: Any, path: str = "") -> list[str]:
    """Everything that makes ``node`` (an openAPIV3Schema) non-structural; empty if it is structural."""
    problems = _node_problems(node, path)
    if not isinstance(node, dict):
        return problems
    for name, child in (node.get("properties") or {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    for key, suffix in (("items", "[*]"), ("additionalProperties", "{*}")):
        if isinstance(node.get(key), dict):
            problems += structural_problems(node[key], f"{path}{suffix}")
    if not path:
        metadata = (node.get("properties") or {}).get("metadata") or {}
        restricted = set(metadata.get("properties") or {})
        if set(metadata) - {"type", "description", "properties"} or restricted - {"name", "generateName"}:
            problems.append(".metadata: only restrictions of name and generateName are allowed")
    return problems


class KnownBugError(AssertionError):
    """A failure caused by a bug recorded in a test module (expected by a strict xfail)."""
