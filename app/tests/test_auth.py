"""Writes need a bearer token granting products:write; reads stay public."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import jwt
import pytest

from app import token as token_cli
from app.auth import WRITE_SCOPE, mint, verify
from app.config import DEFAULT_APP_NAME
from tests.conftest import SECRET, product

PRODUCTS = "/api/v1/products"
APP_ROOT = Path(__file__).resolve().parents[1]
REALM = f'Bearer realm="{DEFAULT_APP_NAME}"'
INVALID = (
    f'{REALM}, error="invalid_token", error_description="invalid, expired or not for this app"'
)
INSUFFICIENT = f'{REALM}, error="insufficient_scope", scope="{WRITE_SCOPE}"'
# Each write, as (method, path, body); the path's product exists (the `written` fixture).
WRITES = [
    ("POST", PRODUCTS, product(sku="NEW-1")),
    ("PATCH", f"{PRODUCTS}/1", {"stock": 1}),
    ("DELETE", f"{PRODUCTS}/1", None),
]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": "someone",
        "scope": WRITE_SCOPE,
        "aud": DEFAULT_APP_NAME,
        "iat": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def _signed(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def _forged(header: dict[str, str], claims: dict[str, Any]) -> str:
    """A token whose header names another algorithm, with a valid HMAC of SECRET anyway."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture
async def bare(app_factory, make_settings):  # type: ignore[no-untyped-def]
    """A client of the usual app that sends no token of its own."""
    return await app_factory(make_settings(), authenticated=False)


@pytest.fixture
async def written(bare):  # type: ignore[no-untyped-def]
    """`bare`, with product 1 in the database."""
    created = await bare.post(PRODUCTS, json=product(), headers=_bearer(_signed(_claims())))
    assert created.json()["id"] == 1
    return bare


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_no_bearer_token_is_401(written, method, path, body) -> None:  # type: ignore[no-untyped-def]
    for authorization in (None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc"):
        headers = {"Authorization": authorization} if authorization is not None else {}
        response = await written.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, authorization
        assert response.headers["www-authenticate"] == REALM
        assert response.json() == {"detail": "a bearer token is required"}
    assert (await written.get(f"{PRODUCTS}/1")).json()["stock"] == 5  # nothing changed


def _expired(key: str = SECRET) -> str:
    return _signed(_claims(iat=int(time.time()) - 600, exp=int(time.time()) - 120), key)


# Built when the test runs: a token made at collection could expire before its test.
INVALID_TOKENS = [
    ("wrong-key", lambda: _signed(_claims(), key="y" * 40), "InvalidSignatureError"),
    ("expired", _expired, "ExpiredSignatureError"),
    ("another-app", lambda: _signed(_claims(aud="another-app")), "InvalidAudienceError"),
    (
        "audience-list",
        lambda: _signed(_claims(aud=[DEFAULT_APP_NAME, "another-app"])),
        "InvalidAudienceError",
    ),
    ("no-audience", lambda: _signed(_claims(aud=None)), "MissingRequiredClaimError"),
    ("no-exp", lambda: _signed(_claims(exp=None)), "MissingRequiredClaimError"),
    ("no-iat", lambda: _signed(_claims(iat=None)), "MissingRequiredClaimError"),
    ("no-sub", lambda: _signed(_claims(sub=None)), "MissingRequiredClaimError"),
    (
        "issued-in-the-future",
        lambda: _signed(_claims(iat=int(time.time()) + 600)),
        "ImmatureSignatureError",
    ),
    ("alg-none", lambda: jwt.encode(_claims(), "", algorithm="none"), "InvalidAlgorithmError"),
    (
        "alg-rs256",
        lambda: _forged({"alg": "RS256", "typ": "JWT"}, _claims()),
        "InvalidAlgorithmError",
    ),
    (
        "alg-hs512",
        lambda: _forged({"alg": "HS512", "typ": "JWT"}, _claims()),
        "InvalidAlgorithmError",
    ),
    ("garbage", lambda: "not-a-token", "DecodeError"),
    ("malformed", lambda: "a.b.c", "DecodeError"),
]


def _auth_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "app.auth"]


