"""Running function versions: one sandboxed Deno process each, started on demand, stopped when idle.

Called by the gateway (:mod:`kliv.serving.gateway`), which asks :meth:`Instance.call` to
answer a request, and by the function table (:mod:`kliv.serving.functions`), which drains
an instance when its version is switched away. A start is a cold start: the caller waits
until the process says it listens, never reaching a half-started one. The watchdog kills
the process group when its resident memory passes the runtime's own footprint plus
``memoryMiB``; a request past ``timeoutSeconds`` kills it too. Either way the callers get
the documented error, the log says why, and the next request starts a fresh process.
Every line the process prints becomes a log line, with the version's secret values
replaced (a function that prints its key does not leak it to the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from kliv.serving import sandbox
from kliv.serving.upstream import Answer, Upstream, UpstreamError

STARTUP_SECONDS = 10.0
WATCH_SECONDS = 0.05
# What Deno itself holds before any function code (measured: ~34 MiB resident for an empty
# module): memoryMiB is what the function may use on top. Fixed, so code that allocates while
# loading cannot raise its own allowance, and watched from the spawn on.
RUNTIME_MIB = 48
MAX_LINE = 4096
LINES_PER_SECOND = 200  # per process: a function printing without end is cut, and told
_SERIAL = itertools.count(1)


class CallFailedError(Exception):
    """A request the instance could not answer: ``code`` and ``status`` are the gateway's reply."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class Spec:
    """What one version runs: its code, settings and (in memory only) its secret values."""

    namespace: str
    project: str
    name: str
    version: int
    artifact: str
    source: str
    env: dict[str, str]
    secrets: dict[str, str]
    timeout_seconds: float
    memory_mib: int

    def redact(self, text: str) -> str:
        """``text`` without the secrets' values: whole, each of their lines (a PEM key prints line by
        line), and JSON-escaped."""
        for value in self.secrets.values():
            forms = {value, json.dumps(value)[1:-1], *value.splitlines()}
            for form in sorted(forms, key=len, reverse=True):
                if len(form) >= 4:
                    text = text.replace(form, "[secret]")
        return text


