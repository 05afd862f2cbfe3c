from __future__ import annotations

from pathlib import Path

import pytest

from app.config import (
    Settings,
    SettingsError,
    load_database_settings,
    load_settings,
    load_token_settings,
)
from app.db import connect_args

URL = "postgresql://u:p@127.0.0.1:5432/db"
SECRET = "s" * 40


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No .env from the working directory, no variables from the caller's shell.
    monkeypatch.chdir(tmp_path)
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)


def test_postgres_scheme_is_fixed_to_asyncpg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db.internal:5432/app")
    monkeypatch.setenv("SECRET_KEY", SECRET)
    assert load_settings().database_url == "postgresql+asyncpg://u:p@db.internal:5432/app"


@pytest.mark.parametrize(
    "url",
    ["mysql://u:p@h/db", "not a url", "postgresql://u:p@h:5432", "", "postgresql+pg8000://h/db"],
)
def test_bad_database_url_names_the_setting(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        load_settings()


def test_missing_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", SECRET)
    with pytest.raises(SettingsError, match="DATABASE_URL: Field required"):
        load_settings()


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_secret_required_outside_development(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("ENVIRONMENT", environment)
    with pytest.raises(SettingsError, match="SECRET_KEY must be set"):
        load_settings()
    monkeypatch.setenv("SECRET_KEY", "short")
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("SECRET_KEY", SECRET)
    assert load_settings().secret_key is not None


def test_production_is_the_default_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    with pytest.raises(SettingsError, match="ENVIRONMENT=production"):
        load_settings()


def test_development_needs_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("ENVIRONMENT", "development")
    assert load_settings().secret_key is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://a.example, https://b.example", ["https://a.example", "https://b.example"]),
        ('["https://a.example"]', ["https://a.example"]),
        ("", []),
    ],
)
def test_cors_origins_comma_or_json(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("CORS_ORIGINS", raw)
    assert load_settings().cors_origins == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_POOL_SIZE", "0"),
        ("DB_MAX_OVERFLOW", "lots"),
        ("REDIS_URL", "http://cache:6379"),
        ("LOG_LEVEL", "chatty"),
        ("API_PREFIX", "api/v1/"),
        ("ENVIRONMENT", "prod"),
    ],
)
def test_invalid_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"DATABASE_URL={URL}\nSECRET_KEY={SECRET}\nDB_POOL_SIZE=7\nAPP_RELEASE=r42\n"
    )
    settings = load_settings()
    assert settings.db_pool_size == 7
    assert settings.app_release == "r42"
    assert settings.database_url.startswith("postgresql+asyncpg://")


def test_environment_overrides_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL={URL}\nSECRET_KEY={SECRET}\nDB_POOL_SIZE=7\n")
    monkeypatch.setenv("DB_POOL_SIZE", "3")
    assert load_settings().db_pool_size == 3


