"""Images in an S3-compatible store, through django-storages, against moto's S3 server on
127.0.0.1 (the real S3 wire protocol; no AWS)."""

import boto3
import httpx
import pytest
from django.core.files.storage import default_storage
from moto.server import ThreadedMotoServer

from generation.engine.storage import image_store, image_url

CREDENTIALS = {"aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret"}


@pytest.fixture(scope="module")
def s3_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_storage(s3_server, settings):
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", **CREDENTIALS).create_bucket(
        Bucket="imagegate-images"
    )
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": "imagegate-images",
                "endpoint_url": s3_server,
                "region_name": "us-east-1",
                "access_key": CREDENTIALS["aws_access_key_id"],
                "secret_key": CREDENTIALS["aws_secret_access_key"],
                "querystring_auth": True,
                "default_acl": None,
                "file_overwrite": False,
                "signature_version": "s3v4",
            },
        },
    }
    return s3_server


def test_images_go_to_the_bucket_and_urls_are_presigned_and_expire(s3_storage):
    data = b"\x89PNG\r\n\x1a\n" + b"pixels" * 1000
    path = image_store(
        path_prefix="images/org_x/gen_y", image_public_id="img_z", data=data, mime_type="image/png"
    )
    assert default_storage.__class__.__name__ == "S3Storage"
    objects = boto3.client(
        "s3", endpoint_url=s3_storage, region_name="us-east-1", **CREDENTIALS
    ).list_objects_v2(Bucket="imagegate-images")
    assert [o["Key"] for o in objects["Contents"]] == [path]

    url = image_url(public_id="img_z", storage_path=path, ttl_seconds=600)
    assert url.startswith(s3_storage) and "X-Amz-Expires=600" in url and "X-Amz-Signature=" in url
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == data
    assert httpx.get(url.split("?")[0]).status_code == 403  # private without the signature
