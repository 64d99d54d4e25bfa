"""The function gateway: ``<api_url>/functions/v1/<name>[/<path>]`` (DESIGN.md, "Functions": HTTP).

Called by Starlette for every request under ``/p/<namespace>/<project>/functions/v1/``
(:mod:`kliv.serving.app`) and by the scheduler (:meth:`Gateway.invoke`). In order: CORS
preflight; the route (404); the caller's JWT, verified with the project's secret (401);
the body, at most 6 MiB (413); then the version's instance answers, with the verified
claims in ``x-kliv-claims`` (a caller's own ``x-kliv-claims`` header is dropped, never
trusted). Errors are ``{"error": code, "message"}`` with header ``x-kliv-error``, and
never hold a secret value: the instance's own messages are replaced. Every request is an
invocation record.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from kliv.serving.instances import CallFailedError
from kliv.serving.recording import Invocation
from kliv.serving.routes import Route, Routes, SwitchedError
from kliv.stacks.errors import EngineError
from kliv.stacks.secrets import jwts

MAX_BODY = 6 * 1024 * 1024
VERIFIED_KEPT = 4096
CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "authorization, x-client-info, apikey, content-type",
    "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
    "access-control-max-age": "86400",
}
# Hop-by-hop headers and what the gateway alone may set.
# Hop-by-hop headers, `expect` (the hop answers whole requests: an interim 100 must never
# reach the process's connection), and every x-kliv-* header: only the gateway sets those.
_DROPPED_REQUEST = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade",
                              "proxy-authorization", "content-length", "expect"})  # fmt: skip
_DROPPED_RESPONSE = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"})


def failure(code: str, status: int, message: str, request_id: str | None = None) -> Response:
    headers = {"x-kliv-error": code, **CORS}
    if request_id:
        headers["x-kliv-request-id"] = request_id
    return Response(json.dumps({"error": code, "message": message}), status, headers, media_type="application/json")


class UnauthorizedError(Exception):
    pass


class Gateway:
    """Answers function requests from the routing table."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        # Verified tokens, so a client sending the same key each time is not verified each time
        # (bounded; an entry never outlives the token's `exp`).
        self._verified: dict[tuple[str, str, str, bytes], tuple[float, str]] = {}

    def _verify(self, secret: bytes, token: str, namespace: str, project: str) -> str:
        """The token's claims as the JSON the function receives."""
        key = (namespace, project, token, secret)  # a new secret verifies anew
        found = self._verified.get(key)
        if found is not None and found[0] > time.time():
            return found[1]
        claims = jwts.verify(secret, token, namespace, project)
        if len(self._verified) >= VERIFIED_KEPT:
            self._verified.clear()
        shown = json.dumps(claims, separators=(",", ":"))
        self._verified[key] = (float(claims.get("exp", float("inf"))), shown)
        return shown

    async def claims(self, request: Request, route: Route, namespace: str, project: str) -> str:
        """The verified claims as JSON (``{}`` for a public function called without a valid token)."""
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not token:
            if route.auth == "jwt":
                raise UnauthorizedError("this function needs `Authorization: Bearer <jwt>` (the anon key at least)")
            return "{}"
        try:
            secret = await self.routes.jwt_secret(namespace, project)
            return self._verify(secret, token, namespace, project)
        except jwts.InvalidTokenError as exc:
            if route.auth == "jwt":
                raise UnauthorizedError(str(exc)) from None
            return "{}"

    async def handle(self, request: Request) -> Response:
        namespace = request.path_params["namespace"]
        project = request.path_params["project"]
        name, _, rest = str(request.path_params["rest"]).partition("/")
        if request.method == "OPTIONS":
            return Response(None, 204, CORS)
        route = self.routes.lookup(namespace, project, name)
        if route is None:
            return failure("not-found", 404, f"no function `{name[:100]}` in project {namespace}/{project}")
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        try:
            claims = await self.claims(request, route, namespace, project)
        except UnauthorizedError as exc:
            refused = failure("unauthorized", 401, str(exc), request_id)
            return self._record(route, request.method, "/" + rest, started, request_id, False, refused, "unauthorized")
        except LookupError as exc:
            return failure("unavailable", 503, str(exc), request_id)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            too_large = _too_large(request_id)
            return self._record(route, request.method, "/" + rest, started, request_id, False, too_large, "too-large")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    too_large = _too_large(request_id)
                    return self._record(route, request.method, "/" + rest, started, request_id, False, too_large,
                                        "too-large")  # fmt: skip
        except ClientDisconnect:
            return Response(None, 499)
        headers = [(k, v) for k, v in request.headers.items() if k not in _DROPPED_REQUEST and
                   not k.startswith("x-kliv-")]  # fmt: skip
        headers.append(("x-kliv-claims", claims))
        headers.append(("x-kliv-request-id", request_id))
        # As the caller encoded it (the routed path is decoded: `%20` would be a space on the wire).
        raw = (request.scope.get("raw_path") or request.scope["path"].encode()).decode("latin-1")
        rest = raw.split("/functions/v1/", 1)[-1].partition("/")[2]
        query = request.scope.get("query_string", b"")
        path = "/" + rest + (("?" + query.decode("latin-1")) if query else "")
        return await self.forward(route, request.method, path, headers, bytes(body), request_id, started)

    async def forward(
        self,
        route: Route,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        request_id: str,
        started: float,
    ) -> Response:
        cold = False
        try:
            try:
                instance = await self.routes.instance(route)
            except SwitchedError:  # a deploy or rollback landed meanwhile: the new version answers
                now = self.routes.lookup(*route.key)
                if now is None:
                    raise
                route = now
                instance = await self.routes.instance(route)
            cold = not (instance.running and not instance.draining)
            answer = await instance.call(method, path, headers, body)
        except CallFailedError as exc:
            reply = failure(exc.code, exc.status, exc.message, request_id)
            return self._record(route, method, path, started, request_id, cold, reply, exc.code)
        except LookupError as exc:  # a missing artifact or key: nothing the caller can fix
            reply = failure("boot-error", 503, str(exc), request_id)
            return self._record(route, method, path, started, request_id, cold, reply, "boot-error")
        except EngineError as exc:  # a secret that cannot be opened (its message never holds a value)
            reply = failure("boot-error", 503, f"the function's secrets cannot be read: {exc.message}", request_id)
            return self._record(route, method, path, started, request_id, cold, reply, "boot-error")
        reply = Response(answer.body, answer.status)
        kept = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers if k not in _DROPPED_RESPONSE]
        if not any(k == b"access-control-allow-origin" for k, _ in kept):
            kept.append((b"access-control-allow-origin", b"*"))
        kept.append((b"x-kliv-request-id", request_id.encode()))
        reply.raw_headers = [h for h in reply.raw_headers if h[0] == b"content-length"] + kept
        error = next((v for k, v in answer.headers if k == "x-kliv-error"), None)
        return self._record(route, method, path, started, request_id, cold, reply, error)

    def _record(
        self,
        route: Route,
        method: str,
        path: str,
        started: float,
        request_id: str,
        cold: bool,
        reply: Response,
        error: str | None,
    ) -> Response:
        version = route.version
        elapsed = time.perf_counter() - started
        arrived = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=elapsed)
        self.routes.recorder.invocation(Invocation(
            uuid.UUID(request_id), version.namespace, version.project, version.name, version.version, method,
            path.split("?", 1)[0][:1000], reply.status_code, elapsed * 1000, cold, error, arrived,
        ))  # fmt: skip
        return reply

    async def invoke(self, route: Route, claims: dict[str, Any], body: bytes, headers: dict[str, str]) -> Response:
        """A request from kliv itself (the scheduler), recorded like any other."""
        request_id = str(uuid.uuid4())
        sent = [
            *headers.items(),
            ("content-type", "application/json"),
            ("x-kliv-claims", json.dumps(claims, separators=(",", ":"))),
            ("x-kliv-request-id", request_id),
        ]
        return await self.forward(route, "POST", "/", sent, body, request_id, time.perf_counter())


def _too_large(request_id: str) -> Response:
    return failure("too-large", 413, f"the request body is over {MAX_BODY // (1024 * 1024)} MiB", request_id)
