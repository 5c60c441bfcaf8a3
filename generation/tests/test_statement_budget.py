"""Database statements per generation, pinned (issue 15: every statement is a round trip, paid in
CPU by us and by PostgreSQL, and the finishing transaction's statements hold the organization's
hot rows locked). Each statement is attributed to the service on its call stack; the runner's
housekeeping (leases, stats, reaper) is not on the job's path and is not counted.

If a change adds a statement on purpose, update the budget here and say why in the commit."""

import collections
import sys
import threading
import time

import pytest
from django.conf import settings
from django.db import connection
from django.db.backends import utils as db_utils

from generation.engine.catalog import catalog_invalidate
from generation.models import Job, ProviderAccount
from generation.worker.runner import get_runner

pytestmark = pytest.mark.django_db(transaction=True)

# A statement belongs to the innermost of these on its call stack.
SERVICES = ("job_submit", "job_claim", "jobs_claim_due", "job_load", "job_prepare", "job_complete")


class Statements:
    def __init__(self):
        self.by_service: dict[str, list[str]] = collections.defaultdict(list)
        self.lock = threading.Lock()

    def record(self, sql: str) -> None:
        names = []
        frame = sys._getframe(2)
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        service = next((name for name in names if name in SERVICES), None)
        if service is None:
            if threading.current_thread() is not threading.main_thread():
                return  # the runner's housekeeping
            service = "request"
        words = sql.lstrip("(").split()  # a UNION on PostgreSQL starts "(SELECT"
        if words[0].upper() == "BEGIN":
            return  # SQLite's BEGIN IMMEDIATE (psycopg sends its BEGIN outside the cursor)
        verb = words[0].upper()
        after = {"SELECT": "FROM", "INSERT": "INTO", "UPDATE": "UPDATE", "DELETE": "FROM"}.get(verb)
        upper = [word.upper() for word in words]
        table = words[upper.index(after) + 1].strip('"') if after in upper else ""
        with self.lock:
            self.by_service[service].append(f"{verb} {table}".strip())

    def take(self) -> dict[str, list[str]]:
        with self.lock:
            taken, self.by_service = dict(self.by_service), collections.defaultdict(list)
        return taken


@pytest.fixture
def statements(monkeypatch):
    seen = Statements()
    # Django's own cursor wrapper, every thread's connection (the runner's threads included).
    execute = getattr(db_utils.CursorWrapper, "_execute")  # noqa: B009 - private, untyped
    executemany = getattr(db_utils.CursorWrapper, "_executemany")  # noqa: B009

    def _execute(self, sql, params, *ignored):
        seen.record(sql)
        return execute(self, sql, params, *ignored)

    def _executemany(self, sql, param_list, *ignored):
        seen.record(sql)
        return executemany(self, sql, param_list, *ignored)

    monkeypatch.setattr(db_utils.CursorWrapper, "_execute", _execute)
    monkeypatch.setattr(db_utils.CursorWrapper, "_executemany", _executemany)
    return seen


@pytest.fixture
def live(fake_upstream, monkeypatch, pro_plan):
    monkeypatch.setenv("IMAGEGATE_TEST_GEMINI_KEY", fake_upstream.api_key)
    ProviderAccount.objects.filter(name="gemini-api").update(
        base_url=fake_upstream.url, credentials_ref="env:IMAGEGATE_TEST_GEMINI_KEY"
    )
    catalog_invalidate()
    runner = get_runner()
    runner.reset_health()
    deadline = time.monotonic() + 60
    while runner.inflight and time.monotonic() < deadline:  # an earlier test's job still finishing
        time.sleep(0.05)
    yield fake_upstream
    catalog_invalidate()


def _finished(public_id: str) -> Job:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = Job.objects.get(public_id=public_id)
        if job.status not in (Job.Status.QUEUED, Job.Status.RUNNING):
            return job
        time.sleep(0.05)
    raise AssertionError(f"{public_id} did not finish")


