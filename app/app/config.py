"""Settings from the environment (systemd EnvironmentFile) or a `.env` file.

Every invalid or missing value fails at start-up with the setting's name in the message.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

Environment = Literal["development", "testing", "staging", "production"]
# Environments where a missing SECRET_KEY is tolerated (never deployed).
_LAX_ENVIRONMENTS = {"development", "testing"}
_MIN_SECRET_LENGTH = 32
DEFAULT_APP_NAME = "fastapi-ops-app"

_BASE_CONFIG = SettingsConfigDict(
    env_file=".env",
    env_file_encoding="utf-8",
    case_sensitive=False,
    extra="ignore",
)


def split_host_port(item: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[addr]:port`) to (host, port); ValueError if malformed."""
    host, _sep, port = item.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address without brackets is ambiguous
    if not host or any(c.isspace() for c in host) or not port.isdigit():
        raise ValueError(f"{item!r} is not host:port")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{item!r}: the port must be 1-65535")
    return host, int(port)


def normalise_database_url(value: str) -> str:
    """Return a `postgresql+asyncpg://` URL; reject anything else."""
    value = value.strip()
    if not value:
        raise ValueError("must be set")
    # Heroku-style URLs use the scheme SQLAlchemy dropped in 1.4.
    if value.startswith("postgres://"):
        value = "postgresql://" + value[len("postgres://") :]
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {exc}") from None
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"must be a PostgreSQL URL, got scheme {url.drivername!r}")
    if url.get_driver_name() not in ("", "asyncpg", "psycopg2", "psycopg"):
        raise ValueError(f"unsupported driver {url.get_driver_name()!r}")
    if not url.database:
        raise ValueError("must name a database")
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


class DatabaseSettings(BaseSettings):
    """The subset Alembic needs: migrations must not require the app's secrets."""

    model_config = _BASE_CONFIG

    database_url: str = Field(description="PostgreSQL URL; postgres:// and postgresql:// accepted")
    # Migrations may legitimately run long statements; the app's default is shorter.
    db_statement_timeout_ms: int = Field(30_000, ge=0)
    db_connect_timeout: float = Field(2.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return normalise_database_url(value)


class TokenSettings(BaseSettings):
    """The subset the token CLI needs: minting a token must not require DATABASE_URL."""

    model_config = _BASE_CONFIG

    app_name: str = DEFAULT_APP_NAME
    secret_key: SecretStr

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: SecretStr) -> SecretStr:
        # In every environment: a token outlives the development machine it was minted on.
        if len(value.get_secret_value()) < _MIN_SECRET_LENGTH:
            raise ValueError(f"must have at least {_MIN_SECRET_LENGTH} characters")
        return value


