"""Security guardrails: row-level security and secrets.

Registered on import by :mod:`kliv.policies`; each check reads one project.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

from kliv.policies.rules import Finding, rule
from kliv.specs import ProjectSpecs
from kliv.specs.base import checked_expression
from kliv.specs.table_policy import WRITE_COMMANDS

RLS_REASON_ANNOTATION = "rls-disabled-reason"


@rule(
    "rls-disabled",
    "error",
    "Row-level security is disabled on a table",
    "keep `rowLevelSecurity: true`, or justify it with the annotation `cloud.kliv.dev/rls-disabled-reason: <why>`",
)
def rls_disabled(group: ProjectSpecs) -> Iterator[Finding]:
    for spec in group.tables:
        table = spec.resource
        reason = (table.annotation(RLS_REASON_ANNOTATION) or "").strip()
        if not table.spec.row_level_security and not reason:
            yield Finding(
                spec,
                "/spec/rowLevelSecurity",
                f"table `{table.table_name}` turns row-level security off: every project role "
                "with table privileges can read and write every row",
            )


@rule(
    "rls-without-policies",
    "warning",
    "A table with row-level security has no policy",
    "add a TablePolicy for the table (service_role bypasses RLS; anon and authenticated see nothing)",
)
def rls_without_policies(group: ProjectSpecs) -> Iterator[Finding]:
    # Restrictive policies only narrow what permissive ones let through: alone they let nothing.
    covered = {p.resource.spec.table for p in group.policies if p.resource.spec.mode == "permissive"}
    for spec in group.tables:
        table = spec.resource
        if table.spec.row_level_security and table.table_name not in covered:
            yield Finding(
                spec,
                "/spec/rowLevelSecurity",
                f"table `{table.table_name}` has row-level security but no policy: "
                "it is unreachable for anon and authenticated",
            )


@rule(
    "anon-write-unrestricted",
    "error",
    "A write policy lets anonymous callers change any row",
    "restrict the expression (e.g. `owner_id = auth.uid()`) or drop `anon` from `roles`",
)
def anon_write_unrestricted(group: ProjectSpecs) -> Iterator[Finding]:
    for spec in group.policies:
        policy = spec.resource.spec
        if policy.command not in WRITE_COMMANDS or "anon" not in policy.roles or policy.mode == "restrictive":
            continue  # a restrictive policy narrows: `withCheck: true` there grants nothing
        for field, text in (("using", policy.using), ("withCheck", policy.with_check)):
            if text is not None and checked_expression(text, "policy").constant_true:
                yield Finding(
                    spec,
                    f"/spec/{field}",
                    f"`{policy.command}` policy on `{policy.table}` grants anon `{field}: {text.strip()}`, which "
                    "depends on neither the row nor the user: anyone without a login may write every row",
                )


_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_?KEY|_PAT$", re.I)
_SECRET_VALUES = {
    "a Stripe secret key": re.compile(r"\b[sr]k_(live|test)_[0-9A-Za-z]{10,}"),
    "an AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a GitHub token": re.compile(r"\b(gh[pousr]_[0-9A-Za-z]{20,}|github_pat_[0-9A-Za-z_]{20,})"),
    "a Slack token": re.compile(r"\bxox[abprs]-[0-9A-Za-z-]{10,}"),
    "a Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),
    "a SendGrid key": re.compile(r"\bSG\.[0-9A-Za-z_-]{16,}\.[0-9A-Za-z_-]{16,}"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a JSON Web Token": re.compile(r"\beyJ[0-9A-Za-z_-]{8,}\.eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{8,}"),
    "a URL with a password": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I),
}


_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def secret_kind(name: str, value: str) -> str | None:
    """Why ``value`` (an env variable called ``name``) looks like a secret, or None."""
    for kind, pattern in _SECRET_VALUES.items():
        if pattern.search(value):
            return kind
    if _SECRET_NAME.search(name) and len(value) >= 8:
        return "a value under a secret-sounding name"
    # URLs are long and varied by nature; one carrying a password was caught above.
    if len(value) >= 24 and " " not in value and not _URL.match(value) and _entropy(value) >= 4.2:
        return "a long random-looking string"
    return None


@rule(
    "function-env-secret-literal",
    "error",
    "A function's plain env holds what looks like a secret",
    "store it in a ProjectSecret and list its name under the function's `secrets`",
)
def function_env_secret_literal(group: ProjectSpecs) -> Iterator[Finding]:
    for spec in group.functions:
        for name, value in spec.resource.spec.env.items():
            kind = secret_kind(name, value)
            if kind is not None:
                # Never echo the value: the finding is shown, logged and sent to agents.
                yield Finding(
                    spec,
                    f"/spec/env/{name}",
                    f"env `{name}` looks like a secret ({kind}; value not shown)",
                )


@rule(
    "definer-exposed-to-anon",
    "warning",
    "A definer function may be called by anonymous callers",
    "expose it to `authenticated` only, or make it `security: invoker` so RLS decides what it reads",
)
def definer_exposed_to_anon(group: ProjectSpecs) -> Iterator[Finding]:
    for spec in group.database_functions:
        function = spec.resource
        if function.spec.security == "definer" and "anon" in function.spec.expose:
            yield Finding(
                spec,
                "/spec/expose",
                f"`{function.function_name}()` runs as the project's owner role (every row, past row-level "
                "security) and anon may call it: anyone without a login can call it",
            )


@rule(
    "trigger-writes-past-rls",
    "info",
    "A trigger runs a definer function that writes tables",
    "make sure a caller who fires it may cause those writes (the function decides, not RLS)",
)
def trigger_writes_past_rls(group: ProjectSpecs) -> Iterator[Finding]:
    functions = {spec.resource.function_name: spec.resource for spec in group.database_functions}
    for spec in group.triggers:
        trigger = spec.resource.spec
        function = functions.get(trigger.function)
        if function is None or function.spec.security != "definer" or not function.body.writes:
            continue
        written = sorted({use.name for use in function.body.writes})
        yield Finding(
            spec,
            "/spec/function",
            f"a change of `{trigger.table}` runs `{trigger.function}()` as the project's owner role, which writes "
            f"{', '.join(f'`{name}`' for name in written)} past row-level security: whoever may change "
            f"`{trigger.table}` causes rows there they could not write themselves",
        )
