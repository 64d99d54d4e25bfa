"""Running a kliv Pulumi program without the Pulumi CLI: what it registers, as data.

For kliv's own tests and its users' (as ``kopf.testing`` is for kopf's): :func:`register`
runs a declared program under ``pulumi.runtime.set_mocks`` with a monitor that records
each registration as the engine would receive it — type, name, inputs (secret ones
marked), ``protect``, ``retain_on_delete``, dependencies and provider — and
:func:`implied_events` turns a program (and the one before it) into the engine-event
stream a preview of it would emit, for the preview translation (:mod:`.previewing`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pulumi
import pulumi.runtime
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor, Mocks

from kliv.stacks.pulumi.declaring import Program
from kliv.stacks.pulumi.program import Connection, run

PROJECT = "kliv"


@dataclasses.dataclass(frozen=True)
class Registered:
    """One resource as the engine's monitor received it."""

    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    secret_inputs: frozenset[str]
    protect: bool
    retain_on_delete: bool
    dependencies: tuple[str, ...]  # URNs
    provider: str  # `urn::id` of its explicit provider; "" for a provider itself
    secret_outputs: frozenset[str] = frozenset()  # additional_secret_outputs


class _Echo(Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


class _Recording(MockMonitor):
    def __init__(self) -> None:
        super().__init__(_Echo())
        self.registered: list[Registered] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
        if request.type != "pulumi:pulumi:Stack":
            secret = frozenset(key for key, value in request.object.fields.items() if _is_secret(value))
            self.registered.append(
                Registered(
                    type=request.type,
                    name=request.name,
                    urn=self.make_urn(request.parent, request.type, request.name),
                    inputs=rpc.deserialize_properties(request.object),
                    secret_inputs=secret,
                    protect=bool(request.protect),
                    retain_on_delete=bool(request.retainOnDelete),
                    dependencies=tuple(request.dependencies),
                    provider=request.provider,
                    secret_outputs=frozenset(request.additionalSecretOutputs),
                )
            )
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]


def _is_secret(value: Any) -> bool:
    """Whether a serialized property is a secret (a struct carrying Pulumi's secret signature)."""
    if value.WhichOneof("kind") != "struct_value":
        return False
    signature = value.struct_value.fields.get(rpc._special_sig_key)
    return signature is not None and signature.string_value == rpc._special_secret_sig


def register(program: Program, connection: Connection) -> list[Registered]:
    """Run ``program`` under mocks; every resource it registered, in order."""
    # The SDK asks for the thread's current event loop (asyncio.get_event_loop): give it one of its
    # own, whatever ran in this thread before (an asyncio test closes and unsets its loop).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        monitor = _Recording()
        pulumi.runtime.set_mocks(_Echo(), project=PROJECT, stack=program.stack, preview=True, monitor=monitor)

        @pulumi.runtime.test  # type: ignore[untyped-decorator]
        def registering() -> None:
            run(program, connection)

        registering()
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return monitor.registered


def implied_events(program: Program, before: Program | None = None, updated: frozenset[str] = frozenset(),
                   replaced: frozenset[str] = frozenset()) -> list[dict[str, Any]]:  # fmt: skip
    """The engine events a preview of ``program`` emits from the state ``before`` left: creates of
    what is new, ``updated``/``replaced`` (logical names) as said, deletes of what is gone (in
    reverse order), then the summary. Replaces are emitted as Pulumi does: create-replacement and
    delete-replaced around the replace step (delete first when delete-before-replace)."""
    events: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    old = before.by_name() if before else {}

    def emit(op: str, declared: Any, **extra: Any) -> None:
        counts[op] = counts.get(op, 0) + 1
        metadata = {"op": op, "urn": declared.urn(program.stack, PROJECT), "type": declared.type, "provider": "",
                    "old": {"protect": declared.protect, "retainOnDelete": declared.retain_on_delete},
                    **extra}  # fmt: skip
        events.append({"sequence": len(events) + 1, "resourcePreEvent": {"metadata": metadata, "planning": True}})

    for declared in program.resources:
        if declared.name not in old:
            emit("create", declared)
        elif declared.name in replaced:
            emit("delete-replaced", declared)
            emit("replace", declared, keys=["ref"])
            emit("create-replacement", declared, keys=["ref"])
        elif declared.name in updated:
            emit("update", declared, diffs=["documents", "specHash"])
        else:
            emit("same", declared)
    names = {d.name for d in program.resources}
    for declared in reversed(before.resources if before else ()):
        if declared.name not in names:
            emit("delete", declared)
    events.append({"sequence": len(events) + 1, "summaryEvent": {"resourceChanges": counts}})
    return events