class Settings(DatabaseSettings):
    app_name: str = DEFAULT_APP_NAME
    environment: Environment = "production"
    debug: bool = False
    api_prefix: str = "/api/v1"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    secret_key: SecretStr | None = None
    # Keys a token may still be signed with, never used to sign: a rotation's grace period.
    secret_keys_previous: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Clients that /health/ready shows which check failed; others get the status only.
    health_detail_networks: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        ["127.0.0.0/8", "::1/128"], validate_default=True
    )
    # Absolute URLs the app emits start with this, never with the request's Host.
    public_base_url: str | None = None
    app_release: str | None = None
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = "INFO"
    sentry_dsn: str | None = None
    # /docs and /openapi.json: unset, only outside production (the schema maps the API
    # for an attacker as well as for a client).
    api_docs: bool | None = None

    # A request must fail fast (503) well before the proxy's read timeout (Nginx: 60 s):
    # a slow query is cancelled after 5 s, a request waits at most 2 s for a pooled
    # connection. Queries of this API take milliseconds.
    db_statement_timeout_ms: int = Field(5_000, ge=0)
    db_pool_size: int = Field(5, ge=1)
    db_max_overflow: int = Field(5, ge=0)
    db_pool_recycle: int = Field(1800, ge=-1)
    db_pool_timeout: float = Field(2.0, gt=0)
    db_pool_pre_ping: bool = True
    # With several db hosts (a Patroni cluster), a new connection that finds no primary
    # (a switchover or failover under way) is retried for this long before the request
    # fails: the lead moves in a few seconds. 0: fail at once (a single server).
    db_primary_wait: float = Field(0.0, ge=0, le=30)
    # The database password before a rotation: a new connection that PostgreSQL refuses
    # for its password (28P01) with the one in DATABASE_URL is tried once with this one,
    # so the app can get the new password before or after the server does.
    database_password_previous: SecretStr | None = None

    # A new worker opens its first connections to PostgreSQL and Redis before it takes
    # requests, trying for at most this long (app/warm_up.py). 0: it does not.
    warm_up_seconds: float = Field(3.0, ge=0, le=30)

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_pool_size: int = Field(20, ge=1)
    redis_socket_timeout: float = Field(0.5, gt=0)
    # After a Redis error, cache reads skip Redis for this long instead of
    # paying a timeout on every request.
    redis_retry_interval: float = Field(2.0, ge=0)
    # A read the database fails asks Redis again for up to this long: a Redis master that
    # went dark with the primary's machine is replaced by Sentinel within 10 s (the redis
    # role's down-after 3 s, then 2-5 s of vote and promotion, then new TLS connections).
    redis_look_again_seconds: float = Field(10.0, ge=0)
    # Sentinel mode when set: REDIS_URL then gives only the user, password and db.
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_sentinel_service: str = Field("fastapi-ops", min_length=1)
    # A lock counts only once this many replicas have it (WAIT): asynchronous
    # replication would otherwise lose it with a master that dies.
    redis_lock_replicas: int = Field(0, ge=0)

    cache_enabled: bool = True
    cache_prefix: str = Field("app", min_length=1)
    cache_ttl_product: int = Field(300, ge=1)
    cache_ttl_list: int = Field(60, ge=1)
    http_cache_max_age: int = Field(5, ge=0)

    lock_timeout: float = Field(10.0, gt=0)
    lock_wait: float = Field(5.0, ge=0)
    health_timeout: float = Field(1.0, gt=0)
    # Bodies above this are refused (413) before they are parsed. The largest valid product,
    # its 10,000-character description escaped to 12 bytes a character, is under 124 KB.
    max_body_bytes: int = Field(131_072, ge=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_prefix")
    @classmethod
    def _api_prefix(cls, value: str) -> str:
        if not value.startswith("/") or (len(value) > 1 and value.endswith("/")):
            raise ValueError("must start with '/' and not end with '/'")
        return value.rstrip("/")

    @field_validator(
        "cors_origins",
        "redis_sentinels",
        "secret_keys_previous",
        "health_detail_networks",
        mode="before",
    )
    @classmethod
    def _list(cls, value: object) -> object:
        # Accept a JSON list or a comma-separated list.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON list: {exc}") from None
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _redis_sentinels(cls, value: list[str]) -> list[str]:
        for item in value:
            split_host_port(item)
        return [item.strip() for item in value]

    @field_validator("public_base_url")
    @classmethod
    def _public_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not all("!" <= c <= "~" for c in value):
            raise ValueError("must be printable ASCII without blanks (a host in its xn-- form)")
        try:
            url = urlsplit(value)
            valid = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
        except ValueError:  # a port that is not a number, or above 65535
            valid = False
        if not valid:
            raise ValueError("must be an http:// or https:// URL with a host and a valid port")
        if "?" in value or "#" in value or "@" in url.netloc:
            raise ValueError("must have no user, query or fragment")
        return value.rstrip("/")

    @field_validator(
        "app_release", "sentry_dsn", "public_base_url", "database_password_previous", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _secret_key_required(self) -> Settings:
        if self.environment in _LAX_ENVIRONMENTS:
            return self
        secret = self.secret_key.get_secret_value() if self.secret_key else ""
        if len(secret) < _MIN_SECRET_LENGTH:
            # A random per-process default would differ between workers.
            raise ValueError(
                f"SECRET_KEY must be set (at least {_MIN_SECRET_LENGTH} characters) "
                f"when ENVIRONMENT={self.environment}"
            )
        if any(
            len(key.get_secret_value()) < _MIN_SECRET_LENGTH for key in self.secret_keys_previous
        ):
            raise ValueError(
                f"SECRET_KEYS_PREVIOUS: every key must have at least {_MIN_SECRET_LENGTH} "
                f"characters when ENVIRONMENT={self.environment}"
            )
        return self

    @model_validator(mode="after")
    def _sentinel_url(self) -> Settings:
        if self.redis_sentinels and not self.redis_url.startswith(("redis://", "rediss://")):
            raise ValueError(
                "REDIS_URL must be redis:// or rediss:// when REDIS_SENTINELS is set "
                "(unix sockets are not supported with Sentinel)"
            )
        return self


class SettingsError(RuntimeError):
    """Raised at start-up with one line per invalid setting."""


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = "_".join(str(part) for part in error["loc"]).upper() or "settings"
        lines.append(f"{name}: {error['msg']}")
    return "invalid settings: " + "; ".join(lines)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def load_database_settings() -> DatabaseSettings:
    try:
        return DatabaseSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def load_token_settings() -> TokenSettings:
    try:
        return TokenSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
