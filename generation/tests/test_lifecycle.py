"""A model's shutdown as a tenant lives it, on a frozen clock: the date shown well before (GET
/v1/models, the settings page), one e-mail to the owners 30 and 7 days before, pinned requests
served the day before and refused (or migrated, by opt-in) on the day, with no manual step."""

import datetime

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.utils.module_loading import import_string

from generation.engine.lifecycle import shutdown_notices_send
from generation.models import ShutdownNotice, UpstreamModel

NB21 = "gemini-nano-banana-2.1"
PRO = "gemini-3-pro-image"
SHUTDOWN = datetime.date(2027, 1, 31)


def at(day: datetime.date, hour: int = 9):
    return time_machine.travel(
        datetime.datetime(day.year, day.month, day.day, hour, tzinfo=datetime.UTC), tick=False
    )


@pytest.fixture
def announced(pro_plan):
    """An operator records Google's announcement: 2.1 shuts down on 2027-01-31, successor 3 Pro."""
    UpstreamModel.objects.filter(model_id=NB21).update(
        lifecycle="deprecated",
        shutdown_date=SHUTDOWN,
        successor=UpstreamModel.objects.get(model_id=PRO),
    )


def pin(persona, model=NB21, day=datetime.date(2026, 12, 1)):
    with at(day):
        response = persona.client().post(
            "/v1/generations", {"prompt": "a pinned fox", "model": model}, format="json"
        )
    assert response.status_code in (200, 202), response.content
    return response


def test_the_shutdown_date_is_shown_to_tenants_who_pin_the_model(alice, charlie, announced):
    pin(alice)
    with at(datetime.date(2026, 12, 1)):
        models = {m["id"]: m for m in alice.client().get("/v1/models").json()["data"]}
        others = {m["id"]: m for m in charlie.client().get("/v1/models").json()["data"]}
        browser = Client()
        browser.force_login(alice.user)
        page = browser.get("/settings/").content.decode()
    assert models[NB21]["pinned"] is True and models[NB21]["days_until_shutdown"] == 61
    assert models[NB21]["shutdown_date"] == "2027-01-31" and models[NB21]["successor"] == PRO
    assert models[PRO]["pinned"] is False
    assert others[NB21]["pinned"] is False  # charlie never pinned it
    assert f'data-pinned-model="{NB21}"' in page and "2027-01-31" in page and "61 days" in page


def test_owners_get_one_email_30_and_7_days_before(alice, bob, charlie, announced):
    pin(alice)
    pin(charlie, model=PRO)  # pins another model: never e-mailed about 2.1
    sent = []
    for day in (datetime.date(2026, 12, 31), datetime.date(2027, 1, 1), datetime.date(2027, 1, 1)):
        with at(day):
            sent.append(shutdown_notices_send())
    assert sent == [0, 1, 0]  # 31 days: nothing yet; 30 days: once, however often the task runs
    assert mail.outbox[0].to == [alice.user.email]  # the owner, not bob (a member)
    assert "2027-01-31" in mail.outbox[0].subject and "30 days" in mail.outbox[0].subject
    assert PRO in mail.outbox[0].body and "model_retired" in mail.outbox[0].body

    with at(datetime.date(2027, 1, 20)):
        assert shutdown_notices_send() == 0
    with at(datetime.date(2027, 1, 24)):
        assert shutdown_notices_send() == 1
        assert shutdown_notices_send() == 0
    assert "7 days" in mail.outbox[1].subject
    with at(datetime.date(2027, 1, 31)):
        assert shutdown_notices_send() == 0  # retired today: nothing left to announce
    assert sorted(ShutdownNotice.objects.values_list("days_before", flat=True)) == [7, 30]
    assert len(mail.outbox) == 2


def test_a_task_that_missed_days_sends_only_the_nearest_notice(alice, announced):
    pin(alice)
    with at(datetime.date(2027, 1, 26)):
        assert shutdown_notices_send() == 1
    with at(datetime.date(2027, 1, 27)):
        assert shutdown_notices_send() == 0
    assert len(mail.outbox) == 1 and "5 days" in mail.outbox[0].subject


def test_pinned_requests_are_served_the_day_before_and_retired_on_the_day(alice, announced):
    pin(alice, day=datetime.date(2027, 1, 30))
    with at(datetime.date(2027, 1, 31), hour=0):
        response = alice.client().post("/v1/generations", {"prompt": "late", "model": NB21}, format="json")
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert (
            error["code"] == "model_retired" and "2027-01-31" in error["message"] and PRO in error["message"]
        )
        alice.organization.auto_migrate_models = True
        alice.organization.save()
        migrated = alice.client().post("/v1/generations", {"prompt": "late", "model": NB21}, format="json")
        assert migrated.status_code in (200, 202), migrated.content
        assert UpstreamModel.objects.get(model_id=NB21).lifecycle == "deprecated"  # no manual step


def test_the_daily_schedules_exist_once_and_point_at_real_functions(db):
    from django_q.models import Schedule

    from generation.apps import _ensure_schedules

    _ensure_schedules(sender=None)
    _ensure_schedules(sender=None)
    funcs = sorted(Schedule.objects.values_list("func", flat=True))
    assert funcs == sorted(set(funcs))
    assert "generation.engine.catalog_sync.catalog_sync_task" in funcs
    assert "generation.engine.lifecycle.shutdown_notices_task" in funcs
    for func in funcs:
        assert callable(import_string(func))
