"""Prometheus metrics, correct under several Gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn_conf sets it), each worker writes its
values to mmap files there and /metrics merges every worker's files; without it
(a single `uvicorn` process) the default registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

# Resolve milliseconds: a cached read takes ~1 ms, an uncached one a few ms.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "HTTP requests being served.",
    multiprocess_mode="livesum",
)
CACHE_HITS = Counter("app_cache_hits_total", "Cache reads served from Redis.", ["cache"])
CACHE_MISSES = Counter(
    "app_cache_misses_total", "Cache reads that went to the database.", ["cache"]
)
CACHE_ERRORS = Counter(
    "app_cache_errors_total",
    "Redis errors in the cache path (the request fell back to the database).",
    ["operation"],
)
DB_POOL_SIZE = Gauge(
    "app_db_pool_size", "Configured pool size (sum over workers).", multiprocess_mode="livesum"
)
DB_POOL_CHECKED_OUT = Gauge(
    "app_db_pool_checked_out",
    "Database connections in use (sum over workers).",
    multiprocess_mode="livesum",
)
DB_POOL_OVERFLOW = Gauge(
    "app_db_pool_overflow",
    "Connections open beyond pool_size (sum over workers).",
    multiprocess_mode="livesum",
)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def render() -> tuple[bytes, str]:
    if multiprocess_enabled():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def instrument_pool(engine: AsyncEngine) -> None:
    """Keep the pool gauges current from pool events (scrapes hit one worker only)."""
    pool = engine.sync_engine.pool
    if not isinstance(pool, QueuePool):
        return
    DB_POOL_SIZE.set(pool.size())

    def update(*_: object) -> None:
        DB_POOL_CHECKED_OUT.set(pool.checkedout())
        DB_POOL_OVERFLOW.set(max(pool.overflow(), 0))

    def update_on_checkin(*_: object) -> None:
        # The checkin event fires before the pool takes the connection back.
        DB_POOL_CHECKED_OUT.set(max(pool.checkedout() - 1, 0))
        DB_POOL_OVERFLOW.set(max(pool.overflow(), 0))

    for name in ("connect", "checkout", "invalidate"):
        event.listen(pool, name, update)
    event.listen(pool, "checkin", update_on_checkin)
    update()


def reset_pool_gauges() -> None:
    for gauge in (DB_POOL_SIZE, DB_POOL_CHECKED_OUT, DB_POOL_OVERFLOW):
        gauge.set(0)
