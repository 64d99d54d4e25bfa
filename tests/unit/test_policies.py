"""Guardrails: each rule fires on what it targets, stays quiet otherwise, and obeys kliv.toml."""

from __future__ import annotations

import pytest
from spec_validation import Validate

from kliv.config import PolicySettings
from kliv.policies import RULES, check_settings, evaluate
from kliv.policies.security import secret_kind
from kliv.specs import Validation

TABLE = """
apiVersion: cloud.kliv.dev/v1alpha1
kind: Table
metadata: {name: notes%s}
spec:
  projectRef: {name: demo}
  rowLevelSecurity: %s
  columns:
    - {name: id, type: uuid, primaryKey: true}
    - {name: owner_id, type: uuid}
    - {name: parent_id, type: uuid, references: {table: notes}}
  indexes: [{columns: [parent_id]}]
"""
POLICY = """---
apiVersion: cloud.kliv.dev/v1alpha1
kind: TablePolicy
metadata: {name: notes-policy}
spec: {projectRef: {name: demo}, table: notes, %s}
"""


def _rules(validation: Validation) -> list[tuple[str, str, str]]:
    return [(p.rule, p.severity, p.path) for p in validation.problems if p.rule]


class TestRegistry:
    """Every rule carries an id, a severity, a summary and a hint."""

    def test_rules_are_complete(self) -> None:
        """The rules are registered with their metadata."""
        assert set(RULES) == {
            "rls-disabled", "rls-without-policies", "anon-write-unrestricted",
            "function-env-secret-literal", "foreign-key-unindexed", "varchar-without-length", "json-not-jsonb",
            "definer-exposed-to-anon", "trigger-writes-past-rls",
        }  # fmt: skip
        for rule in RULES.values():
            assert rule.severity in ("error", "warning", "info")
            assert rule.summary
            assert rule.hint


class TestRowLevelSecurity:
    """RLS rules."""

    def test_disabled_is_an_error(self, validate: Validate) -> None:
        """RLS off without a reason fails validation."""
        validation = validate(TABLE % ("", "false"))
        assert ("rls-disabled", "error", "/spec/rowLevelSecurity") in _rules(validation)
        assert not validation.valid

    def test_disabled_with_reason(self, validate: Validate) -> None:
        """The annotation with a reason silences the rule."""
        reason = ", annotations: {cloud.kliv.dev/rls-disabled-reason: 'public reference data'}"
        validation = validate(TABLE % (reason, "false"))
        assert [r for r in _rules(validation) if r[0] == "rls-disabled"] == []

    def test_without_policies_is_a_warning(self, validate: Validate) -> None:
        """RLS on and no policy: a warning, still valid."""
        validation = validate(TABLE % ("", "true"))
        assert _rules(validation) == [("rls-without-policies", "warning", "/spec/rowLevelSecurity")]
        assert validation.valid

    def test_only_restrictive_policies_is_a_warning(self, validate: Validate) -> None:
        """Restrictive policies alone let nothing through: the table is still unreachable."""
        restrictive = POLICY % "command: select, mode: restrictive, using: 'owner_id = (select auth.uid())'"
        validation = validate(TABLE % ("", "true") + restrictive)
        assert _rules(validation) == [("rls-without-policies", "warning", "/spec/rowLevelSecurity")]

    @pytest.mark.parametrize(
        ("policy", "fires"),
        [
            ("command: insert, roles: [anon], withCheck: 'true'", True),
            ("command: update, using: '1 = 1'", True),
            ("command: all, roles: [anon, authenticated], using: 'true'", True),
            ("command: insert, roles: [authenticated], withCheck: 'true'", False),
            ("command: select, roles: [anon], using: 'true'", False),
            ("command: insert, roles: [anon], withCheck: 'owner_id is null'", False),
            ("command: insert, roles: [anon], withCheck: 'not false'", True),
            ("command: insert, roles: [anon], withCheck: '2 > 1'", True),
            ("command: update, roles: [anon], using: 'coalesce(null, true)'", True),
            ("command: delete, roles: [anon], using: \"now() > '2000-01-01'\"", True),
            ("command: insert, roles: [anon], withCheck: 'false'", False),
            ("command: insert, roles: [anon], mode: restrictive, withCheck: 'true'", False),
        ],
    )
    def test_anon_write_unrestricted(self, validate: Validate, policy: str, fires: bool) -> None:
        """Only write policies granting anon an always-true expression fire."""
        validation = validate(TABLE % ("", "true") + POLICY % policy)
        assert any(r[0] == "anon-write-unrestricted" for r in _rules(validation)) is fires


