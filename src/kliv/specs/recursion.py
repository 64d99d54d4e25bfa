"""Row-level-security policies that would recurse forever in Postgres.

A policy on ``memberships`` that reads ``memberships`` in an ``EXISTS`` sub-query, or
through an invoker DatabaseFunction it calls (Supabase's classic ``is_member()``), or ``orgs``
reading ``memberships`` reading ``orgs``, makes every query fail
with "infinite recursion detected in policy". Postgres only finds out at query
time; :func:`recursive_policies` (called by :mod:`kliv.specs.resolving`) finds
it at validation time, per role, since only the policies of the querying role
are expanded (``service_role`` bypasses RLS and never recurses).
"""

from __future__ import annotations

from collections import defaultdict, deque

from kliv.specs.base import checked_expression
from kliv.specs.errors import Problem
from kliv.specs.parsing import problem_for
from kliv.specs.projects import ProjectSpecs, Spec
from kliv.specs.table_policy import TablePolicy

_RLS_ROLES = ("anon", "authenticated")
_READ_COMMANDS = ("select", "all")


def _references(policy: TablePolicy, functions: dict[str, set[str]]) -> dict[str, set[str]]:
    """Tables read by each expression field of ``policy``, through the functions it calls too."""
    found = {}
    for field, text in (("using", policy.spec.using), ("withCheck", policy.spec.with_check)):
        if text is not None:
            expression = checked_expression(text, "policy")
            found[field] = expression.tables.union(*(functions.get(c[0], set()) for c in expression.calls))
    return found


def _function_reads(group: ProjectSpecs) -> dict[str, set[str]]:
    """Tables each DatabaseFunction reads as its caller, so under the caller's RLS: an invoker's
    body and the invokers it calls (a definer runs as the owner role, which bypasses RLS)."""
    functions = {spec.resource.function_name: spec.resource for spec in group.database_functions}
    reads: dict[str, set[str]] = {}

    def read(name: str, seen: frozenset[str]) -> set[str]:
        function = functions.get(name)
        if function is None or function.spec.security == "definer" or name in seen:
            return set()
        if name not in reads:
            found = {use.name for use in function.body.tables}
            for use in function.body.functions:
                found |= read(use.name, seen | {name})
            reads[name] = found
        return reads[name]

    for name in functions:
        read(name, frozenset())
    return reads


def recursive_policies(group: ProjectSpecs) -> list[Problem]:
    """One problem per read policy that closes a loop of policy expansions."""
    rls_tables = {t.resource.table_name for t in group.tables if t.resource.spec.row_level_security}
    functions = _function_reads(group)
    # role -> table -> tables its read policies query (what a sub-query over the table expands to)
    reads: dict[str, dict[str, set[str]]] = {role: defaultdict(set) for role in _RLS_ROLES}
    for spec in group.policies:
        policy = spec.resource
        if policy.spec.command in _READ_COMMANDS and policy.spec.table in rls_tables:
            for role in set(policy.spec.roles) & set(_RLS_ROLES):
                for tables in _references(policy, functions).values():
                    reads[role][policy.spec.table] |= tables & rls_tables
    components = {role: _components(edges) for role, edges in reads.items()}
    problems = []
    for spec in group.policies:
        problem = _loop(spec, reads, components, rls_tables, functions)
        if problem is not None:
            problems.append(problem)
    return problems


def _loop(
    spec: Spec[TablePolicy],
    reads: dict[str, dict[str, set[str]]],
    components: dict[str, dict[str, int]],
    rls_tables: set[str],
    functions: dict[str, set[str]],
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
    for field, tables in _references(policy, functions).items():
        for role in sorted(set(policy.spec.roles) & set(_RLS_ROLES)):
            component = components[role]
            for start in sorted(tables & rls_tables):
                if start != table and component.get(start) != component.get(table):
                    continue
                chain = " → ".join(f"`{t}`" for t in [table, *_path(start, table, reads[role])])
                return problem_for(
                    spec.document,
                    f"/spec/{field}",
                    f"for role {role} this policy would recurse forever: {chain} "
                    "(Postgres fails every such query with 'infinite recursion detected in policy')",
                    "break the loop: a policy may query another table only if that table's read policies "
                    "do not query back, e.g. let users read their own rows with `user_id = auth.uid()`, or "
                    "make the function it calls `security: definer`",
                )
    return None


def _path(start: str, goal: str, edges: dict[str, set[str]]) -> list[str]:
    """Shortest path from ``start`` to ``goal`` (breadth-first; known to exist)."""
    parents: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        if current == goal:
            break
        for target in sorted(edges.get(current, ())):
            if target not in parents:
                parents[target] = current
                queue.append(target)
    path: list[str] = []
    node: str | None = goal
    while node is not None:
        path.append(node)
        node = parents.get(node)
    return path[::-1]


def _components(edges: dict[str, set[str]]) -> dict[str, int]:
    """Strongly connected component id of every table (Tarjan, iterative: chains can be long)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    component: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = index[node]
                    if member == node:
                        break
    return component
