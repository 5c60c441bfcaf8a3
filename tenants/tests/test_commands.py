import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from tenants.models import ApiKey, Organization


def _key(output: str) -> str:
    match = re.search(r"(ig_(?:live|test)_[A-Za-z0-9]{40})", output)
    assert match, output
    return match.group(1)


def _get_org(raw_key: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client.get("/v1/organization")


def test_createtenant_prints_a_working_key_once(db):
    out = StringIO()
    call_command(
        "createtenant", "--name", "Globex", "--owner-email", "hank@globex.test", "--plan", "pro", stdout=out
    )
    raw = _key(out.getvalue())
    response = _get_org(raw)
    assert response.status_code == 200
    assert response.json()["name"] == "Globex"
    org = Organization.objects.get(name="Globex")
    assert org.memberships.get().role == "owner"
    assert raw not in repr(list(ApiKey.objects.values()))


def test_createtenant_rejects_unknown_plan(db):
    with pytest.raises(CommandError):
        call_command("createtenant", "--name", "X", "--owner-email", "x@x.test", "--plan", "gold")
    assert not Organization.objects.exists()


def test_bootstrap_demo_is_idempotent_and_rotates_its_key(db, settings):
    settings.DEBUG = True
    first, second = StringIO(), StringIO()
    call_command("bootstrap_demo", stdout=first)
    call_command("bootstrap_demo", stdout=second)
    assert Organization.objects.filter(slug="demo").count() == 1
    old, new = _key(first.getvalue()), _key(second.getvalue())
    assert old != new
    assert _get_org(old).status_code == 401
    assert _get_org(new).status_code == 200
    assert ApiKey.objects.filter(organization__slug="demo", revoked_at__isnull=True).count() == 1


def test_bootstrap_demo_refuses_production(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError):
        call_command("bootstrap_demo")