@pytest.mark.parametrize(
    ("make", "reason"),
    [pytest.param(make, reason, id=name) for name, make, reason in INVALID_TOKENS],
)
async def test_invalid_token_is_401_invalid_token(bare, make, reason, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="app.auth")
    token = make()
    response = await bare.post(PRODUCTS, json=product(), headers=_bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == INVALID
    assert response.json() == {"detail": "the token is not valid"}
    (record,) = _auth_records(caplog)
    assert (record.levelname, record.getMessage()) == ("WARNING", "write refused")
    assert record.reason == reason  # type: ignore[attr-defined]
    # The reason only: neither the token nor its claims reach the log.
    logged = json.dumps(vars(record), default=str)
    assert token not in logged and "someone" not in logged
    assert (await bare.get(PRODUCTS)).json()["total"] == 0


async def test_expiry_allows_a_little_clock_skew(bare) -> None:  # type: ignore[no-untyped-def]
    token = _signed(_claims(iat=int(time.time()) - 600, exp=int(time.time()) - 10))
    assert (await bare.post(PRODUCTS, json=product(), headers=_bearer(token))).status_code == 201


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_token_without_the_scope_is_403(written, method, path, body, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="app.auth")
    scopes = [None, "", "products:read", "products:write:extra", "PRODUCTS:WRITE", ["x"]]
    for scope in scopes:
        token = _signed(_claims(sub="reader", scope=scope))
        response = await written.request(method, path, json=body, headers=_bearer(token))
        assert response.status_code == 403, scope
        assert response.headers["www-authenticate"] == INSUFFICIENT
        assert response.json() == {"detail": f"the token does not grant {WRITE_SCOPE}"}
    records = _auth_records(caplog)
    assert len(records) == len(scopes)
    assert {(r.reason, r.sub) for r in records} == {("insufficient_scope", "reader")}  # type: ignore[attr-defined]
    assert (await written.get(f"{PRODUCTS}/1")).json()["stock"] == 5


async def test_scope_among_others_is_enough(bare) -> None:  # type: ignore[no-untyped-def]
    token = _signed(_claims(scope=f"products:read {WRITE_SCOPE}"))
    assert (await bare.post(PRODUCTS, json=product(), headers=_bearer(token))).status_code == 201


async def test_previous_keys_verify_but_a_removed_one_does_not(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    new, old, removed = "n" * 40, "o" * 40, "r" * 40
    client = await app_factory(
        make_settings(secret_key=new, secret_keys_previous=[old]), authenticated=False
    )
    for sku, key, status in [("A", new, 201), ("B", old, 201), ("C", removed, 401)]:
        token = mint(key, DEFAULT_APP_NAME, "rotation", [WRITE_SCOPE], ttl=60)
        response = await client.post(PRODUCTS, json=product(sku=sku), headers=_bearer(token))
        assert response.status_code == status, sku
    # The expiry of a token signed with a previous key is still checked.
    response = await client.post(PRODUCTS, json=product(sku="D"), headers=_bearer(_expired(old)))
    assert response.headers["www-authenticate"] == INVALID


async def test_without_secret_key_every_write_is_refused(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    client = await app_factory(make_settings(secret_key=None), authenticated=False)
    for token in (_signed(_claims()), jwt.encode(_claims(), "", algorithm="none")):
        response = await client.post(PRODUCTS, json=product(), headers=_bearer(token))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == INVALID
    assert (await client.get(PRODUCTS)).status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer drill", "Bearer " + "x" * 5000, "Basic x"])
async def test_reads_are_public_and_ignore_authorization(written, authorization) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": authorization} if authorization is not None else {}
    for path in (PRODUCTS, f"{PRODUCTS}/1", "/health/live", "/health/ready", "/version"):
        response = await written.get(path, headers=headers)
        assert response.status_code == 200, path
        assert "www-authenticate" not in response.headers


async def test_openapi_shows_the_bearer_scheme_on_writes_only(bare) -> None:  # type: ignore[no-untyped-def]
    schema = (await bare.get("/openapi.json")).json()
    scheme = schema["components"]["securitySchemes"]["HTTPBearer"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method in ("post", "patch", "delete"):
                assert operation["security"] == [{"HTTPBearer": []}], (method, path)
                for status in ("401", "403"):
                    headers = operation["responses"][status]["headers"]
                    assert headers["WWW-Authenticate"]["required"] is True
            else:
                assert "security" not in operation, (method, path)


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # The module the console script runs, from a directory without a .env file.
    environ = {"PATH": os.environ["PATH"], "PYTHONPATH": str(APP_ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "app.token", *args],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_is_the_packaged_console_script() -> None:
    with (APP_ROOT / "pyproject.toml").open("rb") as file:
        scripts = tomllib.load(file)["project"]["scripts"]
    assert scripts["fastapi-ops-app-token"] == "app.token:main"


async def test_cli_token_verifies_and_writes(bare, tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = ("--subject", "deploy-bot", "--scope", WRITE_SCOPE, "--scope", "x:y", "--ttl", "120")
    done = _cli(tmp_path, *args, SECRET_KEY=SECRET)
    assert (done.returncode, done.stderr) == (0, "")
    token = done.stdout.strip()
    assert done.stdout == token + "\n"
    claims = verify(token, [SECRET], DEFAULT_APP_NAME)
    assert (claims["sub"], claims["scope"]) == ("deploy-bot", f"{WRITE_SCOPE} x:y")
    assert claims["exp"] - claims["iat"] == 120
    assert (await bare.post(PRODUCTS, json=product(), headers=_bearer(token))).status_code == 201

    other = _cli(tmp_path, "--subject", "s", SECRET_KEY=SECRET, APP_NAME="shop").stdout.strip()
    assert verify(other, [SECRET], "shop")["scope"] == ""  # no --scope: grants nothing


def test_cli_without_secret_key_exits_2(tmp_path: Path) -> None:
    done = _cli(tmp_path, "--subject", "s", "--scope", WRITE_SCOPE)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "fastapi-ops-app-token: invalid settings: SECRET_KEY: Field required\n"


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        (["--subject", "s"], "short-key", "SECRET_KEY: Value error, must have at least 32"),
        ([], SECRET, "the following arguments are required: --subject"),
        (["--subject", " "], SECRET, "--subject must not be blank"),
        (["--subject", "s", "--scope", "a b"], SECRET, "a --scope must be one word"),
        (["--subject", "s", "--ttl", "0"], SECRET, "--ttl must be 1 to 2592000 seconds"),
        (["--subject", "s", "--ttl", "2592001"], SECRET, "--ttl must be 1 to 2592000 seconds"),
        (["--subject", "s", "--ttl", "soon"], SECRET, "argument --ttl: invalid int value"),
    ],
)
def test_cli_refuses_with_one_line(  # type: ignore[no-untyped-def]
    monkeypatch, tmp_path, capsys, args, key, message
) -> None:
    # In-process (the subprocess above shows the same path end to end): faster.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APP_NAME", raising=False)
    monkeypatch.setenv("SECRET_KEY", key)
    with pytest.raises(SystemExit) as caught:
        token_cli.main(args)
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("fastapi-ops-app-token: ") and message in line, line
    assert "short-key" not in line  # never the key itself
