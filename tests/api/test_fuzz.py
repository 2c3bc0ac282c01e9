"""Property-based fuzzing of every route with schemathesis, from the service's own OpenAPI
schema, against a real server on 127.0.0.1 (admin token, so every route is reachable). No
response is a 500, and every response matches the schema: a documented status code, the
documented content type, a body of the documented shape.

The number of examples per route is METERING_FUZZ_EXAMPLES (default 25, what CI runs); set it
higher for a longer hunt.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from metering.api.app import create_app
from metering.settings import Settings
from tests.conftest import ADMIN, Server

EXAMPLES = int(os.environ.get("METERING_FUZZ_EXAMPLES", "25"))
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("fuzz") / "metering.duckdb").start()
    yield server
    server.stop()


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx, value) -> bytes | None:
    """NDJSON bodies as generated text (lines of it, JSON or not: the route must cope)."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else None


@schemathesis.serializer("application/x-protobuf")
def _protobuf(ctx, value) -> bytes | None:
    """Binary bodies (POST /v1/traces) as generated: bytes, or text as UTF-8 (protobuf or not: the route must cope)."""
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else None


# The schema the server publishes at /openapi.json (the same app, built here without serving).
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_every_route_answers_within_its_schema_and_never_500(case, fuzz_server):
    case.call_and_validate(
        base_url=fuzz_server.url, headers={"Authorization": f"Bearer {ADMIN}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
