"""Row-level-security policies that would recurse forever in Postgres.

A policy on ``memberships`` that reads ``memberships`` in an ``EXISTS`` sub-query
(or ``orgs`` reading ``memberships`` reading ``orgs``) makes every query fail
with "infinite recursion detected in policy". Postgres only finds out at query
time; :func:`recursive_policies` (called by :mod:`kliv.specs.resolving`) finds
it at validation time, per role, since only the policies of the querying role
are expanded (``service_role`` bypasses RLS and never recurses).
"""

from __future__ import annotations

from collections import defaultdict

from kliv.specs.base import checked_expression
from kliv.specs.errors import Problem
from kliv.specs.parsing import problem_for
from kliv.specs.projects import ProjectSpecs, Spec
from kliv.specs.table_policy import TablePolicy

_RLS_ROLES = ("anon", "authenticated")
_READ_COMMANDS = ("select", "all")


def _references(policy: TablePolicy) -> dict[str, set[str]]:
    """Tables read by each expression field of ``policy``."""
    found = {}
    for field, text in (("using", policy.spec.using), ("withCheck", policy.spec.with_check)):
        if text is not None:
            found[field] = checked_expression(text, "policy").tables
    return found


def recursive_policies(group: ProjectSpecs) -> list[Problem]:
    """One problem per policy whose expansion would revisit a table."""
    rls_tables = {t.resource.table_name for t in group.tables if t.resource.spec.row_level_security}
    # role -> table -> tables its read policies query (what a sub-query over the table expands to)
    reads: dict[str, dict[str, set[str]]] = {role: defaultdict(set) for role in _RLS_ROLES}
    for spec in group.policies:
        policy = spec.resource
        if policy.spec.command in _READ_COMMANDS:
            for role in set(policy.spec.roles) & set(_RLS_ROLES):
                for tables in _references(policy).values():
                    reads[role][policy.spec.table] |= tables & rls_tables
    problems = []
    for spec in group.policies:
        problem = _first_cycle(spec, reads, rls_tables)
        if problem is not None:
            problems.append(problem)
    return problems


def _first_cycle(
    spec: Spec[TablePolicy], reads: dict[str, dict[str, set[str]]], rls_tables: set[str]
) -> Problem | None:
    """The loop back to this policy's table through read policies, if any.

    Only read policies can close a loop: a write-only policy is not expanded again
    when its table is read (measured on PG 15: an insert check may query its own
    table). A policy that merely leads into a loop elsewhere is not reported; the
    policies forming that loop are.
    """
    policy = spec.resource
    table = policy.spec.table
    if table not in rls_tables or policy.spec.command not in _READ_COMMANDS:
        return None
    for field, tables in _references(policy).items():
        for role in sorted(set(policy.spec.roles) & set(_RLS_ROLES)):
            for start in sorted(tables & rls_tables):
                cycle = _path_back(table, [table, start], reads[role], set())
                if cycle is not None:
                    chain = " → ".join(f"`{t}`" for t in cycle)
                    return problem_for(
                        spec.document,
                        f"/spec/{field}",
                        f"for role {role} this policy would recurse forever: {chain} "
                        "(Postgres fails every such query with 'infinite recursion detected in policy')",
                        "break the loop: a policy may query another table only if that table's read policies "
                        "do not query back, e.g. let users read their own rows with `user_id = auth.uid()`",
                    )
    return None


def _path_back(home: str, path: list[str], edges: dict[str, set[str]], seen: set[str]) -> list[str] | None:
    """A path from ``path[-1]`` back to ``home`` along ``edges``, depth-first."""
    if path[-1] == home:
        return path
    if path[-1] in seen:
        return None
    seen.add(path[-1])
    for target in sorted(edges.get(path[-1], ())):
        found = _path_back(home, [*path, target], edges, seen)
        if found is not None:
            return found
    return None
