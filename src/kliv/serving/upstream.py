"""HTTP/1.1 to a function's process over its unix socket: kept-alive connections, httptools parsing.

Called by :class:`kliv.serving.instances.Instance` for every request it answers. A general
client (httpx) cost the gateway more per request than the function's own work (measured:
benchmarks/README.md); this one does only what the hop needs: one request at a time per
connection, idle connections kept for the next request, the response parsed by httptools
(the C parser uvicorn uses), bodies read whole but never past :data:`MAX_RESPONSE`. A
request that fails on a kept connection before any byte of its answer arrived is retried
once on a new connection (the process closed the idle one); any other failure is the
caller's to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import httptools

MAX_RESPONSE = 32 * 1024 * 1024
POOL = 64
READ = 65536


class UpstreamError(Exception):
    """The process did not give a whole answer (``too_large``: it gave too much of one)."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclasses.dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _Parsing:
    """httptools' callbacks: what one response holds. Interim (1xx) responses are skipped; a second
    final response on the connection (more bytes than the one answer) marks it unusable."""

    def __init__(self, head: bool) -> None:
        self.head = head  # a response to HEAD has no body, whatever its content-length says
        self.parser: httptools.HttpResponseParser | None = None
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.complete = False
        self.too_large = False
        self.extra = False  # bytes past the answer: never reuse the connection

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True
        self.headers, self.body = [], bytearray()

    def _interim(self) -> bool:
        return self.parser is not None and 100 <= self.parser.get_status_code() < 200

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.head and not self._interim():
            self.complete = True

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > MAX_RESPONSE:
            self.too_large = True

    def on_message_complete(self) -> None:
        if not self._interim():
            self.complete = True


class Upstream:
    """Connections to one unix socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        head = [f"{method} {target} HTTP/1.1\r\nhost: function\r\ncontent-length: {len(body)}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers]
        head.append("\r\n")
        payload = "".join(head).encode("latin-1") + body
        while self.idle:
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer, payload, method == "HEAD", reused=True)
            except _StaleError:
                continue
        reader, writer = await asyncio.open_unix_connection(self.path)
        return await self._exchange(reader, writer, payload, method == "HEAD", reused=False)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes, head: bool, reused: bool
    ) -> Answer:
        parsing = _Parsing(head)
        parser = httptools.HttpResponseParser(parsing)
        parsing.parser = parser
        received = False
        try:
            writer.write(payload)
            await writer.drain()
            while not parsing.complete:
                data = await reader.read(READ)
                if not data:
                    break
                received = True
                parser.feed_data(data)
                if parsing.too_large:
                    raise UpstreamError(f"the response is over {MAX_RESPONSE // (1024 * 1024)} MiB", True)
        except (ConnectionError, OSError, httptools.HttpParserError) as exc:
            writer.close()
            if reused and not received:
                raise _StaleError from None
            raise UpstreamError(type(exc).__name__) from None
        except BaseException:
            writer.close()
            raise
        if not parsing.complete:
            writer.close()
            if reused and not received:
                raise _StaleError
            raise UpstreamError("the connection closed before the response was complete")
        closing = any(name == "connection" and "close" in value.lower() for name, value in parsing.headers)
        if not closing and not parsing.extra and len(self.idle) < POOL:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return Answer(parser.get_status_code(), parsing.headers, bytes(parsing.body))

    def close(self) -> None:
        for _, writer in self.idle:
            with contextlib.suppress(Exception):
                writer.close()
        self.idle = []


class _StaleError(Exception):
    """A kept connection the process had closed: try another."""