class TestSecrets:
    """Secret-looking literals in function env."""

    @pytest.mark.parametrize(
        ("name", "value", "kind"),
        [
            ("STRIPE", "sk_live_" + "a1b2c3d4e5f6g7h8i9j0", "a Stripe secret key"),
            ("AWS_ID", "AKIA" + "ABCDEFGHIJKLMNOP", "an AWS access key id"),
            ("DB", "postgres://app:hunter2@db.example/app", "a URL with a password"),
            ("API_TOKEN", "abcdefgh", "a value under a secret-sounding name"),
            ("BLOB", "Zq8@x!L0pW3#rT7^mN2&bV5*kJ9", "a long random-looking string"),
            ("GREETING", "hello", None),
            ("SUCCESS_URL", "https://shop.example/checkout/success?session_id={CHECKOUT_SESSION_ID}", None),
            ("CURRENCY", "eur", None),
        ],
    )
    def test_secret_kind(self, name: str, value: str, kind: str | None) -> None:
        """Known token shapes, secret-sounding names and random blobs are caught; plain values are not."""
        assert secret_kind(name, value) == kind

    def test_value_is_never_echoed(self, validate: Validate) -> None:
        """The finding names the variable, never the value."""
        canary = "sk_live_" + "CANARYcanary0123456789"
        function = (
            "apiVersion: cloud.kliv.dev/v1alpha1\nkind: Function\nmetadata: {name: f}\n"
            f"spec: {{projectRef: {{name: demo}}, source: {{inline: x}}, env: {{STRIPE: {canary}}}}}\n"
        )
        validation = validate(function)
        [problem] = validation.errors
        assert (problem.rule, problem.path) == ("function-env-secret-literal", "/spec/env/STRIPE")
        assert canary not in repr(validation.problems)


class TestForeignKeyIndex:
    """Unindexed foreign keys warn."""

    def test_unindexed(self, validate: Validate) -> None:
        """Dropping the index makes the rule fire on the column's references."""
        validation = validate((TABLE % ("", "true")).replace("  indexes: [{columns: [parent_id]}]\n", ""))
        assert ("foreign-key-unindexed", "warning", "/spec/columns/2/references") in _rules(validation)

    def test_composite_key_needs_an_index_starting_with_its_columns(self, validate: Validate) -> None:
        """A composite key is covered by an index whose leading columns are the key's, in order."""
        key = "  foreignKeys: [{columns: [owner_id, parent_id], references: {table: pairs, columns: [a, b]}}]\n"
        pairs = (
            "---\napiVersion: cloud.kliv.dev/v1alpha1\nkind: Table\nmetadata: {name: pairs}\n"
            "spec:\n  projectRef: {name: demo}\n  columns:\n    - {name: a, type: uuid, primaryKey: true}\n"
            "    - {name: b, type: uuid, primaryKey: true}\n"
        )
        validation = validate(TABLE % ("", "true") + key + pairs)
        assert ("foreign-key-unindexed", "warning", "/spec/foreignKeys/0/columns") in _rules(validation)
        covered = (TABLE % ("", "true")).replace("[{columns: [parent_id]}]", "[{columns: [owner_id, parent_id, id]}]")
        validation = validate(covered + key + pairs)
        assert [r for r in _rules(validation) if r[0] == "foreign-key-unindexed"] == [
            ("foreign-key-unindexed", "warning", "/spec/columns/2/references")
        ]


class TestSettings:
    """kliv.toml turns rules off or changes their severity."""

    def test_disable_and_severity(self, validate: Validate) -> None:
        """Disabled rules vanish; overridden severities apply."""
        validation = validate(TABLE % ("", "true"))
        settings = PolicySettings(severity={"rls-without-policies": "error"})
        assert [(p.rule, p.severity) for p in evaluate(validation.specs, settings)] == [
            ("rls-without-policies", "error")
        ]
        assert evaluate(validation.specs, PolicySettings(disable=["rls-without-policies"])) == []

    def test_unknown_rule(self) -> None:
        """A misspelt rule id in the settings is reported with a suggestion."""
        [message] = check_settings(PolicySettings(disable=["rls-disable"]))
        assert "unknown rule `rls-disable`" in message
        assert "did you mean `rls-disabled`?" in message


DEFINER = """---
apiVersion: cloud.kliv.dev/v1alpha1
kind: DatabaseFunction
metadata: {name: stamp}
spec:
  projectRef: {name: demo}
  language: plpgsql
  returns: trigger
  security: %s
  body: "begin\\n  insert into notes (id) values (new.id);\\n  return new;\\nend;"
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: DatabaseFunction
metadata: {name: lookup}
spec:
  projectRef: {name: demo}
  language: sql
  returns: boolean
  security: %s
  expose: [anon, authenticated]
  body: select true
---
apiVersion: cloud.kliv.dev/v1alpha1
kind: Trigger
metadata: {name: copy-notes}
spec: {projectRef: {name: demo}, table: notes, timing: after, events: [insert], function: stamp}
"""


class TestDefinerFunctions:
    """Definer functions: exposed to anon warns; a trigger that writes past RLS is noted."""

    def test_definer_rules(self, validate: Validate) -> None:
        validation = validate(TABLE % ("", "true") + DEFINER % ("definer", "definer"))
        rules = _rules(validation)
        assert ("definer-exposed-to-anon", "warning", "/spec/expose") in rules
        assert ("trigger-writes-past-rls", "info", "/spec/function") in rules
        assert validation.valid
        [note] = [p for p in validation.notes if p.rule == "trigger-writes-past-rls"]
        assert "writes `notes` past row-level security" in note.message

    def test_invoker_functions_are_quiet(self, validate: Validate) -> None:
        validation = validate(TABLE % ("", "true") + DEFINER % ("invoker", "invoker"))
        assert {r[0] for r in _rules(validation)} == {"rls-without-policies"}
