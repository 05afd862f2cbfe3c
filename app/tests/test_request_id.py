from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from app.log import JsonFormatter


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("app.access")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_given_request_id_is_echoed_and_logged(client, access_lines) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/health/live?secret=1", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    (line,) = _lines(access_lines)
    assert line["request_id"] == "abc-123"
    assert line["method"] == "GET"
    assert line["path"] == "/health/live"  # no query string
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    assert {"timestamp", "level", "logger"} <= set(line)


async def test_request_id_generated_when_missing_or_unsafe(client, access_lines) -> None:  # type: ignore[no-untyped-def]
    generated = (await client.get("/health/live")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    unsafe = await client.get("/health/live", headers={"X-Request-ID": "a b\tc" + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])
    ids = [line["request_id"] for line in _lines(access_lines)]
    assert ids == [generated, unsafe.headers["x-request-id"]]


async def test_error_responses_carry_the_id(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/api/v1/products/999", headers={"X-Request-ID": "r-404"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "r-404"
