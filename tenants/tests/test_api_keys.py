import hashlib
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from tenants import services
from tenants.errors import InvalidRequest
from tenants.models import ApiKey


def test_key_is_returned_once_and_stored_as_sha256(org_a):
    key, raw = services.api_key_create(organization=org_a, name="ci", mode="live", scopes=["generate"])
    assert re.fullmatch(r"ig_live_[A-Za-z0-9]{40}", raw)
    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert stored.last4 == raw[-4:]
    assert stored.masked == f"ig_live_…{raw[-4:]}"
    assert raw not in str(ApiKey.objects.filter(pk=key.pk).values().first())
    assert stored.public_id.startswith("key_")


def test_test_keys_have_their_own_prefix(org_a):
    _, raw = services.api_key_create(organization=org_a, name="t", mode="test", scopes=["read"])
    assert raw.startswith("ig_test_")


def test_keys_are_unique(org_a):
    raws = {
        services.api_key_create(organization=org_a, name="k", mode="test", scopes=["read"])[1]
        for _ in range(20)
    }
    assert len(raws) == 20


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"name": " ", "mode": "live", "scopes": ["read"]}, "name"),
        ({"name": "k", "mode": "prod", "scopes": ["read"]}, "mode"),
        ({"name": "k", "mode": "live", "scopes": []}, "scopes"),
        ({"name": "k", "mode": "live", "scopes": ["admin"]}, "scopes"),
    ],
)
def test_bad_key_input_is_rejected_and_creates_nothing(org_a, kwargs, param):
    with pytest.raises(InvalidRequest) as excinfo:
        services.api_key_create(organization=org_a, **kwargs)
    assert excinfo.value.param == param
    assert not ApiKey.objects.exists()


def test_expiry_must_be_in_the_future(org_a):
    with pytest.raises(InvalidRequest):
        services.api_key_create(
            organization=org_a,
            name="k",
            mode="live",
            scopes=["read"],
            expires_at=timezone.now() - timedelta(1),
        )


@pytest.mark.django_db
def test_the_key_lookup_loads_what_the_orm_loads(alice):
    """api_key_get_by_hash builds its join once per process: every field of the key, its
    organization and the plan comes back as the ORM's select_related gives it (types included)."""
    from decimal import Decimal

    from tenants.models import Organization
    from tenants.selectors import api_key_get_by_hash

    Organization.objects.filter(pk=alice.organization.pk).update(
        monthly_spend_cap=Decimal("12.34"), spend_alert_thresholds=[50, 90]
    )
    ApiKey.objects.filter(pk=alice.live_key.pk).update(monthly_image_cap=7)
    expected = ApiKey.objects.select_related("organization__plan").get(pk=alice.live_key.pk)
    loaded = api_key_get_by_hash(key_hash=expected.key_hash)
    assert loaded is not None
    for instance, reference in (
        (loaded, expected),
        (loaded.organization, expected.organization),
        (loaded.organization.plan, expected.organization.plan),
    ):
        for field in type(reference)._meta.concrete_fields:
            value, wanted = getattr(instance, field.attname), getattr(reference, field.attname)
            assert (value, type(value)) == (wanted, type(wanted)), field.name
    assert loaded.organization.spend_alert_thresholds == [50, 90]
    assert api_key_get_by_hash(key_hash="0" * 64) is None
