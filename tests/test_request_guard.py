"""The request guard (tenants.middleware) and the checked JSON parser (tenants.parsers): each bad
input is a 4xx in the documented shape, never a 500, and nothing is created."""

import json

import pytest
from django.test import Client

from generation.models import Job

pytestmark = pytest.mark.django_db


def assert_error(response, status: int, code: str, param=...):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"type", "code", "message", "param"}
    assert error["code"] == code
    if param is not ...:
        assert error["param"] == param


def test_a_body_over_the_limit_is_413_before_the_view_reads_it(alice, settings):
    settings.REQUEST_BODY_MAX_BYTES = 2048
    settings.IMAGE_BODY_MAX_BYTES = 2048  # /v1/generations may carry input images: its own limit
    body = json.dumps({"prompt": "x" * 4000})
    response = alice.client().post("/v1/generations", body, content_type="application/json")
    assert_error(response, 413, "request_too_large")
    assert not Job.objects.exists()


def test_batches_have_their_own_larger_limit(alice, settings):
    settings.REQUEST_BODY_MAX_BYTES = 2048
    settings.BATCH_BODY_MAX_BYTES = 8192
    item = {"custom_id": "a", "body": {"prompt": "y" * 3000}}
    response = alice.client().post("/v1/batches", {"requests": [item]}, format="json")
    assert response.status_code == 201, response.content
    big = {"requests": [{"custom_id": str(i), "body": {"prompt": "y" * 3000}} for i in range(3)]}
    assert_error(alice.client().post("/v1/batches", big, format="json"), 413, "request_too_large")


def test_a_multipart_upload_over_the_limit_is_refused_before_it_is_spooled(alice, settings):
    settings.BATCH_BODY_MAX_BYTES = 4096
    from django.core.files.uploadedfile import SimpleUploadedFile

    line = json.dumps({"custom_id": "a", "body": {"prompt": "z" * 100}}) + "\n"
    upload = SimpleUploadedFile("b.jsonl", (line * 100).encode(), content_type="application/jsonl")
    response = alice.client().post("/v1/batches", {"file": upload}, format="multipart")
    assert_error(response, 413, "request_too_large")


def test_a_chunked_body_is_bounded_too(alice, settings):
    """Django reads a body only up to Content-Length; without one (chunked) the guard reads it."""
    import io

    settings.REQUEST_BODY_MAX_BYTES = settings.IMAGE_BODY_MAX_BYTES = 2048
    client = alice.client()
    for size, status in ((4000, 413), (100, 202)):
        body = json.dumps({"prompt": "c" * size}).encode()
        response = client.generic(
            "POST",
            "/v1/generations",
            content_type="application/json",
            **{"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"},
        )
        assert response.status_code == status, response.content


def test_a_bad_content_length_is_400(alice):
    response = alice.client().generic(
        "POST", "/v1/generations", b"{}", content_type="application/json", CONTENT_LENGTH="lots"
    )
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("param", ["key", "api_key"])
def test_an_api_key_in_the_query_string_is_refused_with_its_own_code(alice, param):
    response = alice.client().get(f"/v1/generations?{param}={alice.raw_key}")
    assert_error(response, 400, "api_key_in_query", param=param)


def test_google_routes_refuse_query_keys_in_google_s_error_shape(alice):
    response = Client().post(
        f"/v1beta/models/imagen-4-fast:predict?key={alice.raw_key}", {}, content_type="application/json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "query string" in error["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/generations/gen_%00",
        "/v1/batches/batch_%00x",
        "/v1/generations?cursor=%00",
        "/v1/generations?a%00=1",
    ],
)
def test_nul_in_the_path_or_query_is_a_400(alice, path):
    assert_error(alice.client().get(path), 400, "invalid_request")


def test_nul_in_dashboard_query_parameters_is_a_400_not_a_500(alice):
    client = Client()
    client.force_login(alice.user)
    assert client.get("/jobs/?status=%00").status_code == 400
    assert client.get("/jobs/?api_key=key_%00").status_code == 400


def deep(levels: int) -> str:
    return '{"prompt": "p", "metadata": {"a": ' + "[" * levels + "]" * levels + "}}"


@pytest.mark.parametrize("levels", [40, 5000, 100_000])
def test_deeply_nested_json_is_a_400(alice, levels):
    response = alice.client().post("/v1/generations", deep(levels), content_type="application/json")
    assert_error(response, 400, "invalid_request")
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"prompt": "p", "metadata": {"a\\u0000b": "v"}}', "metadata"),
        ('{"prompt": "p", "metadata": {"k": "v\\u0000"}}', "metadata.k"),
        ('{"prompt": "p", "metadata": {"\\ud800": "v"}}', None),
        ('{"prompt": "p\\udfff"}', None),
    ],
)
def test_nul_and_lone_surrogates_anywhere_in_json_are_a_400(alice, body, param):
    response = alice.client().post("/v1/generations", body, content_type="application/json")
    assert_error(response, 400, "invalid_request", param=param)
    assert not Job.objects.exists()


def test_numbers_json_cannot_hold_are_a_400(alice):
    response = alice.client().post(
        "/v1/generations", '{"prompt": "p", "count": ' + "9" * 5000 + "}", content_type="application/json"
    )
    assert_error(response, 400, "invalid_request")


def test_json_check_names_the_path_and_allows_what_is_fine():
    from tenants.errors import InvalidRequest
    from tenants.parsers import json_check, json_parse

    assert json_parse(b'{"a": [1, {"b": "c"}]}') == {"a": [1, {"b": "c"}]}
    with pytest.raises(InvalidRequest) as caught:
        json_check({"a": [1, {"b": "c\x00"}]})
    assert caught.value.param == "a[1].b"
    json_check([[[[1]]]], max_depth=4)
    with pytest.raises(InvalidRequest):
        json_check([[[[[1]]]]], max_depth=4)


def test_admin_is_404_outside_the_allowlist_behind_a_trusted_proxy(admin_client, settings):
    settings.ADMIN_ALLOWED_IPS = ["10.0.0.0/8", "2001:db8::/32"]
    settings.TRUSTED_PROXY_COUNT = 1
    outside = admin_client.get(
        "/admin/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.1.1.1, 203.0.113.9"
    )
    assert outside.status_code == 404
    inside = admin_client.get(
        "/admin/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9, 10.1.1.1"
    )
    assert inside.status_code == 200
    settings.ADMIN_ALLOWED_IPS = []
    assert admin_client.get("/admin/", REMOTE_ADDR="203.0.113.9").status_code == 200