SUBMIT = [  # the live reservation: quota + spend in one UPDATE of the month, the key's month, the row
    "UPDATE tenants_quotaperiod",
    "UPDATE tenants_apikeyperiod",
    "INSERT tenants_spendreservation",
    "UPDATE tenants_organization",  # the concurrency slot
    "INSERT generation_job",
]
FINISH = [
    "UPDATE generation_job",
    "INSERT generation_image",
    "INSERT billing_usagerecord",
    "SELECT generation_webhookendpoint",  # the organization's endpoints (none here)
    "UPDATE tenants_spendreservation",  # settled, returning the reservation and the spend cap
    "UPDATE tenants_quotaperiod",
    "UPDATE tenants_apikeyperiod",
    "UPDATE tenants_organization",  # the slot, last (hot row)
]


def test_statements_per_live_generation(alice, live, statements):
    client = alice.client(alice.raw_live_key)
    # The first generation of the month creates the month's rows: not the steady state.
    first = client.post("/v1/generations?wait=0", {"prompt": "warm up"}, format="json")
    _finished(first.json()["id"])
    for attempt in range(2):  # the same every time (no cache filling up on the first one)
        statements.take()
        response = client.post("/v1/generations?wait=0", {"prompt": f"a fox {attempt}"}, format="json")
        assert response.status_code == 202, response.content
        seen = statements.take()
        request = seen.pop("request", [])
        job = _finished(response.json()["id"])  # (its own SELECTs are the test's, not counted)
        assert job.status == Job.Status.SUCCEEDED
        for service, sqls in statements.take().items():
            if service != "request":
                seen.setdefault(service, []).extend(sqls)
        assert seen.get("job_submit") == SUBMIT
        # The test process rings the doorbell inline: one conditional UPDATE claims the job; the
        # runners' own claim takes a batch in three statements and loads the jobs with it.
        assert seen.get("job_claim") == ["UPDATE generation_job"]
        assert seen.get("job_load") == ["SELECT generation_job"]  # inline doorbell: not preloaded
        assert "job_prepare" not in seen  # catalog and plan from the process's cache
        assert seen.get("job_complete") == FINISH
        # Authentication; without Redis the rate limit counts in the database.
        expected = ["SELECT tenants_apikey"] + (
            [] if settings.REDIS_URL else ["INSERT tenants_ratelimitcounter"]
        )
        # The usage headers: the organization's and the key's month in one query.
        assert request == [*expected, "SELECT tenants_quotaperiod"], request


def test_the_runners_claim_loads_the_batch(alice, live, statements):
    """The claim takes several due jobs and returns them loaded: no per-job load after it."""
    from generation.jobs.services import jobs_claim_due

    settings.GENERATION_INLINE_DOORBELL = False  # leave the jobs queued for the claim below
    client = alice.client(alice.raw_live_key)
    ids = [
        client.post("/v1/generations?wait=0", {"prompt": f"batch {i}"}, format="json").json()["id"]
        for i in range(3)
    ]
    statements.take()
    jobs = jobs_claim_due(owner="test-claimer", limit=10)
    assert [job.public_id for job in jobs] == ids
    assert all(job.status == Job.Status.RUNNING and job.lease_owner == "test-claimer" for job in jobs)
    assert jobs[0].organization.plan.code == "pro"  # loaded with the claim
    if connection.vendor == "postgresql":  # one UPDATE ... RETURNING, then the organizations
        expected = ["UPDATE generation_job", "SELECT tenants_organization"]
    else:  # SELECT the ids (the IMMEDIATE transaction is the lock), UPDATE, SELECT them loaded
        expected = ["SELECT generation_job", "UPDATE generation_job", "SELECT generation_job"]
    assert statements.take()["jobs_claim_due"] == expected
    assert jobs_claim_due(owner="another", limit=10) == []  # nothing left to claim
