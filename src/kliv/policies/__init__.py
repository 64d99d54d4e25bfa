"""Guardrails: rules over specs that go beyond validity (security, performance).

Public API: :func:`evaluate` runs every enabled rule over a
:class:`~kliv.specs.SpecSet` and returns :class:`~kliv.specs.Problem` values
carrying the rule id and its (configured) severity; :data:`RULES` lists the
rules; :func:`check_settings` rejects configuration naming unknown rules.
Importing this package registers the built-in rules.
"""

from kliv.policies import performance, security
from kliv.policies.rules import RULES, Finding, Rule, check_settings, evaluate

__all__ = ["RULES", "Finding", "Rule", "check_settings", "evaluate", "performance", "security"]
