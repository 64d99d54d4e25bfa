"""The CEL rules (``x-kubernetes-validations``) of the generated CRDs do what they say.

Every rule compiles with cel-python and gives the intended verdict on good and bad examples
(table :data:`EXAMPLES`); each bad example is also rejected by the pydantic validator the rule mirrors.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

import celpy
import pytest
from celpy import celtypes
from crd_schemas import (
    GROUP,
    KINDS,
    KnownBugError,
    matches_type,
    path_tokens,
    root_schema,
    schema_at,
    schema_nodes,
)

from kliv import specs

# -- CEL rules and their examples --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """One x-kubernetes-validations rule and where it sits."""

    kind: str
    path: str
    rule: str
    message: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.path, self.rule)

    @property
    def id(self) -> str:
        return f"{self.kind}{self.path}:{re.sub(r'[^a-z0-9]+', '-', self.message.lower()).strip('-')}"

    @property
    def is_transition(self) -> bool:
        return re.search(r"\boldSelf\b", self.rule) is not None


def collect_rules() -> list[Rule]:
    """Every rule of every generated CRD, with the path of the node that carries it."""
    return [
        Rule(kind, path, entry["rule"], entry.get("message", ""))
        for kind in KINDS
        for path, node in schema_nodes(root_schema(kind))
        for entry in node.get("x-kubernetes-validations") or []
    ]


RULES = collect_rules()
TRANSITION_RULES = [rule for rule in RULES if rule.is_transition]


@dataclasses.dataclass(frozen=True)
class Change:
    """An update, for transition rules: ``oldSelf`` is the stored value, ``self`` the new one."""

    old: Any
    new: Any


@dataclasses.dataclass(frozen=True)
class Examples:
    """Values of a rule's node (as written, before defaulting) that must pass (good) or fail (bad) it.

    ``twin`` is a fragment of the message of the pydantic validator that mirrors the rule; ``None``
    when there is none (transition rules: pydantic never sees the stored object).
    """

    good: tuple[Any, ...]
    bad: tuple[Any, ...]
    twin: str | None


PROJECT_REF = {"name": "blog"}


def table_spec(**fields: Any) -> dict[str, Any]:
    return {"projectRef": PROJECT_REF, "columns": [{"name": "id", "type": "bigint", "primaryKey": True}], **fields}


def policy_spec(command: str, **fields: Any) -> dict[str, Any]:
    return {"projectRef": PROJECT_REF, "table": "posts", "command": command, **fields}


def secret_spec(**fields: Any) -> dict[str, Any]:
    return {"projectRef": PROJECT_REF, **fields}


def function_spec(**fields: Any) -> dict[str, Any]:
    return {
        "projectRef": PROJECT_REF,
        "source": {"inline": "export default { fetch: () => new Response('hi') }"},
        **fields,
    }


TRIGGER_FUNCTION = {"language": "plpgsql", "returns": "trigger", "body": "begin\n  return new;\nend;"}


def function_body_spec(**fields: Any) -> dict[str, Any]:
    return {"projectRef": PROJECT_REF, "language": "sql", "returns": "boolean",
            "body": "select auth.uid() is not null", **fields}  # fmt: skip


def trigger_spec(**fields: Any) -> dict[str, Any]:
    return {"projectRef": PROJECT_REF, "table": "posts", "timing": "before", "events": ["update"],
            "function": "stamp", **fields}  # fmt: skip


OWN_ROWS = "author_id = auth.uid()"
# Identity types are compared by exact spelling on both sides (CEL and pydantic).
UPPER_CASE_BIGINT = {"name": "id", "type": "BIGINT", "identity": "always"}

EXAMPLES: dict[tuple[str, str, str], Examples] = {
    ("EmailTemplate", ".spec.variables{*}", "!(has(self.required) && self.required && has(self.default))"): Examples(
        good=({"required": True}, {"default": "friend"}, {"required": False, "default": "friend"}),
        bad=({"required": True, "default": "friend"},),
        twin="is required and has a default",
    ),
    (
        "Function",
        ".spec",
        "!has(self.env) || !has(self.secrets) || self.secrets.all(s, !(s in self.env))",
    ): Examples(
        good=(
            function_spec(),
            function_spec(env={"MODE": "live"}),
            function_spec(secrets=["API_KEY"]),
            function_spec(env={"MODE": "live"}, secrets=["API_KEY"]),
        ),
        bad=(
            function_spec(env={"API_KEY": "plain"}, secrets=["API_KEY"]),
            function_spec(env={"MODE": "live", "API_KEY": "plain"}, secrets=["API_KEY"]),
        ),
        twin="is both a plain env variable and a secret",
    ),
    ("Function", ".spec.env", 'self.all(k, k.matches("^[A-Za-z_][A-Za-z0-9_]*$"))'): Examples(
        good=({}, {"MODE": "live", "_PRIVATE_FLAG": "1", "currency": "eur"}),
        bad=({"1BAD": "x"}, {"MODE": "live", "WITH-DASH": "x"}),
        twin="is not a valid environment variable name",
    ),
    (
        "Project",
        ".spec",
        "(has(self.database) && has(self.database.name)) == (has(oldSelf.database) && has(oldSelf.database.name))",
    ): Examples(
        good=(
            Change(old={}, new={"displayName": "x"}),
            Change(old={"database": {"name": "blog"}}, new={"database": {"name": "blog"}}),
        ),
        bad=(Change(old={}, new={"database": {"name": "blog_v2"}}), Change(old={"database": {"name": "blog"}}, new={})),
        twin=None,
    ),
    ("Project", ".spec.database.name", "self == oldSelf"): Examples(
        good=(Change(old="blog", new="blog"),),
        bad=(Change(old="blog", new="blog_v2"),),
        twin=None,
    ),
    ("ProjectSecret", ".spec", "has(self.valueFrom) != has(self.generate)"): Examples(
        good=(secret_spec(generate={"length": 48}), secret_spec(valueFrom={"env": "STRIPE_KEY"})),
        bad=(secret_spec(), secret_spec(generate={}, valueFrom={"env": "STRIPE_KEY"})),
        twin="exactly one of `valueFrom` or `generate`",
    ),
    ("ProjectSecret", ".spec.valueFrom", "has(self.secretKeyRef) != has(self.env)"): Examples(
        good=({"env": "STRIPE_KEY"}, {"secretKeyRef": {"name": "stripe", "key": "api-key"}}),
        bad=({}, {"env": "STRIPE_KEY", "secretKeyRef": {"name": "stripe", "key": "api-key"}}),
        twin="exactly one of `secretKeyRef` or `env`",
    ),
    ("TablePolicy", ".spec", "self.command != 'insert' || !has(self.using)"): Examples(
        good=(policy_spec("insert", withCheck=OWN_ROWS), policy_spec("update", using=OWN_ROWS)),
        bad=(policy_spec("insert", using=OWN_ROWS, withCheck=OWN_ROWS),),
        twin="an insert policy cannot have `using`",
    ),
    ("TablePolicy", ".spec", "!(self.command in ['select', 'delete']) || !has(self.withCheck)"): Examples(
        good=(policy_spec("select", using=OWN_ROWS), policy_spec("all", using=OWN_ROWS, withCheck=OWN_ROWS)),
        bad=(
            policy_spec("select", using=OWN_ROWS, withCheck=OWN_ROWS),
            policy_spec("delete", using=OWN_ROWS, withCheck=OWN_ROWS),
        ),
        twin="policy cannot have `withCheck`",
    ),
    ("TablePolicy", ".spec", "self.command != 'insert' || has(self.withCheck)"): Examples(
        good=(policy_spec("insert", withCheck=OWN_ROWS), policy_spec("delete", using=OWN_ROWS)),
        bad=(policy_spec("insert"),),
        twin="an insert policy needs `withCheck`",
    ),
    ("TablePolicy", ".spec", "!(self.command in ['select', 'delete']) || has(self.using)"): Examples(
        good=(policy_spec("delete", using=OWN_ROWS), policy_spec("update", withCheck=OWN_ROWS)),
        bad=(policy_spec("select"), policy_spec("delete")),
        twin="policy needs `using`",
    ),
    ("TablePolicy", ".spec", "has(self.using) || has(self.withCheck)"): Examples(
        good=(
            policy_spec("update", using=OWN_ROWS),
            policy_spec("all", withCheck=OWN_ROWS),
            {"projectRef": PROJECT_REF, "table": "posts", "using": OWN_ROWS},  # command defaults to `all`
        ),
        bad=(policy_spec("update"), {"projectRef": PROJECT_REF, "table": "posts"}),
        twin="needs `using` or `withCheck`",
    ),
    ("Table", ".spec", "!has(self.renamedFrom) || !has(self.name) || self.renamedFrom != self.name"): Examples(
        good=(table_spec(), table_spec(renamedFrom="old_articles"), table_spec(name="articles", renamedFrom="x")),
        bad=(table_spec(name="articles", renamedFrom="articles"),),
        twin="the table is renamed from itself",
    ),
    ("Table", ".spec.columns[*]", "!has(self.identity) || !has(self.default)"): Examples(
        good=(
            {"name": "id", "type": "bigint", "primaryKey": True, "identity": "always"},
            {"name": "title", "type": "text", "default": "'untitled'"},
        ),
        bad=({"name": "id", "type": "bigint", "identity": "byDefault", "default": "1"},),
        twin="cannot have a default",
    ),
    (
        "Table",
        ".spec.columns[*]",
        "!has(self.identity) || self.type in ['smallint', 'integer', 'bigint', 'int', 'int2', 'int4', 'int8']",
    ): Examples(
        good=(
            {"name": "id", "type": "bigint", "identity": "always"},
            {"name": "id", "type": "int4", "identity": "byDefault"},
            {"name": "id", "type": "smallint", "identity": "always"},
            {"name": "title", "type": "text"},
        ),
        bad=(
            {"name": "id", "type": "text", "identity": "always"},
            {"name": "id", "type": "bigint[]", "identity": "always"},
            {"name": "id", "type": "numeric", "identity": "byDefault"},
            UPPER_CASE_BIGINT,
        ),
        twin="must be smallint, integer or bigint",
    ),
    (
        "Table",
        ".spec.columns[*]",
        "!(has(self.primaryKey) && self.primaryKey && has(self.nullable) && self.nullable)",
    ): Examples(
        good=(
            {"name": "id", "type": "uuid", "primaryKey": True},
            {"name": "id", "type": "uuid", "primaryKey": True, "nullable": False},
            {"name": "note", "type": "text", "nullable": True},
        ),
        bad=({"name": "id", "type": "uuid", "primaryKey": True, "nullable": True},),
        twin="cannot be nullable",
    ),
    ("Table", ".spec.columns[*]", "!(has(self.identity) && has(self.nullable) && self.nullable)"): Examples(
        good=({"name": "n", "type": "bigint", "identity": "always"}, {"name": "n", "type": "bigint", "nullable": True}),
        bad=({"name": "n", "type": "bigint", "identity": "always", "nullable": True},),
        twin="cannot be nullable",
    ),
    ("Table", ".spec.columns[*]", "!has(self.renamedFrom) || self.renamedFrom != self.name"): Examples(
        good=({"name": "title", "type": "text"}, {"name": "title", "type": "text", "renamedFrom": "headline"}),
        bad=({"name": "title", "type": "text", "renamedFrom": "title"},),
        twin="is renamed from itself",
    ),
    ("Table", ".spec.columns[*]", "!has(self.generated) || (!has(self.default) && !has(self.identity))"): Examples(
        good=(
            {"name": "n", "type": "bigint", "generated": "1 + 1"},
            {"name": "n", "type": "int", "default": "0"},
        ),
        bad=(
            {"name": "n", "type": "bigint", "generated": "id * 2", "default": "1"},
            {"name": "n", "type": "bigint", "generated": "id + 1", "identity": "always"},
        ),
        twin="cannot have a default or an identity",
    ),
    ("DatabaseFunction", ".spec", "self.returns != 'trigger' || self.language == 'plpgsql'"): Examples(
        good=(function_body_spec(), {"projectRef": PROJECT_REF, **TRIGGER_FUNCTION}),
        bad=(function_body_spec(returns="trigger"),),
        twin="a trigger function is written in plpgsql",
    ),
    (
        "DatabaseFunction",
        ".spec",
        "self.returns != 'trigger' || !has(self.arguments) || size(self.arguments) == 0",
    ): Examples(
        good=(
            {"projectRef": PROJECT_REF, **TRIGGER_FUNCTION},
            function_body_spec(arguments=[{"name": "a", "type": "int"}]),
        ),
        bad=({"projectRef": PROJECT_REF, **TRIGGER_FUNCTION, "arguments": [{"name": "a", "type": "int"}]},),
        twin="a trigger function takes no arguments",
    ),
    ("Trigger", ".spec", "!has(self.when) || !has(self.forEach) || self.forEach == 'row'"): Examples(
        good=(trigger_spec(when="old.status is distinct from new.status"), trigger_spec(forEach="statement")),
        bad=(trigger_spec(forEach="statement", when="new.status = 'x'"),),
        twin="only a row trigger may have `when`",
    ),
    ("Table", ".spec.foreignKeys[*]", "size(self.columns) == size(self.references.columns)"): Examples(
        good=({"columns": ["id"], "references": {"table": "articles", "columns": ["id"]}},),
        bad=({"columns": ["id"], "references": {"table": "articles", "columns": ["id", "id"]}},),
        twin="references 2",
    ),
}

# (kind, path, rule, bad example index) -> why the pydantic twin accepts what the rule rejects.
TWIN_DISAGREEMENTS: dict[tuple[str, str, str, int], str] = {}


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """``value`` with the schema's defaults filled in, as the API server does before running CEL rules."""
    if isinstance(value, dict):
        result = {}
        properties = node.get("properties") or {}
        for name, child in properties.items():
            if name in value:
                result[name] = apply_defaults(child, value[name])
            elif "default" in child:
                result[name] = apply_defaults(child, copy.deepcopy(child["default"]))
        additional = node.get("additionalProperties")
        for name, item in value.items():
            if name not in properties:
                result[name] = apply_defaults(additional, item) if isinstance(additional, dict) else item
        return result
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [apply_defaults(node["items"], item) for item in value]
    return value


