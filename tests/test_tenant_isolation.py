"""Cross-tenant isolation for the input-image endpoints: charlie (org C) addressing alice's
(org A) file by its id gets a 404 on every way in, and alice's file is unchanged."""

import base64
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from generation.models import InputFile, Job
from generation.tests.images_fixtures import image_bytes

PNG_B64 = base64.b64encode(image_bytes()).decode()


@pytest.fixture
def alices_file(alice) -> str:
    response = alice.client().post(
        "/v1/files", {"file": SimpleUploadedFile("a.png", image_bytes())}, format="multipart"
    )
    assert response.status_code == 201
    return response.json()["id"]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "/v1/files/{id}", None),
        ("delete", "/v1/files/{id}", None),
        ("post", "/v1/generations", {"prompt": "x", "images": ["{id}"]}),
        ("post", "/v1/generations", {"prompt": "x", "images": [PNG_B64], "mask": "{id}"}),
        (
            "post",
            "/v1/models/gemini-3.1-flash-image:generateContent",
            {
                "contents": [
                    {"parts": [{"text": "x"}, {"fileData": {"fileUri": "{id}", "mimeType": "image/png"}}]}
                ]
            },
        ),
        (
            "post",
            "/v1/batches",
            {"requests": [{"custom_id": "a", "body": {"prompt": "x", "images": ["{id}"]}}]},
        ),
    ],
)
def test_charlie_cannot_use_or_see_alices_file(alice, charlie, alices_file, method, path, body):

    client = charlie.client()
    url = path.replace("{id}", alices_file)
    if body is None:
        response = getattr(client, method)(url)
    else:
        payload = json.loads(json.dumps(body).replace("{id}", alices_file))
        response = client.post(url, payload, format="json")
    assert response.status_code in (400, 404), response.content
    if body is None or ("images" in str(body) and "mask" not in str(body)):
        assert (
            response.status_code == 404
            or "not_found" in response.content.decode()
            or "No file" in (response.content.decode())
        )
    assert Job.objects.count() == 0
    assert InputFile.objects.filter(public_id=alices_file).exists()
