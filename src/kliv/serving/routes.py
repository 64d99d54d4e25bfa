"""The functions ``kliv serve`` answers for, kept in step with the control database.

Called by the gateway (which route serves a request, the project's JWT secret) and the
scheduler. At start, and again after any lost connection, it reads every active version
(:func:`kliv.stacks.functions.artifacts.served`); then it follows the ``kliv_functions``
channel, on which every deploy, rollback and retire is announced when it commits, and
re-reads only the function named. A switch to another version starts the new version
first when the old one was running (no request meets a cold start the deploy could have
spared it), routes new requests to it, and drains the old: requests already inside it
finish there, then it stops. Control-database reads that use the synchronous store
(sources, sealed secrets) run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import structlog

from kliv.serving.instances import Instance, Spec
from kliv.serving.recording import Recorder
from kliv.stacks.functions import artifacts
from kliv.stacks.secrets import jwts, store
from kliv.stacks.secrets.keys import Keyring

log = structlog.get_logger("kliv.serving")
IDLE_SECONDS = 60.0
RECONNECT_SECONDS = 1.0
SECRET_SECONDS = 30.0
READ_AHEAD_BYTES = 256 * 1024  # sources kept in memory ahead of their first start: small ones,
READ_AHEAD_TOTAL = 64 * 1024 * 1024  # up to this much in all

RouteKey = tuple[str, str, str]  # namespace, project, route


class SwitchedError(LookupError):
    """The route's version was switched away while its instance was being made."""


@dataclasses.dataclass
class Route:
    """One served function: its active version and the instance that runs it (once called)."""

    active: artifacts.Active
    version: artifacts.Version
    instance: Instance | None = None
    making: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)

    @property
    def key(self) -> RouteKey:
        return (self.active.namespace, self.active.project, self.active.route)

    @property
    def auth(self) -> str:
        return str(self.version.settings.get("auth", "jwt"))

    @property
    def schedule(self) -> str | None:
        found = self.version.settings.get("schedule")
        return str(found) if found else None


