"""Schema-driven fuzzing: every operation of the OpenAPI schema, with valid and invalid
input, in-process (ASGI) against the real PostgreSQL and Redis.

Each response must be no 500, have a documented status, content type, headers and body
shape; the app must accept what the schema allows and refuse what it does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.factory import create_app
from tests.conftest import write_headers

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
]
# Examples per operation (valid and invalid input together): about 15 s for the file.
MAX_EXAMPLES = 50

# The schema does not depend on the database: read it from an app that is never started.
_OFFLINE = Settings(  # type: ignore[call-arg]
    _env_file=None, database_url="postgresql://unused/unused", environment="testing"
)
schema = schemathesis.openapi.from_dict(create_app(_OFFLINE).openapi())


@pytest.fixture
def fuzz_app(clean_db: None, make_settings: Callable[..., Settings]) -> Iterator[FastAPI]:
    # Started by schemathesis on its own event loop, on the first request.
    yield create_app(make_settings())
    shutdown_lifespans()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI does not flake on a rare draw
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    # Every case with a valid write token: the fuzzing is about the input, tests/test_auth.py
    # about the token.
    headers = write_headers(fuzz_app.state.settings)
    case.call_and_validate(app=fuzz_app, checks=CHECKS, headers=headers)
