import re

import pytest
from django.urls import reverse

from tenants.models import ApiKey

pytestmark = pytest.mark.django_db


def test_create_shows_the_key_once_with_snippets_then_never_again(web, alice, settings):
    settings.PUBLIC_BASE_URL = "https://api.imagegate.example"
    client = web(alice)
    response = client.post(
        reverse("dashboard:keys"), {"name": "ci", "mode": "test", "scopes": ["generate", "read"]}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    raw = re.search(r'<code id="new-key" class="mono">(ig_test_\w+)</code>', page).group(1)
    key = ApiKey.objects.get(name="ci")
    assert key.organization == alice.organization and key.scopes == ["generate", "read"]
    assert key.created_by == alice.user
    # Snippets for curl, the OpenAI SDK and the Google SDK, pre-filled with our base URL and the key.
    assert "OpenAI(base_url=&quot;https://api.imagegate.example/v1&quot;" in page
    assert (
        "HttpOptions(base_url=&quot;https://api.imagegate.example&quot;, api_version=&quot;v1&quot;)" in page
    )
    assert page.count(raw) == 4
    # The key works against the API, and is never rendered again.
    api = alice.client(raw).get("/v1/organization")
    assert api.status_code == 200
    assert raw not in client.get(reverse("dashboard:keys")).content.decode()


def test_invalid_key_form_is_a_400_with_messages_and_creates_nothing(web, alice):
    before = ApiKey.objects.count()
    response = web(alice).post(reverse("dashboard:keys"), {"name": "", "mode": "gold", "scopes": []})
    assert response.status_code == 400
    page = response.content.decode()
    assert "This field is required." in page
    assert "Select a valid choice" in page
    assert "Choose at least one scope." in page
    assert ApiKey.objects.count() == before


def test_revoke_stops_the_key_at_once(web, alice):
    assert alice.client().get("/v1/organization").status_code == 200
    response = web(alice).post(reverse("dashboard:key-revoke", args=[alice.key.public_id]))
    assert response.status_code == 302
    answer = alice.client().get("/v1/organization")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"
    listing = web(alice).get(reverse("dashboard:keys")).content.decode()
    assert "revoked" in listing


def test_revoke_needs_post(web, alice):
    assert web(alice).get(reverse("dashboard:key-revoke", args=[alice.key.public_id])).status_code == 405
