"""Hostile input gets a 4xx that renders, never a 500; answers and logs stay small and
carry no more of the caller's input than a short snippet."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import Request
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db import create_engine
from app.errors import MAX_INPUT_CHARS
from app.log import JsonFormatter
from tests.conftest import product

PRODUCTS = "/api/v1/products"
# Sent inside hostile values; must never reach a log line.
MARKER = "MARKER-7f3a"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything the app logs, at any level, as the JSON lines journald gets."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    # The test's own HTTP client logs the URLs it requests.
    handler.addFilter(lambda record: not record.name.startswith(("httpx", "httpcore")))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def _raw(body: str) -> dict[str, object]:
    # httpx's json= refuses NaN and lone surrogates: send the bytes as a client could.
    return {"content": body.encode(), "headers": {"content-type": "application/json"}}


def _assert_422(response) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["detail"]  # type: ignore[no-any-return]


async def test_nul_in_a_query_is_422(client, log_lines) -> None:  # type: ignore[no-untyped-def]
    response = await client.get(f"{PRODUCTS}?category={MARKER}%00b")
    (error,) = _assert_422(response)
    assert error["loc"] == ["query", "category"]
    assert error["type"] == "string_pattern_mismatch"
    assert MARKER not in log_lines.getvalue()


@pytest.mark.parametrize("field", ["sku", "name", "category", "description"])
async def test_nul_in_a_body_string_is_422(client, field, log_lines) -> None:  # type: ignore[no-untyped-def]
    response = await client.post(PRODUCTS, json=product(**{field: f"{MARKER}\x00"}))
    (error,) = _assert_422(response)
    assert error["loc"] == ["body", field]
    assert MARKER not in log_lines.getvalue()


async def test_nul_in_a_patch_is_422(client) -> None:  # type: ignore[no-untyped-def]
    created = (await client.post(PRODUCTS, json=product())).json()
    response = await client.patch(f"{PRODUCTS}/{created['id']}", json={"name": "a\x00"})
    _assert_422(response)


@pytest.mark.parametrize("field", ["sku", "name", "description"])
async def test_lone_surrogate_is_422(client, field) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(product(**{field: "PLACEHOLDER"})).replace("PLACEHOLDER", "a\\ud800b")
    (error,) = _assert_422(await client.post(PRODUCTS, **_raw(body)))
    assert error["type"] == "string_unicode"
    assert error["input"] == "a?b"  # the surrogate has no UTF-8 form: replaced


async def test_lone_surrogate_as_a_key_is_422(client) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(product(PLACEHOLDER=1)).replace("PLACEHOLDER", "\\udfff")
    (error,) = _assert_422(await client.post(PRODUCTS, **_raw(body)))
    assert (error["loc"], error["input"]) == (["body"], "?")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["price", "stock", "name"])
async def test_non_finite_number_is_422(client, number, field) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(product(**{field: "PLACEHOLDER"})).replace('"PLACEHOLDER"', number)
    (error,) = _assert_422(await client.post(PRODUCTS, **_raw(body)))
    assert error["loc"] == ["body", field]
    assert error["input"] == number


async def test_non_finite_body_is_422(client) -> None:  # type: ignore[no-untyped-def]
    (error,) = _assert_422(await client.post(PRODUCTS, **_raw("NaN")))
    assert error["input"] == "NaN"


async def test_undecodable_body_is_400(client) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(product()).encode().replace(b"Widget", b"Wid\xffget")
    response = await client.post(
        PRODUCTS, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "There was an error parsing the body"}


async def test_empty_price_and_patch_null_are_refused_by_schema_and_validator(client) -> None:  # type: ignore[no-untyped-def]
    _assert_422(await client.post(PRODUCTS, json=product(price="")))
    created = (await client.post(PRODUCTS, json=product())).json()
    _assert_422(await client.patch(f"{PRODUCTS}/{created['id']}", json={"price": None}))

    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    for model in ("ProductCreate", "ProductUpdate"):
        price = schemas[model]["properties"]["price"]
        assert [branch["type"] for branch in price["anyOf"]] == ["number", "string"]
        assert not re.search(price["anyOf"][1]["pattern"], "")
        assert "default" not in price
    nullable = {
        name
        for name, prop in schemas["ProductUpdate"]["properties"].items()
        if {"type": "null"} in prop.get("anyOf", [])
    }
    assert nullable == {"description"}


@pytest.mark.parametrize("price", ["9.99", "0", "9999999999.99", 0, 12.5, 0.07])
async def test_prices_the_schema_allows_are_accepted(client, price) -> None:  # type: ignore[no-untyped-def]
    assert (await client.post(PRODUCTS, json=product(price=price))).status_code == 201


@pytest.mark.parametrize("price", [" 1", "1.", ".5", "+1", "1e2", "NaN", "1.234", True])
async def test_prices_the_schema_refuses_are_422(client, price) -> None:  # type: ignore[no-untyped-def]
    _assert_422(await client.post(PRODUCTS, json=product(price=price)))


async def test_whitespace_only_labels_are_422_and_labels_are_stripped(client) -> None:  # type: ignore[no-untyped-def]
    _assert_422(await client.post(PRODUCTS, json=product(name=" \t\n")))
    created = await client.post(PRODUCTS, json=product(name="  Widget \n"))
    assert created.json()["name"] == "Widget"


async def test_422_quotes_a_bounded_snippet(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.post(PRODUCTS, json=product(sku="x" * 100_000, bogus="y" * 1_000))
    errors = _assert_422(response)
    assert len(response.content) < 2_000
    assert {e["type"] for e in errors} == {"string_too_long", "extra_forbidden"}
    for error in errors:
        assert len(error["input"]) <= MAX_INPUT_CHARS + 1  # the snippet and an ellipsis
    whole_body = _assert_422(await client.post(PRODUCTS, json=["z" * 1_000]))
    assert whole_body[0]["input"].startswith('["zzz') and len(whole_body[0]["input"]) == 65


async def test_huge_body_is_413_unread(client) -> None:  # type: ignore[no-untyped-def]
    limit = client.app.state.settings.max_body_bytes
    body = b'{"sku": "' + b"x" * 10_000_000 + b'"}'
    declared = await client.post(
        PRODUCTS, content=body, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413
    assert declared.json() == {"detail": "Content Too Large"}

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _chunk in range(limit // 1024 + 2):
            yield b" " * 1024

    streamed = await client.post(
        PRODUCTS, content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json() == {"detail": "Content Too Large"}


async def test_body_limit_is_a_setting(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    client = await app_factory(make_settings(max_body_bytes=100))
    assert (await client.post(PRODUCTS, json=product(description="d" * 100))).status_code == 413
    assert (await client.post(PRODUCTS, json=product())).status_code == 201


async def test_options_and_405_list_every_method_of_the_path(client) -> None:  # type: ignore[no-untyped-def]
    item = await client.options(f"{PRODUCTS}/1")
    assert item.status_code == 204
    assert item.headers["allow"] == "DELETE, GET, OPTIONS, PATCH"
    collection = await client.options(PRODUCTS)
    assert collection.headers["allow"] == "GET, OPTIONS, POST"
    put = await client.put(f"{PRODUCTS}/1", json={})
    assert put.status_code == 405
    assert put.headers["allow"] == "DELETE, GET, OPTIONS, PATCH"
    assert put.json() == {"detail": "Method Not Allowed"}


async def test_cors_preflight_still_answered_by_cors(app_factory, make_settings) -> None:  # type: ignore[no-untyped-def]
    client = await app_factory(make_settings(cors_origins="https://shop.example"))
    response = await client.options(
        f"{PRODUCTS}/1",
        headers={"origin": "https://shop.example", "access-control-request-method": "PATCH"},
    )
    assert response.status_code == 200
    assert "PATCH" in response.headers["access-control-allow-methods"]


async def test_unhandled_error_logs_type_and_request_id_only(client, log_lines) -> None:  # type: ignore[no-untyped-def]
    async def boom(request: Request) -> None:
        # A driver error quotes the value it could not use; hide_parameters cannot help.
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT CAST(:v AS integer)"), {"v": MARKER})

    client.app.add_api_route("/boom", boom)
    response = await client.get("/boom", headers={"X-Request-ID": "r-500"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert MARKER not in log_lines.getvalue()
    (line,) = [json.loads(x) for x in log_lines.getvalue().splitlines() if "unhandled" in x]
    assert line["request_id"] == "r-500"
    assert line["error"] == "DBAPIError"
    assert "in boom" in line["stack"]


async def test_database_errors_hide_parameters(make_settings) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(make_settings())
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as caught:
                await conn.execute(text("SELECT CAST(:v AS integer)"), {"v": MARKER})
    finally:
        await engine.dispose()
    assert "[SQL parameters hidden due to hide_parameters=True]" in str(caught.value)
