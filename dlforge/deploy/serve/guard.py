"""The ASGI middleware in front of every route of `dlforge serve`, before a body is parsed: a bearer token when one
is set (health and the web page's static files excepted), a cap on the body's size (the Content-Length checked
first; a body without one is read up to the cap and no further), the request metrics (counted once, when the
response has ended, by the route the router chose) and one JSON log line per request."""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

from starlette.routing import Match

from dlforge.deploy.serve import openai_api as oa
from dlforge.deploy.serve.metrics import Metrics

HEALTH = ("/v2/health/live", "/v2/health/ready")
PAGE = ("/", "/ui/page.js", "/ui/page.css")  # the web page's files (dlforge.deploy.serve.ui): no data, no key needed


class Guard:
    """ASGI middleware in front of the app: bearer token, body size cap, request metrics and the JSON log line."""

    def __init__(self, app: Any, options: Any, metrics: Metrics):
        self.app, self.options, self.metrics = app, options, metrics
        self.log = options.log or (lambda line: print(line, file=sys.stderr, flush=True))

    def route_of(self, scope: dict) -> str:
        for route in self.app.router.routes:
            if route.matches(scope)[0] == Match.FULL:
                return getattr(route, "path", "other")
        return "other"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 500, "first_byte": None, "sent": False, "bytes": 0}

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["sent"] = message["status"], True
            elif message["type"] == "http.response.body" and state["first_byte"] is None:
                state["first_byte"] = time.perf_counter() - start
            await send(message)

        try:
            refusal = self.refusal(scope)
            body = None
            if refusal is None and scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self.read_body(receive)
                if body is None:
                    refusal = self.too_large()
                state["bytes"] = len(body or b"")
            if refusal is not None:
                await _send_error(sending, refusal)
            else:
                await self.app(scope, _replay(body, receive) if body is not None else receive, sending)
        finally:  # the router leaves the route it chose in the scope (included routers' routes too)
            route = getattr(scope.get("route"), "path", None) or self.route_of(scope)  # refused before routing
            self.record(scope, route, state, time.perf_counter() - start)

    async def read_body(self, receive: Callable) -> bytes | None:
        """The whole body, or None as soon as it is larger than the cap (the rest is not read)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.options.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)

    def refusal(self, scope: dict) -> oa.ApiError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.options.max_body_bytes:
            return self.too_large()
        key = self.options.api_key
        if key and scope["path"] not in HEALTH and scope["path"] not in PAGE:
            given = headers.get("authorization", "")
            if not (given.startswith("Bearer ") and secrets.compare_digest(given[7:].encode(), key.encode())):
                return oa.ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'", None,
                                   "invalid_api_key")
        return None

    def too_large(self) -> oa.ApiError:
        return oa.ApiError(413, f"the request body is larger than {self.options.max_body_bytes} bytes", None,
                           "body_too_large")

    def record(self, scope: dict, route: str, state: dict, seconds: float) -> None:
        status = str(state["status"])
        self.metrics.requests.labels(route, status).inc()
        self.metrics.latency.labels(route).observe(seconds)
        self.metrics.first_byte.labels(route).observe(state["first_byte"] if state["first_byte"] is not None
                                                      else seconds)
        self.log(json.dumps({"time": round(time.time(), 3), "method": scope["method"], "path": scope["path"],
                             "route": route, "status": state["status"], "ms": round(seconds * 1000, 1),
                             "body_bytes": state["bytes"]}))


def _replay(body: bytes, receive: Callable) -> Callable:
    """A receive that gives the body already read, then waits on the client as before (for its disconnect)."""
    given = False

    async def receiving() -> dict:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receiving


async def _send_error(send: Callable, error: oa.ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
