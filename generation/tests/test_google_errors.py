"""Google error bodies, retry hints and httpx failures become the right typed errors.

These build httpx responses and exceptions directly (the network edge); the provider tests show
the same mapping over real HTTP against the fake upstream.
"""

import json
from datetime import UTC, datetime

import httpx
import pytest

from generation.engine.providers import google_errors
from generation.engine.providers.base import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)

REQUEST = httpx.Request("POST", "https://generativelanguage.googleapis.com/v1beta/models/m:predict")


def response(status: int, payload: object = None, *, text: str | None = None, headers=None) -> httpx.Response:
    content = text.encode() if text is not None else json.dumps(payload).encode()
    return httpx.Response(status, content=content, headers=headers or {}, request=REQUEST)


def status_body(code: int, status: str, message: str, details: list | None = None) -> dict:
    error = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


@pytest.mark.parametrize(
    ("http_status", "upstream_status", "expected"),
    [
        (400, "INVALID_ARGUMENT", UpstreamBadRequest),
        (401, "UNAUTHENTICATED", UpstreamAuthError),
        (403, "PERMISSION_DENIED", UpstreamAuthError),
        (404, "NOT_FOUND", UpstreamNotFound),
        (429, "RESOURCE_EXHAUSTED", UpstreamRateLimited),
        (500, "INTERNAL", UpstreamServerError),
        (503, "UNAVAILABLE", UpstreamServerError),
        (504, "DEADLINE_EXCEEDED", UpstreamServerError),
    ],
)
def test_status_maps_to_typed_error(http_status, upstream_status, expected):
    error = google_errors.error_from_response(
        response(http_status, status_body(http_status, upstream_status, "something happened"))
    )

    assert type(error) is expected
    assert error.http_status == http_status
    assert error.upstream_status == upstream_status
    assert "something happened" in error.message


def test_retry_info_becomes_retry_after():
    body = status_body(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota. Please retry in 53.016342224s.",
        [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": "x"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "53s"},
        ],
    )

    error = google_errors.error_from_response(response(429, body))

    assert isinstance(error, UpstreamRateLimited)
    assert error.retryable
    assert error.retry_after == 53.0


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [
        ("53s", 53.0),
        ("1.5s", 1.5),
        ("0.200s", 0.2),
        ({"seconds": 2, "nanos": 500_000_000}, 2.5),
        ("soon", None),
    ],
)
def test_parse_duration(delay, seconds):
    assert google_errors.parse_duration(delay) == seconds


def test_retry_after_header_in_seconds_is_used_without_retry_info():
    error = google_errors.error_from_response(
        response(429, status_body(429, "RESOURCE_EXHAUSTED", "slow down"), headers={"Retry-After": "7"})
    )

    assert error.retry_after == 7.0


def test_retry_info_wins_over_retry_after_header():
    body = status_body(
        429,
        "RESOURCE_EXHAUSTED",
        "slow down",
        [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}],
    )

    error = google_errors.error_from_response(response(429, body, headers={"Retry-After": "60"}))

    assert error.retry_after == 2.0


