"""A Kubernetes API for the operator's tests: kmock's emulator made to behave like an apiserver.

kmock 0.8 (pinned) lacks what kopf relies on: uid, resourceVersion, generation and
creationTimestamp stamping, the status subresource split, resourceVersion-aware
lists and watches, 422 on a failed JSON-patch test, generateName. The subclass
below adds them by overriding the emulator's private ``_handle`` (hence the pin).
Used by tests/e2e/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import kopf
from kmock._internal import dicts as kmock_dicts  # the very merge-/JSON-patch code kmock applies

from kliv.specs import GROUP, KINDS, VERSION

NS = "default"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message)  # rendered as a K8s Status


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """
    KubernetesEmulator + what a real apiserver does to metadata on writes & to watch/list versions.

    Hook: ``_handle()``, the method where KubernetesEmulator itself stores objects before
    rendering the response. Every write (POST/PATCH/PUT/DELETE to a K8s URL) is serialized under
    our own lock; we compute the resulting object ourselves (patch + status-subresource rules +
    stamps) and swap the request's parsed body for an equivalent one: for patches, a JSON-patch
    that replaces the whole object (``[{'op': 'replace', 'path': '', 'value': new}]``). kmock
    then stores it and broadcasts the watch event with the stamped metadata in one go.

    NB: the swap is done IN PLACE (``object.__setattr__`` on the frozen attrs ``Request``):
    kmock matches reactions/fallbacks to requests BY IDENTITY against its request log, so an
    ``attrs.evolve()``-d copy matches nothing (500 "Undefined server behaviour").
    Consequently, a logged write's ``.data`` shows the stamped body;
    ``.body``/``.text`` keep the raw bytes as sent by the client.
    """

    _rv: int = attrs.field(default=0, init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _in_flight: set[int] = attrs.field(factory=set, init=False)
    # Namespaces that exist (kopf with its default settings serves only existing namespaces).
    namespaces: set[str] = attrs.field(factory=lambda: {"default"}, init=False)

    # kmock finds the reaction for a request by scanning its whole request log
    # (``request in view`` is an identity search through every logged request, each one
    # re-filtered by every view), so each request costs O(requests so far): a 220-object
    # burst spent 90 % of its time there. Only requests still being served (waiting for the
    # write lock, open watches) are matched again, so the log keeps just those.
    # Consequence: ``emulator.requests`` is not a history here; assert on objects instead.
    REQUEST_LOG_SLACK = 32

    def _trim_request_log(self) -> None:
        log = self._requests
        if len(log) > len(self._in_flight) + self.REQUEST_LOG_SLACK:
            log[:] = [request for request in log if id(request) in self._in_flight]

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock 0.8 fails to parse the cluster-wide namespace list (`/api/v1/namespaces`), which
        # kopf reads when it runs with its default settings (`kliv operator` as a process): the
        # namespaces of the objects stored so far, and a watch that stays quiet until it times out.
        if raw_request.path.rstrip("/") == "/api/v1/namespaces":
            if raw_request.query.get("watch") in ("true", "1"):
                await asyncio.sleep(min(float(raw_request.query.get("timeoutSeconds", "5")), 5.0))
                return aiohttp.web.Response(status=200, content_type="application/json", text="")
            names = sorted(self.namespaces | {str(ns) for (_, ns, _) in self.objects if ns})
            items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names]
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "NamespaceList",
                    "metadata": {"resourceVersion": str(self._rv)},
                    "items": items,
                }
            )
        return await super().__call__(raw_request)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo | None:
        # NOT self.resources.get(): ResourcesArray.__getitem__ auto-creates missing entries.
        return self.resources[resource] if resource in self.resources else None  # noqa: SIM401

    def _has_status(self, resource: kmock.resource) -> bool:
        info = self._info(resource)
        return info is not None and "status" in info.subresources

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self._in_flight.add(id(request))
        try:
            self._trim_request_log()
            return await self._serve(request)
        finally:
            self._in_flight.discard(id(request))

    async def _serve(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        writes = {kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE}
        is_put = request.method == kmock.method.PUT and request.name is not None
        if request.resource is None or (request.action not in writes and not is_put):
            return await super()._handle(request)  # reads & watches: untouched, unlocked
        async with self._write_lock:
            if request.action == kmock.action.CREATE:
                object.__setattr__(request, "data", self._stamp_create(request))
            elif request.action == kmock.action.UPDATE or is_put:
                object.__setattr__(request, "data", self._stamp_update(request, is_put=is_put))
                object.__setattr__(request, "action", kmock.action.UPDATE)  # PUT: via kmock's PATCH path
            elif request.action == kmock.action.DELETE:
                self._stamp_delete(request)
            return await super()._handle(request)

    def _stamp_create(self, request: kmock.Request) -> dict[str, Any]:
        assert request.resource is not None
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "The body must be a JSON object.")
        data = copy.deepcopy(request.data)
        meta = data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):  # kopf's Events use generateName
            # Like the apiserver: a random suffix, drawn again when taken (1,000s of Events
            # in a burst made 5-hex-digit names collide into 409s).
            while True:
                meta["name"] = meta["generateName"] + secrets.token_hex(4)
                key = (request.resource, request.namespace or meta.get("namespace"), meta["name"])
                if key not in self.objects:
                    break
        if not meta.get("name"):
            raise _error(422, "Invalid", "metadata.name or metadata.generateName is required")
        if request.namespace:
            meta["namespace"] = request.namespace
        info = self._info(request.resource)
        if info is not None and info.kind:
            group, version = request.resource.group, request.resource.version
            data.setdefault("apiVersion", f"{group}/{version}" if group else version)
            data.setdefault("kind", info.kind)
        if self._has_status(request.resource):
            data.pop("status", None)  # ignored on create when /status is a subresource
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), creationTimestamp=_now(), generation=1)
        return data

    def _stamp_update(self, request: kmock.Request, *, is_put: bool) -> Any:
        assert request.resource is not None
        assert request.name is not None
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        if request.subresource not in (None, "status"):
            return request.data  # e.g. /scale: leave it to kmock as is

        old: dict[str, Any] = copy.deepcopy(self.objects[key].raw)
        old_meta = old.get("metadata", {})
        if is_put:  # a full replacement with optimistic concurrency
            if not isinstance(request.data, dict):
                raise _error(400, "BadRequest", "The body must be a JSON object.")
            new = copy.deepcopy(request.data)
            sent_rv = new.get("metadata", {}).get("resourceVersion")
            if sent_rv is not None and sent_rv != old_meta.get("resourceVersion"):
                raise _error(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
        else:  # merge-patch (a dict) or JSON-patch (a list): kopf's `test` op on resourceVersion is checked here
            try:
                new = copy.deepcopy(dict(kmock_dicts.patch_dict(old, request.data)))
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
                raise _error(422, "Invalid", f"JSON-patch failed: {e}") from e  # kopf expects 422

        # The status subresource: /status changes only the status; the main endpoint never does.
        if self._has_status(request.resource):
            if request.subresource == "status":
                new = {**old, "status": new.get("status")}
                if new["status"] is None:
                    del new["status"]
            else:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]

        # System-owned metadata cannot be changed by clients.
        new_meta = new.setdefault("metadata", {})
        for field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ):
            if field in old_meta:
                new_meta[field] = old_meta[field]
            else:
                new_meta.pop(field, None)

        if new != old:  # a no-op write keeps the resourceVersion (as a real apiserver does)

            def content(obj: dict[str, Any]) -> dict[str, Any]:
                return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}

            if content(new) != content(old):  # spec (or any other non-meta/non-status field) changed
                new_meta["generation"] = int(old_meta.get("generation", 0)) + 1
            new_meta["resourceVersion"] = self._next_rv()
        return [{"op": "replace", "path": "", "value": new}]

    def _stamp_delete(self, request: kmock.Request) -> None:
        # kmock either sets deletionTimestamp (finalizers present: MODIFIED) or deletes (DELETED);
        # both events must carry a NEW resourceVersion, else the watch's rv filter drops them.
        # Pre-bump it in the stored latest version: assign a NEW metadata dict (the old one is
        # shared with already-queued watch events); `.raw` gives plain dicts, not kmock's views.
        assert request.resource is not None
        assert request.name is not None
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            meta = dict(self.objects[key].raw.get("metadata", {}))
            if not meta.get("deletionTimestamp"):
                meta["resourceVersion"] = self._next_rv()
                self.objects[key]["metadata"] = meta

    # Reads: lists report the real current resourceVersion; watches honour ?resourceVersion=.
    # kmock's own watch replays ALL existing objects as ADDED and ignores ?resourceVersion=, so
    # kopf (list, then watch since the list's rv) sees stale duplicates: it retries its finalizer
    # patch with the stale rv, gets a 422, keeps the leftover patch, and then SKIPS the on.create
    # handler on the next (consistent) event -- the object is never handled.
    # kmock also subscribes to its event bus only after the replay (events in between are lost).

    async def _serve_list(self, request: kmock.Request) -> Any:
        async with self._write_lock:  # no half-done write between the snapshot and the rv
            result: Any = await super()._serve_list(request)
            result["metadata"]["resourceVersion"] = str(self._rv)
        return result

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        assert request.resource is not None
        yield b""  # send the headers now (as kmock does)
        since_str = request.params.get("resourceVersion", "")
        since = int(since_str) if since_str.isdigit() else 0

        def wanted(obj: dict[str, Any]) -> bool:  # labelSelector/fieldSelector could be added here
            meta = obj.get("metadata", {})
            rv = meta.get("resourceVersion", "")
            return (
                (request.namespace is None or meta.get("namespace") == request.namespace)
                and (request.name is None or meta.get("name") == request.name)
                and (not rv.isdigit() or int(rv) > since)
            )

        bus = self._buses[request.resource]
        async with self._lock:  # kmock's own storage lock: snapshot + bus mark atomically
            marker = await bus.mark()
            snapshot = [
                obj.raw for (res, _, _), obj in self.objects.items() if res == request.resource and not obj.deleted
            ]
        try:
            for raw in snapshot:
                if wanted(raw):
                    yield {"type": "ADDED", "object": raw}
            async for event in bus.stream(since=marker):
                if wanted(event.get("object", {})):
                    yield event
        finally:
            await bus.unmark(marker)


@contextlib.asynccontextmanager
async def emulator_running() -> AsyncIterator[ApiServerEmulator]:
    emulator = ApiServerEmulator()
    emulator.resources.load_bundled()  # built-ins: core v1 incl. events
    for model in KINDS.values():
        emulator.resources[f"{GROUP}/{VERSION}/{model.PLURAL}"] = kmock.ResourceInfo(
            kind=model.KIND,
            singular=model.KIND.lower(),
            namespaced=True,
            verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            subresources={"status"},
        )
    # kopf's peering objects (deploy/peering.yaml): cluster-scoped, status in the main resource.
    emulator.resources["zalando.org/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
        kind="ClusterKopfPeering",
        singular="clusterkopfpeering",
        namespaced=False,
        verbs={"create", "get", "list", "patch", "watch"},
    )
    async with emulator, kmock.Server(emulator):
        yield emulator


def make_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.INFO  # (default) kopf.info()/kopf.event() -> core v1 Events
    settings.scanning.disabled = True  # no CRD/namespace scanning against the emulator
    settings.networking.error_backoffs = [0.1, 0.2, 0.5]
    settings.watching.reconnect_backoff = 0.1
    settings.queueing.idle_timeout = 1.0  # default 5 s
    settings.queueing.exit_timeout = 1.0  # default 2 s
    settings.background.cancellation_polling = 0.1  # default 60 s (daemons/timers only)
    settings.process.ultimate_exiting_timeout = None  # else: SIGKILL of pytest 10 min after a bare cancel
    return settings


@contextlib.asynccontextmanager
async def operator_in_thread(
    registry: kopf.OperatorRegistry, peering: tuple[str, int] | None = None
) -> AsyncIterator[None]:
    """
    kopf.run() in its own thread & event loop: immune to the "hung tasks" issue above.
    Handlers then run in kopf's thread: talk to them via the API or thread-safe objects.
    ``peering``: (peering object name, priority) instead of standalone.
    """
    stop_flag, ready_flag = threading.Event(), threading.Event()
    settings = make_settings()
    settings.peering.lifetime = 3  # seconds a silent peer counts as alive (default 60)
    mode: dict[str, Any] = (
        {"standalone": True} if peering is None else {"peering_name": peering[0], "priority": peering[1]}
    )
    thread = threading.Thread(
        target=kopf.run,
        name="kopf",
        daemon=True,
        kwargs={
            "registry": registry,
            "settings": settings,
            **mode,
            "clusterwide": True,
            "stop_flag": stop_flag,
            "ready_flag": ready_flag,
        },
    )
    thread.start()
    assert await asyncio.to_thread(ready_flag.wait, 10)
    try:
        yield
    finally:
        stop_flag.set()
        await asyncio.to_thread(thread.join, 15)  # never block the loop: the emulator lives in it
        assert not thread.is_alive()


async def eventually(fn: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {fn}")
        await asyncio.sleep(0.05)
