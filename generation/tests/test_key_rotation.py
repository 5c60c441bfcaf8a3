"""SECRET_KEY rotation (issue 13): signed image URLs and sessions made with the old key keep working
while it is listed in SECRET_KEY_FALLBACKS, and stop once it is removed; cached copies of an image
never outlive its URL."""

import time

import pytest
from django.test import Client

from generation.engine.storage import image_url, image_url_expiry

pytestmark = pytest.mark.django_db
OLD, NEW = "old-secret-key-" + "x" * 40, "new-secret-key-" + "y" * 40


def test_image_urls_signed_with_a_fallback_key_stay_valid(settings):
    settings.SECRET_KEY = OLD
    url = image_url(public_id="img_abc", storage_path="p/img_abc.png", ttl_seconds=600, now=1000)
    query = dict(part.split("=") for part in url.split("?", 1)[1].split("&"))
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW, [OLD]
    assert image_url_expiry(public_id="img_abc", now=1001, **query) == 1600
    settings.SECRET_KEY_FALLBACKS = []
    assert image_url_expiry(public_id="img_abc", now=1001, **query) is None


def test_sessions_survive_a_rotation_through_the_fallbacks(alice, settings):
    settings.SECRET_KEY = OLD
    active, idle = Client(), Client()
    active.force_login(alice.user)
    idle.force_login(alice.user)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW, [OLD]
    assert active.get("/keys/").status_code == 200  # accepted through the fallback, re-signed with NEW
    settings.SECRET_KEY_FALLBACKS = []
    assert active.get("/keys/").status_code == 200
    assert idle.get("/keys/").status_code == 302  # never seen during the window: logged out


def test_cache_control_never_outlives_the_url(alice, settings, tmp_path):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from generation.models import Image, Job

    job = Job.objects.create(
        organization=alice.organization,
        api_key=alice.key,
        livemode=False,
        status="succeeded",
        tier="fast",
        prompt="p",
        count=1,
        params={},
        fallback_policy="allow",
    )
    path = default_storage.save("test/img_cachecontrol.png", ContentFile(b"\x89PNG fake"))
    image = Image.objects.create(
        job=job,
        organization=alice.organization,
        index=0,
        public_id="img_cachecontrol",
        storage_path=path,
        mime_type="image/png",
    )
    for ttl, expected in ((90, range(85, 91)), (7200, range(3600, 3601))):
        url = image_url(public_id=image.public_id, storage_path=path, ttl_seconds=ttl, now=time.time())
        response = Client().get(url.replace(settings.PUBLIC_BASE_URL, ""))
        assert response.status_code == 200
        max_age = int(response["Cache-Control"].split("max-age=")[1])
        assert max_age in expected, response["Cache-Control"]
    default_storage.delete(path)


def test_verification_links_signed_with_a_fallback_key_still_work(settings, pro_plan):
    from tenants import services

    user, _ = services.user_signup(
        username="ivy", email="ivy@example.com", password="pw-" * 5, organization_name="I"
    )
    settings.SECRET_KEY = OLD
    token = services.email_verification_token(user=user)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW, [OLD]
    assert services.email_verify(token=token) == user


def test_the_api_docs_page_has_its_own_policy_without_inline_scripts(client):
    response = client.get("/docs/api")
    policy = response["Content-Security-Policy"]
    assert response.status_code == 200 and "script-src 'self';" in policy and "unsafe-eval" not in policy
    assert "<script>" not in response.content.decode()
