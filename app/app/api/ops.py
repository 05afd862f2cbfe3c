"""Operational endpoints outside the API prefix: health, version, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app import __version__
from app.metrics import render
from app.schemas import VersionOut

router = APIRouter(tags=["ops"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    # Process only: a dependency outage must not get the app restarted.
    return {"status": "ok"}


async def _check_database(request: Request) -> None:
    async with request.app.state.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _check_redis(request: Request) -> None:
    await request.app.state.redis.ping()


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    timeout = request.app.state.settings.health_timeout
    checks = {"database": _check_database(request), "redis": _check_redis(request)}
    results = await asyncio.gather(
        *(asyncio.wait_for(check, timeout) for check in checks.values()), return_exceptions=True
    )
    report: dict[str, Any] = {}
    failing = []
    for name, result in zip(checks, results, strict=True):
        if isinstance(result, BaseException):
            failing.append(name)
            reason = type(result).__name__
            report[name] = f"error: {reason}: {result}" if str(result) else f"error: {reason}"
        else:
            report[name] = "ok"
    body = {"status": "unavailable" if failing else "ok", "checks": report, "failing": failing}
    return JSONResponse(body, status_code=503 if failing else 200)


@router.get("/version", response_model=VersionOut)
async def version(request: Request) -> VersionOut:
    settings = request.app.state.settings
    return VersionOut(name=settings.app_name, version=__version__, release=settings.app_release)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    payload, content_type = render()
    return Response(payload, media_type=content_type)