def test_retry_after_http_date():
    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)

    assert google_errors.parse_retry_after("Tue, 24 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert google_errors.parse_retry_after("Tue, 24 Nov 2026 11:00:00 GMT", now=now) == 0.0  # past: go now
    assert google_errors.parse_retry_after("whenever", now=now) is None
    assert google_errors.parse_retry_after(None) is None


def test_503_with_retry_after_keeps_the_hint():
    error = google_errors.error_from_response(
        response(
            503, status_body(503, "UNAVAILABLE", "The model is overloaded."), headers={"Retry-After": "3"}
        )
    )

    assert isinstance(error, UpstreamServerError)
    assert error.retry_after == 3.0


def test_vertex_list_wrapped_body_is_unwrapped():
    body = [status_body(429, "RESOURCE_EXHAUSTED", "Resource exhausted. Please try again later.")]

    error = google_errors.error_from_response(response(429, body))

    assert isinstance(error, UpstreamRateLimited)
    assert error.upstream_status == "RESOURCE_EXHAUSTED"
    assert "Resource exhausted. Please try again later." in error.message


def test_wrong_api_key_is_an_auth_error_not_a_bad_request():
    # Google says 400 INVALID_ARGUMENT for a bad key; other routes (other keys) may still work.
    body = status_body(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    )

    error = google_errors.error_from_response(response(400, body))

    assert isinstance(error, UpstreamAuthError)
    assert error.route_fault


def test_failed_precondition_is_a_route_fault_not_a_bad_request():
    body = status_body(400, "FAILED_PRECONDITION", "User location is not supported for the API use.")

    error = google_errors.error_from_response(response(400, body))

    assert type(error) is UpstreamError
    assert error.route_fault and not error.retryable


@pytest.mark.parametrize(
    ("status", "expected"), [(502, UpstreamServerError), (400, UpstreamBadRequest), (404, UpstreamNotFound)]
)
def test_non_json_bodies_still_map_by_status(status, expected):
    error = google_errors.error_from_response(
        response(
            status, text="<html><title>502 Bad Gateway</title></html>", headers={"content-type": "text/html"}
        )
    )

    assert type(error) is expected
    assert error.upstream_status is None
    assert "502 Bad Gateway" in error.message


def test_empty_body_is_described():
    error = google_errors.error_from_response(response(500, text=""))

    assert isinstance(error, UpstreamServerError)
    assert "empty body" in error.message


def test_messages_never_carry_credentials():
    leaked = "AIzaSyA1234567890abcdefghijklmnopqrstuv"
    body = status_body(400, "INVALID_ARGUMENT", f"bad request for key={leaked} with Bearer ya29.secret-token")

    error = google_errors.error_from_response(response(400, body))

    assert leaked not in error.message
    assert "ya29.secret-token" not in error.message
    assert "[redacted]" in error.message


def test_long_messages_are_capped():
    error = google_errors.error_from_response(response(500, status_body(500, "INTERNAL", "x" * 10_000)))

    assert len(error.message) <= google_errors.MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ReadTimeout("timed out", request=REQUEST), UpstreamTimeout),
        (httpx.ConnectTimeout("timed out", request=REQUEST), UpstreamTimeout),
        (httpx.PoolTimeout("no connection", request=REQUEST), UpstreamTimeout),
        (httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST), UpstreamConnectionError),
        (httpx.RemoteProtocolError("Server disconnected", request=REQUEST), UpstreamConnectionError),
        (httpx.ReadError("reset by peer", request=REQUEST), UpstreamConnectionError),
        (httpx.DecodingError("bad gzip", request=REQUEST), UpstreamProtocolError),
    ],
)
def test_httpx_exceptions_map_to_typed_errors(exc, expected):
    error = google_errors.error_from_exception(exc)

    assert type(error) is expected
    assert "generativelanguage.googleapis.com" in error.message
    assert error.retryable


def test_unexpected_status_is_a_protocol_error():
    error = google_errors.error_from_response(response(302, text="moved"))

    assert isinstance(error, UpstreamProtocolError)


@pytest.mark.parametrize(
    ("message", "model_gone"),
    [
        (
            "models/imagen-4.0-generate-001 is not found for API version v1beta, or is not supported for "
            "predict. Call ListModels to see the list of available models and their supported methods.",
            True,
        ),
        (
            "Publisher Model `projects/p/locations/global/publishers/google/models/gemini-x` was not found "
            "or your project does not have access to it.",
            True,
        ),
        ("Requested entity was not found.", False),
        ("The requested URL /v1beta/modelz was not found on this server.", False),
    ],
)
def test_only_a_404_about_the_model_means_the_model_is_retired(message, model_gone):
    error = google_errors.error_from_response(response(404, status_body(404, "NOT_FOUND", message)))
    assert isinstance(error, UpstreamNotFound) and not error.retryable
    assert isinstance(error, UpstreamModelNotFound) is model_gone
    assert error.code == ("upstream_model_not_found" if model_gone else "upstream_not_found")


def test_a_non_json_404_is_never_a_retired_model():
    error = google_errors.error_from_response(response(404, text="<html>models/x is not found</html>"))
    assert isinstance(error, UpstreamNotFound) and not isinstance(error, UpstreamModelNotFound)
