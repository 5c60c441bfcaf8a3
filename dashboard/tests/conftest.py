import pytest
from django.test import Client

from generation.models import Job


@pytest.fixture
def web():
    """A browser-like client for the given persona (None: anonymous)."""

    def make(persona=None) -> Client:
        client = Client()
        if persona is not None:
            client.force_login(persona.user)
        return client

    return make


@pytest.fixture
def alice_job(alice) -> Job:
    """A finished job of org A, made without the runner (pages only read it)."""
    return Job.objects.create(
        organization=alice.organization,
        api_key=alice.key,
        livemode=False,
        status=Job.Status.FAILED,
        tier="fast",
        prompt="a red bicycle",
        count=1,
        params={"aspect_ratio": "1:1", "resolution": "1K", "output_format": "png"},
        fallback_policy="allow",
        error_code="upstream_unavailable",
        error_message="No route could serve it.",
    )