def fit_problems(node: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Where ``value`` does not fit ``node``: wrong types, enum values, missing or unknown (pruned) fields."""
    if not matches_type(value, node):
        return [f"{path or '.'}: {value!r} is not of type {node.get('type')!r}"]
    problems = []
    if "enum" in node and value not in node["enum"]:
        problems.append(f"{path}: {value!r} is not one of {node['enum']}")
    if isinstance(value, dict) and not node.get("x-kubernetes-preserve-unknown-fields"):
        properties = node.get("properties") or {}
        additional = node.get("additionalProperties")
        problems += [
            f"{path}.{name}: required field is missing" for name in node.get("required") or [] if name not in value
        ]
        for name, item in value.items():
            if name in properties:
                problems += fit_problems(properties[name], item, f"{path}.{name}")
            elif isinstance(additional, dict):
                problems += fit_problems(additional, item, f"{path}{{{name}}}")
            else:
                problems.append(f"{path}.{name}: not declared in the schema (the API server prunes it)")
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            problems += fit_problems(node["items"], item, f"{path}[{index}]")
    return problems


def evaluate(rule: Rule, example: Any) -> bool:
    """The rule's verdict on ``example`` (defaults applied) with cel-python, as a plain bool."""
    node = schema_at(root_schema(rule.kind), rule.path)
    environment = celpy.Environment()
    program = environment.program(environment.compile(rule.rule))
    if isinstance(example, Change):
        activation = {
            "self": celpy.json_to_cel(apply_defaults(node, example.new)),
            "oldSelf": celpy.json_to_cel(apply_defaults(node, example.old)),
        }
    else:
        activation = {"self": celpy.json_to_cel(apply_defaults(node, example))}
    result = program.evaluate(activation)
    if isinstance(result, Exception):
        raise result
    assert isinstance(result, celtypes.BoolType), f"{rule.rule!r} gave {result!r}, not a bool"
    return bool(result)


# -- documents for pydantic ----------------------------------------------------------------------------


def document(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


# What the example documents refer to: their Project, the table policies apply to, the secret functions use.
CONTEXT = (
    document("Project", "blog", {}),
    document(
        "Table",
        "posts",
        {
            "projectRef": PROJECT_REF,
            "columns": [
                {"name": "id", "type": "uuid", "primaryKey": True},
                {"name": "author_id", "type": "uuid"},
                {"name": "status", "type": "text"},
            ],
        },
    ),
    document("ProjectSecret", "api-key", secret_spec(generate={})),
    document("DatabaseFunction", "stamp", {"projectRef": PROJECT_REF, **TRIGGER_FUNCTION}),
)
# A valid document of each kind; an example replaces the node at its rule's path.
BASES = {
    "EmailTemplate": document(
        "EmailTemplate", "welcome", {"projectRef": PROJECT_REF, "subject": "Welcome", "markdown": "Hello!"}
    ),
    "Function": document("Function", "hello", function_spec()),
    "Project": document("Project", "shop", {}),
    "ProjectSecret": document("ProjectSecret", "stripe-key", secret_spec(valueFrom={"env": "STRIPE_KEY"})),
    "Table": document("Table", "articles", table_spec()),
    "TablePolicy": document("TablePolicy", "posts-read", policy_spec("select", using=OWN_ROWS)),
    "DatabaseFunction": document("DatabaseFunction", "is-author", function_body_spec()),
    "Trigger": document("Trigger", "posts-stamp", trigger_spec()),
}


def _embed(current: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return copy.deepcopy(value)
    token, rest = tokens[0], tokens[1:]
    if token == "[*]":
        return [_embed(current[0] if current else {}, rest, value)]
    if token == "{*}":
        return {"example": _embed(next(iter(current.values())) if current else {}, rest, value)}
    result = dict(current or {})
    result[token[1:]] = _embed(result.get(token[1:]), rest, value)
    return result


def validate_with_pydantic(rule: Rule, example: Any) -> specs.Validation:
    """``kliv validate`` of a document whose node at the rule's path is ``example``, among its context."""
    subject = _embed(BASES[rule.kind], path_tokens(rule.path), example)
    documents = [specs.Document(specs.Source("t.yaml", i), data) for i, data in enumerate([*CONTEXT, subject])]
    return specs.validate_documents(documents)


def _fit_problems_of(rule: Rule, example: Any) -> list[str]:
    node = schema_at(root_schema(rule.kind), rule.path)
    values = [example.old, example.new] if isinstance(example, Change) else [example]
    return [p for value in values for p in fit_problems(node, apply_defaults(node, value), rule.path)]


# (kind, problem prefix) -> why examples touching that field cannot fit the generated schema.
KNOWN_UNFIT: dict[tuple[str, str], str] = {}


def _known_unfit(rule: Rule, example: Any) -> str | None:
    problems = _fit_problems_of(rule, example)
    for (kind, prefix), reason in KNOWN_UNFIT.items():
        if problems and rule.kind == kind and all(p.startswith(prefix) for p in problems):
            return reason
    return None


def _example_params(
    verdicts: tuple[str, ...] = ("good", "bad"), *, twins_only: bool = False, fit: bool = False
) -> list[Any]:
    """One param per example of every rule; known bugs are strict xfails."""
    params = []
    for rule in RULES:
        examples = EXAMPLES.get(rule.key)
        if examples is None or (twins_only and examples.twin is None):
            continue
        for verdict in verdicts:
            for index, example in enumerate(getattr(examples, verdict)):
                reason = None
                if twins_only and verdict == "bad":
                    reason = TWIN_DISAGREEMENTS.get((*rule.key, index))
                if fit:
                    reason = _known_unfit(rule, example)
                marks = [pytest.mark.xfail(strict=True, raises=KnownBugError, reason=reason)] if reason else []
                params.append(pytest.param(rule, verdict, example, marks=marks, id=f"{rule.id}:{verdict}{index}"))
    return params


class TestCelRules:
    """Every CEL rule compiles and behaves as intended on good and bad examples (cel-python)."""

    def test_rules_found(self) -> None:
        """The CRDs carry CEL rules at all (guards against the collector silently finding none)."""
        assert len(RULES) >= len(EXAMPLES) > 0

    def test_every_rule_has_examples(self) -> None:
        """Each rule in the CRDs has a good and a bad example in EXAMPLES: a new rule needs examples."""
        missing = [f"{r.kind} {r.path}: {r.rule}" for r in RULES if r.key not in EXAMPLES]
        assert not missing, "add good and bad examples to EXAMPLES in tests/unit/test_crds.py for:\n" + "\n".join(
            missing
        )
        thin = [f"{r.kind} {r.path}: {r.rule}" for r in RULES if not (EXAMPLES[r.key].good and EXAMPLES[r.key].bad)]
        assert not thin, "every rule needs at least one good and one bad example:\n" + "\n".join(thin)

    def test_no_stale_examples(self) -> None:
        """Every EXAMPLES entry names a rule that is still in the CRDs."""
        stale = set(EXAMPLES) - {r.key for r in RULES}
        assert not stale, f"EXAMPLES has entries for rules no CRD carries: {sorted(stale)}"

    def test_only_transition_rules_lack_a_twin(self) -> None:
        """Only transition rules (oldSelf) may skip the pydantic cross-check."""
        untwinned = [r.key for r in RULES if r.key in EXAMPLES and EXAMPLES[r.key].twin is None and not r.is_transition]
        assert not untwinned, f"rules without a pydantic twin fragment: {untwinned}"

    @pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
    def test_rule_compiles(self, rule: Rule) -> None:
        """The rule parses with cel-python."""
        environment = celpy.Environment()
        environment.program(environment.compile(rule.rule))

    @pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
    def test_rule_fields_exist(self, rule: Rule) -> None:
        """Every `self.<field>` in the rule is a property of its node (else the API server refuses the rule)."""
        node = schema_at(root_schema(rule.kind), rule.path)
        fields = set(re.findall(r"\bself\.([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()", rule.rule))  # not macros
        unknown = fields - set(node.get("properties") or {})
        assert not unknown, f"{rule.rule!r} uses {sorted(unknown)}, not properties of {rule.kind}{rule.path}"

    @pytest.mark.parametrize("rule", TRANSITION_RULES, ids=[r.id for r in TRANSITION_RULES])
    def test_transition_rule_is_not_in_a_plain_list(self, rule: Rule) -> None:
        """A transition rule's node is not inside a list without map keys (oldSelf could not be correlated)."""
        root = root_schema(rule.kind)
        tokens = path_tokens(rule.path)
        for depth, token in enumerate(tokens):
            if token == "[*]":
                parent = schema_at(root, "".join(tokens[:depth]))
                assert parent.get("x-kubernetes-list-type") == "map", f"{rule.path}: oldSelf inside a non-map list"

    @pytest.mark.parametrize(("rule", "verdict", "example"), _example_params())
    def test_example(self, rule: Rule, verdict: str, example: Any) -> None:
        """The rule accepts its good examples and refuses its bad ones."""
        assert evaluate(rule, example) is (verdict == "good"), (
            f"{rule.rule!r} should {'accept' if verdict == 'good' else 'refuse'} {example!r}"
        )

    @pytest.mark.parametrize(("rule", "verdict", "example"), _example_params(("good",)))
    def test_good_example_passes_every_rule_of_its_node(self, rule: Rule, verdict: str, example: Any) -> None:
        """A good example satisfies all rules on its node, so pydantic must accept it too."""
        failing = [r.rule for r in RULES if (r.kind, r.path) == (rule.kind, rule.path) and not evaluate(r, example)]
        assert not failing, f"good example {example!r} fails {failing}"

    @pytest.mark.parametrize(("rule", "verdict", "example"), _example_params(fit=True))
    def test_example_fits_schema(self, rule: Rule, verdict: str, example: Any) -> None:
        """The example is something the API server would hand to CEL: right types, no pruned fields."""
        problems = _fit_problems_of(rule, example)
        known = [prefix for (kind, prefix) in KNOWN_UNFIT if kind == rule.kind]
        unexpected = [p for p in problems if not any(p.startswith(prefix) for prefix in known)]
        assert not unexpected, "\n".join(unexpected)
        if problems:
            raise KnownBugError("\n".join(problems))

    @pytest.mark.parametrize(("rule", "verdict", "example"), _example_params(twins_only=True))
    def test_pydantic_twin_agrees(self, rule: Rule, verdict: str, example: Any) -> None:
        """`kliv validate` accepts the good example and refuses the bad one with the twin's message."""
        validation = validate_with_pydantic(rule, example)
        messages = [p.message for p in validation.errors]
        if verdict == "good":
            assert validation.valid, f"pydantic refuses good example {example!r}: {messages}"
            return
        twin = EXAMPLES[rule.key].twin
        if validation.valid:
            raise KnownBugError(f"pydantic accepts {example!r}, which {rule.rule!r} refuses")
        assert any(twin in message for message in messages), f"expected {twin!r} among {messages}"