class Routes:
    """The routing table and the instances behind it."""

    def __init__(
        self,
        control_url: str,
        keyring: Keyring | None,
        recorder: Recorder,
        idle_seconds: float = IDLE_SECONDS,
        root: Path | None = None,
    ) -> None:
        self.control_url = control_url
        self.keyring = keyring
        self.recorder = recorder
        self.idle_seconds = idle_seconds
        self.root = root or Path(tempfile.mkdtemp(prefix="kliv-serve-"))
        self.routes: dict[RouteKey, Route] = {}
        self.names: dict[tuple[str, str, str], RouteKey] = {}  # (namespace, project, name) -> route key
        self.draining: set[Instance] = set()
        self.instances: set[Instance] = set()  # every instance made: all stopped at shutdown
        self._jwt_secrets: dict[tuple[str, str], tuple[float, bytes]] = {}
        self._sources: dict[str, str] = {}  # artifact sha256 -> source: read ahead, off the cold path
        self._sync: psycopg.Connection[Any] | None = None
        self._sync_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.loaded = asyncio.Event()

    # -- reading the control database -----------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._sync is None or self._sync.closed:
            self._sync = psycopg.connect(self.control_url, autocommit=True)
        return self._sync

    async def _read(self, work: Any, *args: Any) -> Any:
        """``work(connection, *args)`` on the synchronous connection, in a thread."""
        async with self._sync_lock:
            return await asyncio.to_thread(lambda: work(self._connection(), *args))

    async def jwt_secret(self, namespace: str, project: str) -> bytes:
        """The project's JWT secret, read again after :data:`SECRET_SECONDS` (a project dropped and made
        again has a new one: the old keys must stop working)."""
        key = (namespace, project)
        found = self._jwt_secrets.get(key)
        now = time.monotonic()
        if found is None or now - found[0] > SECRET_SECONDS:
            if self.keyring is None:
                raise LookupError("KLIV_SECRET_KEY is not set: kliv serve cannot read the projects' JWT secrets")
            keyring = self.keyring
            secret = await self._read(lambda c: jwts.ensure(c, keyring, namespace, project))
            self._jwt_secrets[key] = found = (now, secret)
        return found[1]

    async def spec_of(self, route: Route) -> Spec:
        """The version's code and, decrypted in memory, its secrets' values."""
        version, settings = route.version, route.version.settings
        names = [str(name) for name in settings.get("secrets", [])]

        def read(control: psycopg.Connection[Any]) -> tuple[str | None, dict[str, str]]:
            code = self._sources.get(version.artifact) or artifacts.source(control, version.artifact)
            values = {}
            for name in names:
                if self.keyring is None:
                    raise LookupError("KLIV_SECRET_KEY is not set: the function's secrets cannot be read")
                values[name] = store.reveal(control, self.keyring, version.namespace, version.project, name)
            return code, values

        if names or version.artifact not in self._sources:
            code, values = await self._read(read)
        else:
            code, values = self._sources[version.artifact], {}
        if code is None:
            raise LookupError(f"the artifact of {version.name} version {version.version} is missing")
        env = {str(k): str(v) for k, v in dict(settings.get("env", {})).items()}
        return Spec(version.namespace, version.project, version.name, version.version, version.artifact, code, env,
                    values,
                    float(settings.get("timeoutSeconds", 10)), int(settings.get("memoryMiB", 128)))  # fmt: skip

    # -- the table ---------------------------------------------------------------------------------

    def lookup(self, namespace: str, project: str, route: str) -> Route | None:
        return self.routes.get((namespace, project, route))

    def log_sink(self, spec: Spec, stream: str, message: str) -> None:
        self.recorder.line(spec.namespace, spec.project, spec.name, spec.version, stream, message)

    async def instance(self, route: Route, current: bool = True) -> Instance:
        """The route's instance, made once however many requests arrive together. ``current``: the
        route must still be in the table once made (SwitchedError otherwise: ask the table again);
        a version being warmed before it is routed to is not yet."""
        if route.instance is None:
            async with route.making:
                if route.instance is None:
                    made = Instance(await self.spec_of(route), self.root, self.log_sink)
                    self.instances.add(made)
                    route.instance = made
                    if current and self.routes.get(route.key) is not route:  # switched away meanwhile
                        self._drain(route)
                        raise SwitchedError(route.key)
        assert route.instance is not None
        return route.instance

    async def load_all(self) -> None:
        found = await self._read(artifacts.served)
        wanted = list({version.artifact for _, version in found} - set(self._sources))
        if wanted:
            query = ("SELECT sha256, source FROM functions.artifacts WHERE sha256 = ANY(%s) "
                     "AND octet_length(source) <= %s")  # fmt: skip
            rows = await self._read(lambda c: c.execute(query, [wanted, READ_AHEAD_BYTES]).fetchall())
            for sha, code in rows:
                if sum(len(kept) for kept in self._sources.values()) > READ_AHEAD_TOTAL:
                    break  # the rest is read at its first start
                self._sources[str(sha)] = str(code)
        seen = set()
        for active, version in found:
            seen.add((active.namespace, active.project, active.name))
            await self._put(active, version)
        for name in set(self.names) - seen:
            await self._remove(name)
        self.loaded.set()

    async def refresh(self, namespace: str, project: str, name: str) -> None:
        def read(control: psycopg.Connection[Any]) -> tuple[artifacts.Active, artifacts.Version] | None:
            active = artifacts.active(control, namespace, project, name)
            if active is None or active.retired:
                return None
            version = next((v for v in artifacts.versions(control, namespace, project, name)
                            if v.version == active.version), None)  # fmt: skip
            return (active, version) if version is not None else None

        found = await self._read(read)
        if found is None:
            await self._remove((namespace, project, name))
        else:
            await self._put(*found)

    async def _put(self, active: artifacts.Active, version: artifacts.Version) -> None:
        name = (active.namespace, active.project, active.name)
        key = (active.namespace, active.project, active.route)
        old_key = self.names.get(name)
        old = self.routes.get(old_key) if old_key else None
        if old is not None and old.version.version == version.version and old_key == key:
            old.active = active
            return
        fresh = Route(active, version)
        if old is not None and old.instance is not None and old.instance.running and version.target == "embedded":
            try:  # warm the new version before it takes requests
                await (await self.instance(fresh, current=False)).ensure_started()
            except Exception as exc:  # it boots on its first request instead, and reports there
                log.warning("could not pre-start a new version", function=active.name, error=type(exc).__name__)
        if old_key is not None and old_key != key:
            self.routes.pop(old_key, None)
        self.routes[key] = fresh
        self.names[name] = key
        if old is not None:
            self._drain(old)

    async def _remove(self, name: tuple[str, str, str]) -> None:
        key = self.names.pop(name, None)
        old = self.routes.pop(key, None) if key else None
        if old is not None:
            self._drain(old)

    def _drain(self, route: Route) -> None:
        instance, route.instance = route.instance, None
        if instance is None:
            return
        instance.draining = True
        self.draining.add(instance)

        async def drain() -> None:
            while instance.in_flight:
                await asyncio.sleep(0.01)
            await instance.stop()
            self.draining.discard(instance)
            self.instances.discard(instance)

        self._tasks.append(asyncio.create_task(drain()))

    # -- following and reaping ---------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._follow()))
        self._tasks.append(asyncio.create_task(self._reap()))
        await asyncio.wait_for(self.loaded.wait(), 30)

    async def _follow(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.control_url, autocommit=True) as listener:
                    await listener.execute(f"LISTEN {artifacts.CHANNEL}")
                    await self.load_all()  # after LISTEN: nothing committed in between is missed
                    async for notice in listener.notifies():
                        try:
                            namespace, project, name = json.loads(notice.payload)
                        except (ValueError, TypeError):
                            continue
                        await self.refresh(str(namespace), str(project), str(name))
            except (psycopg.Error, OSError) as exc:
                log.warning("lost the control database; reconnecting", error=type(exc).__name__)
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.idle_seconds / 4))
            for route in list(self.routes.values()):
                instance = route.instance
                if instance is not None and instance.running and instance.idle_for() > self.idle_seconds:
                    instance.log(instance.spec, "runtime", f"stopping: idle for {self.idle_seconds:g} s")
                    await instance.idle_stop()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*(instance.stop() for instance in self.instances), return_exceptions=True)
        if self._sync is not None:
            self._sync.close()
