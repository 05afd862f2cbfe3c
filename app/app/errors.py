"""Error answers: 422s that always render and stay short, a full `Allow` on 405 and
OPTIONS, and the OpenAPI description of the error statuses routes can answer."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app.auth import WRITE_SCOPE
from app.schemas import ErrorOut

# Characters of the caller's input a 422 quotes back.
MAX_INPUT_CHARS = 64


def _renderable(text: str) -> str:
    # Lone surrogates have no UTF-8 form: the whole response could not be encoded.
    return text.encode("utf-8", "replace").decode()


def _short(text: str) -> str:
    if len(text) > MAX_INPUT_CHARS:
        text = text[:MAX_INPUT_CHARS] + "…"
    return _renderable(text)


def _snippet(value: object) -> object:
    """The input as a 422 shows it: a short string, or a small finite number."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) < 2**63:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False, default=str)  # NaN reads "NaN"
        except ValueError:  # an integer too long to print
            value = f"<{type(value).__name__}>"
    return _short(value)


def _context(ctx: dict[str, Any]) -> dict[str, Any]:
    # Constraint values (ge, max_length, pattern) help; exception objects do not.
    return {
        key: _renderable(value) if isinstance(value, str) else value
        for key, value in jsonable_encoder(ctx).items()
        if isinstance(value, int | float)
        or (isinstance(value, str) and len(value) <= MAX_INPUT_CHARS)
    }


def _error(error: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "type": error["type"],
        "loc": [part if isinstance(part, int) else _short(str(part)) for part in error["loc"]],
        "msg": _renderable(error["msg"]),
        "input": _snippet(error.get("input")),
    }
    ctx = _context(error.get("ctx") or {})
    if ctx:
        shown["ctx"] = ctx
    return shown


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": [_error(e) for e in exc.errors()]}, status_code=422)


# Methods a route may take (FastAPI adds no HEAD); OPTIONS is answered here.
_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method a route takes for the request's path: a route knows only its own."""
    methods = {"OPTIONS"}
    for method in _METHODS:
        # A fresh scope: matching may leave marks in the one it is given.
        scope = {
            "type": "http",
            "method": method,
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
        }
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            methods.add(method)
    return ", ".join(sorted(methods))


async def method_not_allowed_handler(request: Request, exc: Exception) -> Response:
    allow = allowed_methods(request)
    if request.method == "OPTIONS":
        return Response(status_code=204, headers={"Allow": allow})
    detail = exc.detail if isinstance(exc, HTTPException) else "Method Not Allowed"
    return JSONResponse({"detail": detail}, status_code=405, headers={"Allow": allow})


def _retry_after(required: bool) -> dict[str, Any]:
    return {
        "Retry-After": {
            "description": "seconds to wait before retrying",
            "required": required,
            "schema": {"type": "integer"},
        }
    }


def _challenge(description: str) -> dict[str, Any]:
    return {
        "WWW-Authenticate": {
            "description": description,
            "required": True,
            "schema": {"type": "string"},
        }
    }


# The statuses a route answers besides its success and 422 (FastAPI documents those).
RESPONSES: dict[int, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not UTF-8 or cannot be decoded"},
    401: {
        "model": ErrorOut,
        "description": "No bearer token, or one that is invalid, expired or for another app",
        "headers": _challenge(
            'Bearer realm="APP_NAME", plus error="invalid_token" if a token was sent'
        ),
    },
    403: {
        "model": ErrorOut,
        "description": f"The token does not grant the scope {WRITE_SCOPE}",
        "headers": _challenge(
            f'Bearer realm="APP_NAME", error="insufficient_scope", scope="{WRITE_SCOPE}"'
        ),
    },
    404: {"model": ErrorOut, "description": "No product with this id"},
    409: {
        "model": ErrorOut,
        "description": "The sku is taken, or another write holds the product (Retry-After)",
        "headers": _retry_after(required=False),
    },
    413: {"model": ErrorOut, "description": "The body is larger than MAX_BODY_BYTES"},
    503: {
        "model": ErrorOut,
        "description": "The database (or, for PATCH and DELETE, Redis) is unavailable",
        "headers": _retry_after(required=True),
    },
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: RESPONSES[status] for status in statuses}
