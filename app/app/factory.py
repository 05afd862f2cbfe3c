from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.api import ops, products
from app.cache import Cache
from app.config import Settings, get_settings
from app.db import (
    DatabaseUnavailable,
    create_engine,
    create_read_sessionmaker,
    create_sessionmaker,
    database_unavailable_handler,
)
from app.errors import method_not_allowed_handler, validation_error_handler
from app.log import configure_logging
from app.metrics import instrument_pool, reset_pool_gauges
from app.middleware import BodyLimitMiddleware, RequestMiddleware
from app.redis_client import create_redis
from app.warm_up import warm_up

log = logging.getLogger(__name__)


def _init_sentry(settings: Settings) -> None:
    if not settings.sentry_dsn:
        return
    try:
        import sentry_sdk  # optional dependency
    except ImportError:
        log.warning("SENTRY_DSN is set but sentry-sdk is not installed; ignoring it")
        return
    sentry_sdk.init(
        dsn=settings.sentry_dsn, environment=settings.environment, release=settings.app_release
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Connections are created here, in each worker, never in the Gunicorn master.
    settings: Settings = app.state.settings
    engine = create_engine(settings)
    instrument_pool(engine)
    redis = create_redis(settings)
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.read_sessionmaker = create_read_sessionmaker(engine)
    app.state.redis = redis
    app.state.cache = Cache(
        redis,
        settings.cache_prefix,
        settings.cache_enabled,
        settings.redis_retry_interval,
        settings.redis_look_again_seconds,
    )
    await warm_up(engine, redis, settings.warm_up_seconds)
    log.info(
        "started",
        extra={
            "version": __version__,
            "release": settings.app_release,
            "env": settings.environment,
        },
    )
    try:
        yield
    finally:
        await redis.aclose()
        await engine.dispose()
        reset_pool_gauges()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    _init_sentry(settings)
    docs = (
        settings.api_docs if settings.api_docs is not None else settings.environment != "production"
    )
    app = FastAPI(
        title=settings.app_name,
        version=__version__,
        debug=settings.debug,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        redoc_url=None,
        # Starlette would redirect /path/ to /path at the request's Host (any Host a
        # client sends): such paths answer 404 instead.
        redirect_slashes=False,
    )
    app.state.settings = settings
    if settings.secret_key is None:
        log.warning("SECRET_KEY is not set: every write is refused (401)")
    # Dependency faults are 503 + Retry-After; anything else stays a 500 (middleware).
    app.add_exception_handler(DatabaseUnavailable, database_unavailable_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(405, method_not_allowed_handler)
    app.include_router(products.build_router(settings.api_prefix))
    app.include_router(ops.router)
    # Innermost: a 413 still gets CORS headers, and the access line.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    # Added last = outermost: it sees every response, CORS preflights included.
    app.add_middleware(RequestMiddleware)
    return app
