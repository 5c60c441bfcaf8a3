"""Test personas used across the suite (STYLE.md):

alice   owner of org A (Acme, Pro plan); live and test keys with both scopes
bob     member of org A; a read-only test key
charlie owner of org C (Contoso, Pro plan); a test key with both scopes
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tenants import services
from tenants.models import ApiKey, Organization, Plan
from tests.seed import ensure_seed_data


@dataclass
class Persona:
    user: object
    organization: Organization
    key: ApiKey
    raw_key: str
    live_key: ApiKey | None = None
    raw_live_key: str | None = None

    def client(self, raw_key: str | None = None) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key or self.raw_key}")
        return client


def make_persona(
    username: str, organization: Organization, *, role: str, scopes: list[str], live: bool
) -> Persona:
    user = get_user_model().objects.create_user(
        username=username, email=f"{username}@example.com", password="correct horse battery staple"
    )
    services.membership_add(organization=organization, user=user, role=role)
    key, raw = services.api_key_create(
        organization=organization, name=f"{username} test", mode="test", scopes=scopes, created_by=user
    )
    persona = Persona(user=user, organization=organization, key=key, raw_key=raw)
    if live:
        persona.live_key, persona.raw_live_key = services.api_key_create(
            organization=organization, name=f"{username} live", mode="live", scopes=scopes, created_by=user
        )
    return persona


def seeded_plan(code: str) -> Plan:
    """A plan seeded by migration. A transactional test's flush deletes migration data for the
    tests after it (pytest-django runs them in collection order), so seeds are re-applied."""
    ensure_seed_data()
    return Plan.objects.get(code=code)


@pytest.fixture
def pro_plan(db) -> Plan:
    return seeded_plan("pro")


@pytest.fixture(autouse=True)
def _isolated_state(settings):
    """Per-test isolation of process-wide state: Redis key prefix per xdist worker, a fresh
    catalog cache, the doorbell rung in-process, and a fresh route health book."""
    # Unique per process: several test runs (CI, other checkouts) may share one Redis.
    settings.REDIS_PREFIX = f"test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{os.getpid()}"
    settings.GENERATION_INLINE_DOORBELL = True
    # Provider accounts may point at the local fake upstream and read the tests' variables: allowed
    # here explicitly, as an operator would for a staging upstream (README "Security").
    settings.PROVIDER_BASE_URL_HOSTS = [*settings.PROVIDER_BASE_URL_HOSTS, "127.0.0.1"]
    settings.PROVIDER_SECRET_ENV_NAMES = [*settings.PROVIDER_SECRET_ENV_NAMES, "IMAGEGATE_TEST_*"]
    if settings.REDIS_URL:
        from config.redis_client import get_redis

        client = get_redis()
        keys = list(client.scan_iter(f"{settings.REDIS_PREFIX}:*", count=1000))
        if keys:
            client.delete(*keys)
    from generation.engine import catalog

    catalog.catalog_invalidate()
    yield
    catalog.catalog_invalidate()


@pytest.fixture
def org_a(pro_plan) -> Organization:
    return services.organization_create(name="Acme", plan=pro_plan, slug="acme")


@pytest.fixture
def org_c(pro_plan) -> Organization:
    return services.organization_create(name="Contoso", plan=pro_plan, slug="contoso")


@pytest.fixture(scope="session", autouse=True)
def _stop_job_runner(django_db_setup, django_db_blocker):
    """Stop this process's job runner before the test databases are dropped (it holds connections)."""
    yield
    from generation.worker import runner

    if runner._runner is not None:
        with django_db_blocker.unblock():
            runner._runner.stop()


@pytest.fixture
def alice(org_a) -> Persona:
    return make_persona("alice", org_a, role="owner", scopes=["generate", "read"], live=True)


@pytest.fixture
def bob(org_a) -> Persona:
    return make_persona("bob", org_a, role="member", scopes=["read"], live=False)


@pytest.fixture
def charlie(org_c) -> Persona:
    return make_persona("charlie", org_c, role="owner", scopes=["generate", "read"], live=False)


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


def require_services() -> bool:
    """In CI (REQUIRE_SERVICES=1) a test that needs PostgreSQL or Redis fails instead of skipping."""
    return os.environ.get("REQUIRE_SERVICES") == "1"


@pytest.fixture
def redis_url() -> str:
    """A Redis to test against: REDIS_URL, else the local default, else skip (fail in CI)."""
    import redis

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError as exc:
        if require_services():
            pytest.fail(f"Redis is required in CI but {url} is unreachable: {exc}")
        pytest.skip(f"Redis not reachable at {url}")
    return url


@pytest.fixture
def use_redis(redis_url, settings):
    """Point the app's Redis-backed features (rate limits, notifications) at a real Redis."""
    from config.redis_client import get_redis

    settings.REDIS_URL = redis_url
    get_redis.cache_clear()
    client = get_redis()
    # Only this test's keys: a FLUSHDB would wipe what parallel workers and processes count.
    keys = list(client.scan_iter(f"{settings.REDIS_PREFIX}:*", count=1000))
    if keys:
        client.delete(*keys)
    yield client
    get_redis.cache_clear()


@pytest.fixture
def use_database_limits(settings):
    """Force the database backends even when the suite runs with REDIS_URL."""
    from config.redis_client import get_redis

    settings.REDIS_URL = ""
    get_redis.cache_clear()
    yield
    get_redis.cache_clear()
