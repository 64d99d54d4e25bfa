"""The functions' and triggers' part of a project database's plan (pure).

A mixin of :class:`kliv.stacks.postgres.diffing._Differ`. A changed body (or volatility,
security, exposure) is ``CREATE OR REPLACE``, safe; a changed signature or result is the drop and
create it is, with the policies and triggers that use the function dropped before it and made
again after it, in the same transaction; a changed trigger is ``CREATE OR REPLACE TRIGGER``. A
function or trigger whose spec is gone is dropped; one that is not kliv's is left alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kliv.specs.base import checked_expression
from kliv.stacks.errors import EngineError
from kliv.stacks.postgres.changing import DROP_FUNCTIONS, DROP_TRIGGERS, FUNCTIONS, TRIGGERS, _Resource
from kliv.stacks.postgres.desired import DatabaseState, PolicyState
from kliv.stacks.postgres.naming import quote
from kliv.stacks.postgres.routines import FunctionState, in_call_order

if TYPE_CHECKING:
    from kliv.stacks.postgres.catalog import ObservedDatabase
    from kliv.stacks.postgres.diffing import Applied, ServerState


class RoutineDiffing:
    """The differ's function and trigger methods, over the state ``_Differ`` keeps."""

    desired: DatabaseState
    observed: ObservedDatabase
    server: ServerState
    applied: Applied
    rebuilt: set[str]  # functions dropped and created again: what uses them is made again too

    def resource(self, ref: str, exists: bool) -> _Resource:
        raise NotImplementedError

    def unchanged(self, key: str, desired_text: str) -> bool:
        raise NotImplementedError

    def _functions(self) -> None:
        shadowed = sorted(set(self.desired.functions) & self.server.builtin_functions)
        if shadowed:
            raise EngineError(
                f"function name `{shadowed[0]}` is a built-in function's on this server: pg_catalog comes first "
                "in every search path, so calls would never reach the project's function",
                "give the DatabaseFunction another `name`",
            )
        for function in in_call_order(self.desired.functions):
            name = function.name
            current = self.observed.functions.get(name)
            resource = self.resource(function.resource, current is not None)
            if current is not None and current.signature == function.signature:
                if self.unchanged(f"function:{name}", function.text):
                    continue
                self._create(function, resource, f"replace function {name} (same signature: CREATE OR REPLACE)")
                continue
            if current is not None:
                resource.add(
                    f"drop function {name}({current.identity}) to change its signature or result "
                    "(what uses it is made again)",
                    f"DROP FUNCTION public.{quote(name)}({current.identity})",
                    DROP_FUNCTIONS,
                )
                self.rebuilt.add(name)
            self._create(function, resource, f"create function {name}({function.identity})")
        present = {f.resource: f.name for f in self.desired.functions.values()}
        for ref, record in self.applied.resources.items():
            if record.kind != "DatabaseFunction" or present.get(ref) == record.physical:
                continue
            resource = self.resource(ref, True)
            if ref not in present:
                resource.action = "delete"
            # Gone, or renamed (a new `spec.name`): the function of the old name goes, grants and all.
            current = self.observed.functions.get(record.physical)
            if current is not None and record.physical not in self.desired.functions:
                resource.add(
                    f"drop function {record.physical}({current.identity})",
                    f"DROP FUNCTION IF EXISTS public.{quote(record.physical)}({current.identity})",
                    DROP_FUNCTIONS,
                )

    def _create(self, function: FunctionState, resource: _Resource, why: str) -> None:
        for statement in function.statements:
            resource.add(why, statement, FUNCTIONS)

    def calls_rebuilt(self, policy: PolicyState) -> bool:
        """Whether the policy calls a function this plan drops and creates (then it is made again)."""
        if not self.rebuilt:
            return False
        for text in (policy.using, policy.with_check):
            if text is not None and any(c[0] in self.rebuilt for c in checked_expression(text, "policy").calls):
                return True
        return False

    def _triggers(self) -> None:
        for (table, name), trigger in self.desired.triggers.items():
            current = self.observed.triggers.get((table, name))
            resource = self.resource(trigger.resource, current is not None)
            again = trigger.function in self.rebuilt
            if current is not None and not again and self.unchanged(f"trigger:{table}.{name}", trigger.text):
                continue
            if current is not None and again:
                resource.add(f"drop trigger {name} on {table} (its function is made again)", trigger.drop(),
                             DROP_TRIGGERS)  # fmt: skip
            verb = "replace" if current is not None and not again else "create"
            resource.add(f"{verb} trigger {name} on {table}", trigger.create, TRIGGERS)
        desired = {(t.table, t.name): t.resource for t in self.desired.triggers.values()}
        for ref, record in self.applied.resources.items():
            if record.kind != "Trigger":
                continue
            table, _, name = record.physical.rpartition(".")
            if desired.get((table, name)) == ref or (table, name) not in self.observed.triggers:
                continue  # still declared, or already gone (with its table)
            resource = self.resource(ref, True)
            if ref not in desired.values():
                resource.action = "delete"
            target = table if table == "auth.users" else quote(table)
            resource.add(f"drop trigger {name} on {table}", f"DROP TRIGGER IF EXISTS {quote(name)} ON {target}",
                         DROP_TRIGGERS)  # fmt: skip