def test_default_timeouts_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    # A request gives up well inside Nginx's 60 s proxy_read_timeout (README: faults).
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    settings = load_settings()
    assert (settings.db_pool_timeout, settings.db_connect_timeout) == (2.0, 2.0)
    assert settings.db_statement_timeout_ms == 5000
    args = connect_args(settings, "app")
    assert args["command_timeout"] == 6.0  # client-side: statement_timeout + 1 s
    assert args["server_settings"]["statement_timeout"] == "5000"  # type: ignore[index]
    # Migrations keep their longer default; 0 means no bound on either side.
    assert load_database_settings().db_statement_timeout_ms == 30_000
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_MS", "0")
    assert connect_args(load_settings(), "app")["command_timeout"] is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", []),
        ("10.0.0.1:26379, 10.0.0.2:26379", ["10.0.0.1:26379", "10.0.0.2:26379"]),
        ('["s1.internal:26379", "[::1]:26380"]', ["s1.internal:26379", "[::1]:26380"]),
    ],
)
def test_redis_sentinels_comma_or_json(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("REDIS_SENTINELS", raw)
    settings = load_settings()
    assert settings.redis_sentinels == expected
    assert (settings.redis_sentinel_service, settings.redis_lock_replicas) == ("fastapi-ops", 0)


@pytest.mark.parametrize(
    "raw",
    [
        "10.0.0.1",
        "10.0.0.1:0",
        "10.0.0.1:65536",
        "10.0.0.1:26379,sentinel",
        ":26379",
        "s1:port",
        "::1:26379",
        "a b:26379",
        '["10.0.0.1:26379", 5]',
        "[not json",
    ],
)
def test_bad_redis_sentinels_stop_start_up(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("REDIS_SENTINELS", raw)
    with pytest.raises(SettingsError, match="REDIS_SENTINELS"):
        load_settings()


def test_sentinel_mode_needs_a_tcp_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("REDIS_URL", "unix:///run/redis.sock")
    assert load_settings().redis_url == "unix:///run/redis.sock"  # fine without Sentinel
    monkeypatch.setenv("REDIS_SENTINELS", "10.0.0.1:26379")
    with pytest.raises(SettingsError, match="REDIS_URL must be redis:// or rediss://"):
        load_settings()
    monkeypatch.setenv("REDIS_URL", "rediss://u:p@h:6380/0?ssl_ca_certs=/etc/ca.crt")
    assert load_settings().redis_sentinels == ["10.0.0.1:26379"]


@pytest.mark.parametrize(
    ("name", "value"), [("REDIS_LOCK_REPLICAS", "-1"), ("REDIS_SENTINEL_SERVICE", "")]
)
def test_bad_sentinel_settings(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


@pytest.mark.parametrize(
    ("environment", "api_docs", "served"),
    [("production", None, False), ("staging", None, True), ("production", True, True)],
)
def test_api_docs_only_outside_production_unless_enabled(
    environment: str, api_docs: bool | None, served: bool
) -> None:
    from fastapi.testclient import TestClient

    from app.factory import create_app

    settings = Settings(
        _env_file=None,
        database_url=URL,
        secret_key=SECRET,
        environment=environment,
        api_docs=api_docs,
    )
    client = TestClient(create_app(settings))  # no lifespan: these routes need no pool
    for path in ("/openapi.json", "/docs"):
        assert client.get(path).status_code == (200 if served else 404), path


@pytest.mark.parametrize("raw", ["{a}, {b}", '["{a}", "{b}"]'])
def test_previous_secret_keys_comma_or_json_never_shown(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    old, older = "o" * 40, "p" * 40
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("SECRET_KEYS_PREVIOUS", raw.format(a=old, b=older))
    settings = load_settings()
    assert [key.get_secret_value() for key in settings.secret_keys_previous] == [old, older]
    assert old not in repr(settings) and old not in str(settings)


def test_short_previous_secret_key_only_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("SECRET_KEYS_PREVIOUS", f"{SECRET},tiny-key")
    with pytest.raises(SettingsError, match="SECRET_KEYS_PREVIOUS") as caught:
        load_settings()
    assert "tiny-key" not in str(caught.value)
    monkeypatch.setenv("ENVIRONMENT", "development")
    assert len(load_settings().secret_keys_previous) == 2


def test_token_settings_need_no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY: Field required"):
        load_token_settings()
    monkeypatch.setenv("SECRET_KEY", SECRET)
    assert load_token_settings().app_name == "fastapi-ops-app"


def test_health_detail_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    default = load_settings().health_detail_networks
    assert [str(network) for network in default] == ["127.0.0.0/8", "::1/128"]
    monkeypatch.setenv("HEALTH_DETAIL_NETWORKS", "10.0.0.0/8, 10.9.8.7, fd00::/8")
    networks = load_settings().health_detail_networks
    assert [str(network) for network in networks] == ["10.0.0.0/8", "10.9.8.7/32", "fd00::/8"]
    monkeypatch.setenv("HEALTH_DETAIL_NETWORKS", "")
    assert load_settings().health_detail_networks == []


@pytest.mark.parametrize("raw", ["10.0.0.1/8", "localhost", "10.0.0.0/33", "[not json"])
def test_bad_health_detail_networks_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("HEALTH_DETAIL_NETWORKS", raw)
    with pytest.raises(SettingsError, match="HEALTH_DETAIL_NETWORKS"):
        load_settings()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://shop.example/", "https://shop.example"),
        ("http://10.0.0.5:8080/shop/", "http://10.0.0.5:8080/shop"),
        ("https://[2001:db8::1]", "https://[2001:db8::1]"),
        ("", None),
    ],
)
def test_public_base_url(monkeypatch: pytest.MonkeyPatch, raw: str, expected: str | None) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("PUBLIC_BASE_URL", raw)
    assert load_settings().public_base_url == expected


@pytest.mark.parametrize(
    "raw",
    [
        "shop.example",
        "ftp://shop.example",
        "https://",
        "https://shop.example?x=1",
        "https://shop.example/#top",
        "https://user:pw@shop.example",
        "https://shop.example:99999",
        "https://shop.example:0",
        "https://shop .example",
        "https://shop.example/\r\nX-Evil: 1",
        "https://shöp.example",
    ],
)
def test_bad_public_base_url_stops_start_up(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("PUBLIC_BASE_URL", raw)
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL"):
        load_settings()
