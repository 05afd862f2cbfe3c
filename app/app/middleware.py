"""Pure ASGI middleware: request id, access log, metrics, default Cache-Control.

Pure ASGI (not BaseHTTPMiddleware) so streaming works and no task is spawned per request.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.log import request_id_var
from app.metrics import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS

access_log = logging.getLogger("app.access")
error_log = logging.getLogger("app.error")

# Accept a caller's id only if it is short and harmless in logs and headers.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Unmatched paths share one label: raw paths would explode the series count.
UNMATCHED_ROUTE = "<unmatched>"


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        status = 500
        started = False
        recorded = False

        def record() -> None:
            # Called before the last body chunk goes out: once a client has the whole
            # response, the request is already counted (a scrape right after sees it).
            nonlocal recorded
            if recorded:
                return
            recorded = True
            duration = time.perf_counter() - start
            route = route_template(scope)
            method = scope["method"]
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(duration)
            access_log.info(
                "request",
                extra={
                    "method": method,
                    "path": scope["path"],  # never the query string
                    "route": route,
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _value in headers):
                    headers.append((b"cache-control", b"no-store"))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record()
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            status = 500
            # The type and the stack, not the message: a driver's error quotes the values
            # it was given (the request id comes with every line).
            error_log.error(
                "unhandled error",
                extra={
                    "error": type(exc).__name__,
                    "stack": "".join(traceback.format_tb(exc.__traceback__)),
                },
            )
            if started:
                raise
            body = json.dumps({"detail": "internal server error"}).encode()
            await send_wrapper(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_wrapper({"type": "http.response.body", "body": body})
        finally:
            record()  # no-op unless the response never finished
            HTTP_IN_FLIGHT.dec()
            request_id_var.reset(token)


TOO_LARGE = "Content Too Large"


class BodyLimitMiddleware:
    """413 for a request body over `max_bytes`: at once when Content-Length says so, else as
    soon as the streamed body passes it. (FastAPI's max_body_size answers the first case in
    plain text, which the OpenAPI schema could not describe with the other errors.)"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": TOO_LARGE}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # Raised inside the route's body read: FastAPI answers it as a JSON 413.
                raise HTTPException(413, TOO_LARGE)
            return message

        await self.app(scope, limited, send)
