"""Operational endpoints outside the API prefix: health, version, metrics."""

from __future__ import annotations

import asyncio
import logging
from ipaddress import IPv6Address, ip_address
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app import __version__
from app.metrics import render
from app.schemas import ReadinessOut, VersionOut

router = APIRouter(tags=["ops"])
log = logging.getLogger(__name__)


@router.get("/health/live")
async def live() -> dict[str, str]:
    # Process only: a dependency outage must not get the app restarted.
    return {"status": "ok"}


async def _check_database(request: Request) -> None:
    async with request.app.state.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _check_redis(request: Request) -> None:
    await request.app.state.redis.ping()


# Checks that outlived their probe, still cleaning up (kept referenced until done).
_abandoned: set[asyncio.Task[None]] = set()


def _forget(task: asyncio.Task[None]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


def _abandon(task: asyncio.Task[None]) -> None:
    # Cancelling a database check that hangs in a blackhole makes SQLAlchemy close the
    # connection gracefully, which waits up to 2 s more: let that finish in the background.
    task.cancel()
    _abandoned.add(task)
    task.add_done_callback(_forget)


def _shows_details(request: Request) -> bool:
    """Whether the client may see which check failed: it is in HEALTH_DETAIL_NETWORKS, or
    on the unix socket (no address; only local processes can open it)."""
    if request.client is None:
        return True
    try:
        address = ip_address(request.client.host)
    except ValueError:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # an IPv4 client of a dual-stack socket
    return any(address in network for network in request.app.state.settings.health_detail_networks)


@router.get(
    "/health/ready",
    response_model=None,
    responses={
        200: {"model": ReadinessOut, "description": "Every dependency answered"},
        503: {"model": ReadinessOut, "description": "A dependency failed or did not answer"},
    },
)
async def ready(request: Request) -> JSONResponse:
    timeout = request.app.state.settings.health_timeout
    checks = {
        "database": asyncio.create_task(_check_database(request)),
        "redis": asyncio.create_task(_check_redis(request)),
    }
    try:
        # Answers within health_timeout, whatever a dependency does.
        await asyncio.wait(checks.values(), timeout=timeout)
    finally:
        for task in checks.values():
            if not task.done():
                _abandon(task)
    report: dict[str, Any] = {}
    failing = []
    for name, task in checks.items():
        done = task.done() and not task.cancelled()
        error = task.exception() if done else TimeoutError()
        if error is not None:
            failing.append(name)
            # The type only: messages name hosts and addresses, and this page may be public.
            report[name] = f"error: {type(error).__name__}"
            log.warning("readiness check failed", extra={"check": name, "error": repr(error)})
        else:
            report[name] = "ok"
    body: dict[str, Any] = {"status": "unavailable" if failing else "ok"}
    if _shows_details(request):
        body.update(checks=report, failing=failing)
    return JSONResponse(body, status_code=503 if failing else 200)


@router.get("/version", response_model=VersionOut)
async def version(request: Request) -> VersionOut:
    settings = request.app.state.settings
    return VersionOut(name=settings.app_name, version=__version__, release=settings.app_release)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    payload, content_type = render()
    return Response(payload, media_type=content_type)