LogSink = Callable[[Spec, str, str], None]  # (spec, stream, message)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when kliv serve dies, however it dies (PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG (Linux)


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Instance:
    """One Deno process serving one version over a unix socket."""

    def __init__(self, spec: Spec, root: Path, log: LogSink) -> None:
        self.spec = spec
        # The same folder at every start of this instance: Deno's cache (shared, in the root) then
        # holds the transpiled module, and a restart after idling skips compiling it again. Its own
        # folder: a version rolled back to while its old instance still drains runs beside it.
        identity = hashlib.sha256(f"{spec.namespace}/{spec.project}/{spec.name}".encode()).hexdigest()[:12]
        self.folder = root / f"{spec.name[:24]}.{spec.version}.{identity}.{next(_SERIAL)}"
        self.deno_dir = root / ".deno"
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self.client: Upstream | None = None
        self.in_flight = 0
        self.last_used = time.monotonic()
        self.draining = False
        self.killed_for: str | None = None  # why the current process was killed
        self._starting: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._window, self._lines, self._dropped = 0.0, 0, 0
        self._exited = asyncio.Event()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def ensure_started(self) -> bool:
        """Start the process unless it runs; True: this call waited for a cold start."""
        if self.running and self.killed_for is not None:  # killed, not reaped yet: never sent a request
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), 2)
        if self.running and self._ready.is_set():
            return False
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start())
        await asyncio.shield(self._starting)
        return True

    async def _start(self) -> None:
        spec = self.spec
        await self._stop_process()
        self._ready.clear()
        self._exited.clear()
        self.killed_for = None
        await asyncio.to_thread(sandbox.prepare, self.folder, spec.source)  # file writes: off the loop
        with contextlib.suppress(FileNotFoundError):
            (self.folder / sandbox.SOCKET).unlink()
        launch = sandbox.launch(self.folder, self.deno_dir, spec.env, spec.secrets, f"{spec.namespace}/{spec.project}",
                                spec.memory_mib)  # fmt: skip
        try:
            self.process = await asyncio.create_subprocess_exec(
                *launch.command,
                cwd=self.folder,
                env=launch.environment,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: a kill takes every child with it
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            self.log(spec, "runtime", f"boot failed: Deno could not be started ({type(exc).__name__})")
            raise CallFailedError("boot-error", 503, "the function runtime could not be started") from None
        self.log(spec, "runtime", f"spawned pid {self.process.pid}")
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._tasks = [
            asyncio.create_task(self._read(self.process.stdout, "stdout")),
            asyncio.create_task(self._read(self.process.stderr, "stderr")),
            asyncio.create_task(self._watch(self.process)),
        ]
        ready = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self._exited.wait())
        await asyncio.wait({ready, exited}, timeout=STARTUP_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        for task in (ready, exited):
            task.cancel()
        if not self._ready.is_set():
            why = "exited while starting" if self._exited.is_set() else f"did not start in {STARTUP_SECONDS:g} s"
            self.log(spec, "runtime", f"boot failed: the process {why}")
            killed = self.killed_for
            await self._stop_process()
            if killed == "memory":
                raise CallFailedError("memory", 546, f"the function used more than {spec.memory_mib} MiB while loading")
            raise CallFailedError("boot-error", 503, f"function {spec.name} version {spec.version} {why}; see its logs")
        self.client = Upstream(str(launch.socket))
        self.log(spec, "runtime", "ready")

    async def _read(self, stream: asyncio.StreamReader, name: str) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the reader's limit: take what there is
                line = await stream.read(MAX_LINE)
            if not line:
                return
            text = line.decode(errors="replace").rstrip("\n")
            if text == sandbox.READY:
                self._ready.set()
                continue
            if "Fatal JavaScript out of memory" in text or "JavaScript heap out of memory" in text:
                self.killed_for = self.killed_for or "memory"  # V8's own heap cap (memoryMiB) was hit
            now = time.monotonic()
            if now - self._window > 1:
                if self._dropped:
                    self.log(
                        self.spec, "runtime", f"{self._dropped} log lines dropped: over {LINES_PER_SECOND} a second"
                    )
                self._window, self._lines, self._dropped = now, 0, 0
            self._lines += 1
            if self._lines > LINES_PER_SECOND:
                self._dropped += 1
                continue
            self.log(self.spec, name, self.spec.redact(text)[:MAX_LINE])  # redacted before it is cut

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        limit = (RUNTIME_MIB + self.spec.memory_mib) * 1024 * 1024
        while process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), WATCH_SECONDS)
            except TimeoutError:
                if _rss_bytes(process.pid) > limit:
                    self._kill(process, "memory")
        self._exited.set()
        why = self.killed_for
        if why == "memory":
            self.log(self.spec, "runtime", f"killed: over its memory limit (memoryMiB: {self.spec.memory_mib})")
        elif why == "timeout":
            self.log(self.spec, "runtime", f"timeout: a request ran over {self.spec.timeout_seconds:g} s; killed")
        self.log(self.spec, "runtime", f"exit {process.returncode}")

    def _kill(self, process: asyncio.subprocess.Process, why: str) -> None:
        if process.returncode is None and self.killed_for is None:
            self.killed_for = why
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    async def call(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        """Answer one request (starting the process if it is not running)."""
        self.in_flight += 1
        self.last_used = time.monotonic()
        try:
            await self.ensure_started()
            process, client = self.process, self.client
            assert process is not None
            assert client is not None
            exchange = asyncio.create_task(client.request(method, path, headers, body))
            exited = asyncio.create_task(self._exited.wait())
            done, _ = await asyncio.wait({exchange, exited}, timeout=self.spec.timeout_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            exited.cancel()
            if exchange in done and exchange.exception() is None:
                return exchange.result()
            failure = exchange.exception() if exchange in done else None
            if isinstance(failure, UpstreamError) and failure.too_large:
                raise CallFailedError("bad-response", 502, f"the function's answer was refused: {failure}")
            exchange.cancel()
            if not done:
                self._kill(process, "timeout")
                raise CallFailedError("timeout", 504, f"the function ran longer than {self.spec.timeout_seconds:g} s")
            try:
                await asyncio.wait_for(self._exited.wait(), 1)
            except TimeoutError:
                raise CallFailedError("unreachable", 502, f"the function's process did not answer "
                                 f"({failure or type(failure).__name__})") from None  # fmt: skip
            if self.killed_for == "memory":
                raise CallFailedError("memory", 546, f"the function exceeded its memory limit (memoryMiB: "
                                      f"{self.spec.memory_mib}) and was killed")  # fmt: skip
            if self.killed_for == "timeout":
                raise CallFailedError("timeout", 504, "the function's process was killed by another request's timeout")
            raise CallFailedError("exited", 502, "the function's process exited while answering; see its logs")
        finally:
            self.in_flight -= 1
            self.last_used = time.monotonic()

    async def _stop_process(self) -> None:
        process, self.process = self.process, None
        client, self.client = self.client, None
        if client is not None:
            client.close()
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 2)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 1)
        self._tasks = []

    async def idle_stop(self) -> None:
        """Stop the process, keeping the folder (the next request starts it again)."""
        await self._stop_process()

    async def stop(self) -> None:
        """Stop the process and remove the folder (drained, or shutting down: never started again)."""
        await self._stop_process()
        await asyncio.to_thread(shutil.rmtree, self.folder, ignore_errors=True)

    def idle_for(self) -> float:
        return 0.0 if self.in_flight else time.monotonic() - self.last_used
