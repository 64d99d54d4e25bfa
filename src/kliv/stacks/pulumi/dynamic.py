"""kliv's Pulumi dynamic providers: one per kind no Pulumi provider manages.

Instantiated once, at import, into :data:`PROVIDERS`; the program (:mod:`.program`)
hands them to ``pulumi.dynamic.Resource``, which pickles them with dill. They are
classes of this importable module and hold no attributes, so dill pickles them by
reference (module path and class name, a few dozen bytes), never by value: the
dynamic-provider process imports ``kliv`` and runs this code, whatever the program's
process had in memory. Everything a call needs comes in its inputs: the spec
documents, and the connection (a secret input, never an attribute).

The engine calls them over Pulumi's provider protocol (Check, Diff, Create, Read,
Update, Delete), from its dynamic-provider process; each call is carried out by
:func:`.converging.make`, which wraps the native machinery for the one resource.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pulumi.dynamic

from kliv.stacks.pulumi import converging

_KEPT = ("ref", "specHash", "documents")  # the inputs that are the resource's desired state
# Kept in the outputs too (Pulumi keeps it secret, as its input was): Delete is given the outputs only.
_CARRIED = (*_KEPT, "connection")


class KlivProvider(pulumi.dynamic.ResourceProvider):
    """A kind's dynamic provider; subclasses only name the kind."""

    kind: ClassVar[str] = ""
    serialize_as_secret_always = False  # it captures nothing secret: it is pickled by reference

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.CheckResult:
        failures = []
        for key in ("ref", "documents", "connection"):
            if key not in news:
                failures.append(pulumi.dynamic.CheckFailure(key, f"the input `{key}` is missing"))
        if not failures:
            try:
                converging.group_of(list(news["documents"]))
            except Exception as exc:  # any refusal is reported on the input, with its message
                failures.append(pulumi.dynamic.CheckFailure("documents", str(exc)))
        return pulumi.dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        changed = [key for key in _KEPT if olds.get(key) != news.get(key)]
        # A resource's physical identity is its ref: another ref is another resource (replace).
        replaces = ["ref"] if olds.get("ref") != news.get("ref") else []
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        made = converging.make(self.kind, props, None)
        return pulumi.dynamic.CreateResult(str(props["ref"]), {**_desired(props), **made.outs()})

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        """A refresh: the state as it is, unless reality moved from the spec (drift), which
        marks the inputs so that the next diff updates the resource (the native change)."""
        if not {"ref", "documents", "connection"} <= props.keys():
            return pulumi.dynamic.ReadResult(id_, props)
        seen = converging.make(self.kind, props, props, dry_run=True)
        if seen.change.action == "noop":
            return pulumi.dynamic.ReadResult(id_, props)
        drifted = {**props, "specHash": f"drifted:{props.get('specHash', '')}"}
        return pulumi.dynamic.ReadResult(id_, drifted, inputs=_desired(drifted))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        made = converging.make(self.kind, news, olds)
        return pulumi.dynamic.UpdateResult({**_desired(news), **made.outs()})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        converging.make(self.kind, props, props, remove=True)


def _desired(props: dict[str, Any]) -> dict[str, Any]:
    return {key: props[key] for key in _CARRIED if key in props}


class ProjectProvider(KlivProvider):
    kind = "Project"


class TableProvider(KlivProvider):
    kind = "Table"


class TablePolicyProvider(KlivProvider):
    kind = "TablePolicy"


class DatabaseFunctionProvider(KlivProvider):
    kind = "DatabaseFunction"


class TriggerProvider(KlivProvider):
    kind = "Trigger"


class EmailTemplateProvider(KlivProvider):
    kind = "EmailTemplate"


class BucketProvider(KlivProvider):
    kind = "Bucket"


class ProjectSecretProvider(KlivProvider):
    kind = "ProjectSecret"


class FunctionProvider(KlivProvider):
    kind = "Function"


PROVIDERS: dict[str, KlivProvider] = {
    cls.kind: cls()
    for cls in (
        ProjectProvider,
        TableProvider,
        TablePolicyProvider,
        DatabaseFunctionProvider,
        TriggerProvider,
        EmailTemplateProvider,
        BucketProvider,
        ProjectSecretProvider,
        FunctionProvider,
    )
}
