"""Fuzz the HTTP API from its own OpenAPI document (schemathesis): no input may cause a server error."""

from __future__ import annotations

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def api_schema(live_server: str):
    return schemathesis.openapi.from_url(f"{live_server}/openapi.json")


def test_openapi_document_lists_the_public_endpoints(live_server: str) -> None:
    paths = httpx.get(f"{live_server}/openapi.json", timeout=30).json()["paths"]
    for path in ("/webhooks/rest/webhook", "/webhooks/twilio/sms", "/webhooks/telegram", "/webhooks/kakao",
                 "/healthz", "/api/identity/otp"):
        assert path in paths, path


def test_no_endpoint_answers_5xx_to_generated_input(api_schema, live_server: str) -> None:
    """Every operation, generated examples (valid and invalid), no 5xx anywhere."""
    from hypothesis import HealthCheck, given, settings

    failures: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            response = case.call(base_url=live_server, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}")

        run()
    assert failures == []
