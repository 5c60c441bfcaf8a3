"""A hand-written battery of hostile inputs for the routes the schema fuzzer does not reach well:
the OpenAI and Google compatibility routes, signed files, batch uploads (JSON, JSONL, multipart)
and webhooks, plus every case issue 13 found giving a 500. Each must answer a 4xx in its route's
documented error shape and create nothing. Runs on SQLite and on PostgreSQL (NUL bytes, date
overflow and huge integers fail differently there), like the rest of the suite."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from generation.models import Batch, Job, Route, WebhookEndpoint

pytestmark = pytest.mark.django_db

NATIVE_KEYS = {"type", "code", "message", "param"}
OPENAI_KEYS = {"message", "type", "param", "code"}
GOOGLE_KEYS = {"code", "message", "status"}  # plus "details", as Google sends
DEEP = "[" * 100_000 + "]" * 100_000

PREDICT = "/v1beta/models/imagen-4.0-fast-generate-001:predict"
GENERATE_CONTENT = "/v1beta/models/gemini-3.1-flash-image:generateContent"


def shape_for(path: str) -> set[str]:
    if path.startswith("/v1/images/"):
        return OPENAI_KEYS
    if ":predict" in path or ":generateContent" in path:
        return GOOGLE_KEYS
    return NATIVE_KEYS


def assert_refused(response, path: str, status: int | tuple = 400):
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (path, response.status_code, response.content[:300])
    error = response.json()["error"]
    keys = shape_for(path)
    assert set(error) == keys if keys is NATIVE_KEYS else keys <= set(error), error
    return error


@pytest.fixture
def api(alice):
    return alice.client()


@pytest.fixture(autouse=True)
def nothing_created():
    yield
    assert not Job.objects.exists() and not Batch.objects.exists()


# --- Bodies that broke the parsers ----------------------------------------------------------------
BODY_ROUTES = ["/v1/generations", "/v1/images/generations", PREDICT, GENERATE_CONTENT, "/v1/batches"]


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        '{"prompt": ' + DEEP + "}",
        '{"prompt": "x", "n": ' + "9" * 5000 + "}",
        '{"prompt": "\\ud800"}',
        '{"prompt": "a\\u0000b"}',
        "[1, 2",
        "\xff\xfe",
    ],
    ids=["deep-array", "deep-value", "huge-int", "lone-surrogate", "nul", "truncated", "not-utf8"],
)
def test_malformed_json_bodies(api, path, body):
    assert_refused(
        api.post(path, body.encode("utf-8", "surrogatepass"), content_type="application/json"), path
    )


@pytest.mark.parametrize("path", ["/v1/generations", "/v1/images/generations"])
@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "p", "metadata": {"k\x00": "v"}},
        {"prompt": "p", "metadata": {"k": "v\x00"}},
        {"prompt": "p", "user": "u\x00"},
    ],
)
def test_nul_in_keys_and_values(api, path, body):
    if path == "/v1/generations" and "user" in body:
        body = {"prompt": "p", "negative_prompt": "n\x00"}
    assert_refused(api.post(path, json.dumps(body), content_type="application/json"), path)


def test_lone_surrogate_and_nul_keys_in_google_labels(api):
    for raw in ('{"\\udc00": "x"}', '{"a\\u0000": "x"}', '{"a": "\\u0000"}'):
        body = '{"instances": [{"prompt": "p"}], "parameters": {"sampleCount": 1}, "labels": ' + raw + "}"
        assert_refused(api.post(PREDICT, body, content_type="application/json"), PREDICT)


@pytest.mark.parametrize(
    "contents",
    [
        [{"parts": 5}],
        [{"parts": "text"}],
        [{"parts": [5]}],
        [{"parts": [{"text": "p"}], "role": 5}],
        5,
        [[]],
    ],
)
def test_generate_content_with_wrong_shapes(api, contents):
    body = {"contents": contents, "generationConfig": {"responseModalities": ["IMAGE"]}}
    assert_refused(api.post(GENERATE_CONTENT, body, format="json"), GENERATE_CONTENT)


# --- Strict JSON types ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "p", "count": "2"}, "count"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": "p", "count": 2.0}, "count"),
        ({"prompt": "p", "count": True}, "count"),
        ({"prompt": "p", "seed": "7"}, "seed"),
        ({"prompt": "p", "tier": 1}, "tier"),
        ({"prompt": "p", "metadata": {"k": 5}}, "metadata.k"),
        ({"prompt": "p", "metadata": []}, "metadata"),
        ({"prompt": ["p"]}, "prompt"),
    ],
)
def test_wrong_json_types_are_refused_not_coerced(api, body, param):
    error = assert_refused(api.post("/v1/generations", body, format="json"), "/v1/generations")
    assert error["param"] == param


def test_a_batch_item_with_a_wrong_type_names_it(api):
    body = {"requests": [{"custom_id": "a", "body": {"prompt": "p", "count": "2"}}]}
    assert_refused(api.post("/v1/batches", body, format="json"), "/v1/batches")


# --- Paths and query strings ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/v1/generations/gen_%00",
        "/v1/generations/%00/cancel",
        "/v1/batches/batch_%00",
        "/v1/batches/%00/items",
        "/v1/batches/%00/results",
        "/v1/webhook/deliveries/whdel_%00/retry",
        "/v1/generations?cursor=gen_%00",
        "/v1/batches?cursor=%00",
        "/v1/usage?start=%00",
    ],
)
def test_nul_in_ids_and_parameters(api, path):
    method = api.post if path.endswith(("/cancel", "/retry")) else api.get
    assert_refused(method(path), path)


@pytest.mark.parametrize("cursor", ["%C2%B2", "9" * 5000, "-1", "1.5", "%EF%BC%91"])
def test_batch_item_cursors(api, cursor, alice):
    created = api.post(
        "/v1/batches", {"requests": [{"custom_id": "a", "body": {"prompt": "p"}}]}, format="json"
    )
    batch_id = created.json()["id"]
    error = assert_refused(api.get(f"/v1/batches/{batch_id}/items?cursor={cursor}"), "/v1/batches")
    assert error["param"] == "cursor"
    Batch.objects.all().delete()
    Job.objects.all().delete()


@pytest.mark.parametrize("limit", ["%C2%B2", "9" * 5000, "0", "1e3"])
def test_page_limits(api, limit):
    for path in ("/v1/generations", "/v1/batches", "/v1/webhook/deliveries"):
        assert assert_refused(api.get(f"{path}?limit={limit}"), path)["param"] == "limit"


@pytest.mark.parametrize(
    "query", ["start=9999-12-01", "start=9999-12-31&end=9999-12-31", "end=9999-12-31", "start=99999-01-01"]
)
def test_usage_dates_that_overflow(api, query):
    assert_refused(api.get(f"/v1/usage?{query}"), "/v1/usage")


@pytest.mark.parametrize("path", ["/v1/generations", "/v1/images/generations", PREDICT, "/v1/models"])
def test_keys_in_query_strings(alice, path):
    client = Client()
    if path == "/v1/models":
        response = client.get(f"{path}?key={alice.raw_key}")
    else:
        response = client.post(f"{path}?key={alice.raw_key}", "{}", content_type="application/json")
    assert_refused(response, path)


# --- Signed files ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query",
    [
        "expires=9999999999&signature=%C3%A9",
        "expires=9999999999&signature=%00",
        "expires=" + "9" * 5000 + "&signature=abc",
        "expires=%C2%B2&signature=abc",
        "signature=abc",
        "",
    ],
)
def test_odd_image_signatures_are_403_not_500(query):
    response = Client().get(f"/files/img_01abc.png?{query}")
    assert response.status_code in (400, 403), response.content
    assert set(response.json()["error"]) == NATIVE_KEYS


# --- Batch uploads --------------------------------------------------------------------------------
def test_multipart_without_a_boundary(api):
    response = api.generic("POST", "/v1/batches", b"--x\r\n\r\n", content_type="multipart/form-data")
    assert_refused(response, "/v1/batches")


def test_multipart_with_a_broken_body(api):
    response = api.generic(
        "POST", "/v1/batches", b"garbage without parts", content_type="multipart/form-data; boundary=zz"
    )
    assert_refused(response, "/v1/batches")


@pytest.mark.parametrize(
    "line",
    [
        '{"custom_id": "a\\u0000", "body": {"prompt": "p"}}',
        '{"custom_id": "a", "body": {"prompt": "p", "metadata": {"\\u0000": "v"}}}',
        '{"custom_id": "\\ud800", "body": {"prompt": "p"}}',
        '{"custom_id": "a", "body": ' + DEEP + "}",
        '{"custom_id": 5, "body": {"prompt": "p"}}',
        '{"custom_id": "a", "body": {"prompt": 42}}',
        "not json",
    ],
)
@pytest.mark.parametrize("transport", ["jsonl", "multipart", "json"])
def test_bad_batch_items(api, line, transport):
    if transport == "jsonl":
        response = api.generic("POST", "/v1/batches", line.encode(), content_type="application/jsonl")
    elif transport == "multipart":
        upload = SimpleUploadedFile("b.jsonl", line.encode(), content_type="application/jsonl")
        response = api.post("/v1/batches", {"file": upload}, format="multipart")
    else:
        body = '{"requests": [' + line + "]}"
        response = api.generic("POST", "/v1/batches", body.encode(), content_type="application/json")
    assert_refused(response, "/v1/batches")


# --- Webhooks -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"url": 5},
        {"url": "https://hooks.example.com/\x00"},
        {"url": ["https://hooks.example.com/"]},
        {"url": "https://[2002:7f00:1::1]/hook"},
        {"url": "https://hooks.example.com:6379/x"},
        {"url": "https://" + "a" * 5000 + ".example.com/"},
    ],
)
def test_bad_webhook_urls(api, body, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    assert_refused(api.put("/v1/webhook", json.dumps(body), content_type="application/json"), "/v1/webhook")
    assert not WebhookEndpoint.objects.exists()


# --- Catalog ----------------------------------------------------------------------------------------
def test_auto_migration_to_a_successor_without_a_route(api, alice):
    alice.organization.auto_migrate_models = True
    alice.organization.save()
    from generation.engine.catalog import catalog_invalidate
    from generation.models import UpstreamModel

    successor = UpstreamModel.objects.get(model_id="imagen-4.0-fast-generate-001").successor
    Route.objects.filter(model=successor).delete()

    catalog_invalidate()
    response = api.post(
        "/v1/generations", {"prompt": "p", "model": "imagen-4.0-fast-generate-001"}, format="json"
    )
    error = assert_refused(response, "/v1/generations")
    assert error["param"] == "model"


def test_a_multipart_webhook_url_with_a_nul(api):
    line = json.dumps({"custom_id": "a", "body": {"prompt": "p"}})
    upload = SimpleUploadedFile("b.jsonl", line.encode(), content_type="application/jsonl")
    response = api.post(
        "/v1/batches", {"file": upload, "webhook_url": "https://hooks.example.com/\x00"}, format="multipart"
    )
    assert_refused(response, "/v1/batches")
