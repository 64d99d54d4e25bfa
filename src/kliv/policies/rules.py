"""The rule framework: an id, a default severity, a summary and a fix hint per rule.

Rule modules (:mod:`.security`, :mod:`.performance`) register checks with
:func:`rule`; :func:`evaluate` (called by ``kliv validate`` and, later, the
operator's admission handler) runs them per project and applies the
``[policies]`` settings of ``kliv.toml``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

from kliv.config import PolicySettings
from kliv.specs import ProjectSpecs, Spec, SpecSet
from kliv.specs.errors import Problem, Severity
from kliv.specs.parsing import problem_for
from kliv.specs.suggestions import did_you_mean


@dataclasses.dataclass(frozen=True)
class Finding:
    """What a check reports: the spec, the field, and what is wrong (``hint`` overrides the rule's)."""

    spec: Spec  # type: ignore[type-arg]
    path: str
    message: str
    hint: str = ""


Check = Callable[[ProjectSpecs], Iterable[Finding]]


@dataclasses.dataclass(frozen=True)
class Rule:
    """A guardrail."""

    id: str
    severity: Severity
    summary: str
    hint: str
    check: Check


RULES: dict[str, Rule] = {}


def rule(id: str, severity: Severity, summary: str, hint: str) -> Callable[[Check], Check]:
    """Register ``check`` as the rule ``id``."""

    def register(check: Check) -> Check:
        if id in RULES:
            raise ValueError(f"rule {id} is registered twice")
        RULES[id] = Rule(id, severity, summary, hint, check)
        return check

    return register


def check_settings(settings: PolicySettings) -> list[str]:
    """Messages for every rule id in the settings that does not exist."""
    messages = []
    for rule_id in [*settings.disable, *settings.severity]:
        if rule_id not in RULES:
            hint = did_you_mean(rule_id, RULES, "rules")
            messages.append(f"kliv.toml [policies] names unknown rule `{rule_id}`: {hint}")
    return messages


def evaluate(spec_set: SpecSet, settings: PolicySettings | None = None) -> list[Problem]:
    """Findings of every enabled rule over every project, as problems."""
    settings = settings or PolicySettings()
    problems: list[Problem] = []
    for rule_ in _enabled(settings):
        severity = settings.severity.get(rule_.id, rule_.severity)
        for group in spec_set.projects.values():
            if group.project is None:
                continue  # a dangling projectRef is already an error
            for finding in rule_.check(group):
                problems.append(
                    problem_for(
                        finding.spec.document,
                        finding.path,
                        finding.message,
                        finding.hint or rule_.hint,
                        severity=severity,
                        rule=rule_.id,
                    )
                )
    return problems


def _enabled(settings: PolicySettings) -> Iterator[Rule]:
    return (r for r in RULES.values() if r.id not in settings.disable)
