"""The snippets shown with a new key work as shown: their text is taken from the page and run
against a live server (the curl one through httpx, the SDK ones as Python)."""

import contextlib
import html
import io
import re
import shlex

import httpx
import pytest
from django.test import Client

from generation.engine.catalog import catalog_invalidate
from generation.models import Job, ProviderAccount

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:The generate_images method is deprecated"),
]


@pytest.fixture
def snippets(live_server, alice, settings):
    settings.PUBLIC_BASE_URL = live_server.url
    ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 0, "failure_rate": 0})
    catalog_invalidate()
    client = Client()
    client.force_login(alice.user)
    page = client.post("/keys/", {"name": "snippets", "mode": "test", "scopes": ["generate", "read"]})
    found = dict(re.findall(r'<pre id="snippet-(\w+)">(.*?)</pre>', page.content.decode(), re.S))
    return {name: html.unescape(text) for name, text in found.items()}


@pytest.mark.parametrize("name", ["openai", "google"])
def test_sdk_snippet_runs_as_shown(snippets, name):
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(snippets[name], f"<{name} snippet>", "exec"), {})  # noqa: S102 - our own page's text
    assert output.getvalue().strip() == "1 image(s)"
    assert Job.objects.get().status == Job.Status.SUCCEEDED


def test_curl_snippet_runs_as_shown(snippets):
    words = shlex.split(snippets["curl"].replace("\\\n", " "))
    url = next(word for word in words if word.startswith("http"))
    headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H")
    body = words[words.index("-d") + 1]
    response = httpx.post(url, headers=headers, content=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded" and len(response.json()["images"]) == 1
