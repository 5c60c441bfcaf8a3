"""Log-in back-off (tenants.login_throttle) on the dashboard and the admin log-in, behind a proxy."""

from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from tenants.login_throttle import backoff_delay

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"


def test_delays_grow_exponentially_and_are_capped():
    assert [backoff_delay(failures=n, free_failures=10) for n in (0, 9, 10, 11, 12)] == [0, 0, 30, 60, 120]
    assert backoff_delay(failures=10_000, free_failures=10) == 15 * 60


def attempt(client, path, username, password, address):
    return client.post(
        path,
        {"username": username, "password": password},
        REMOTE_ADDR="127.0.0.1",
        HTTP_X_FORWARDED_FOR=address,
    )


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_one_client_behind_the_proxy_does_not_lock_out_another(alice, settings, path):
    settings.TRUSTED_PROXY_COUNT = 1
    alice.user.is_staff = True
    alice.user.save()
    attacker, victim = Client(), Client()
    for _ in range(10):
        assert b"Too many" not in attempt(attacker, path, "alice", "wrong", "203.0.113.66").content
    assert b"Too many log-in attempts" in attempt(attacker, path, "alice", PASSWORD, "203.0.113.66").content
    assert "_auth_user_id" not in attacker.session
    # Same proxy (REMOTE_ADDR), other client: not affected.
    response = attempt(victim, path, "alice", PASSWORD, "198.51.100.7")
    assert response.status_code == 302 and victim.session["_auth_user_id"] == str(alice.user.pk)


def test_the_admin_login_is_throttled(alice, settings):
    alice.user.is_staff = True
    alice.user.save()
    client = Client()
    for _ in range(10):
        client.post("/admin/login/", {"username": "alice", "password": "wrong"})
    response = client.post("/admin/login/", {"username": "alice", "password": PASSWORD})
    assert b"Too many log-in attempts" in response.content and "_auth_user_id" not in client.session


def test_back_off_expires_instead_of_locking_out(alice):
    client = Client()
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        for _ in range(10):
            client.post("/login/", {"username": "alice", "password": "wrong"})
        assert b"Too many" in client.post("/login/", {"username": "alice", "password": PASSWORD}).content
        clock.move_to(start + timedelta(seconds=31))
        response = client.post("/login/", {"username": "alice", "password": PASSWORD})
        assert response.status_code == 302  # 30 s later the right password works


def test_a_network_that_guesses_many_names_is_slowed_down(alice, settings):
    client = Client()
    for n in range(30):
        client.post("/login/", {"username": f"user{n}", "password": "wrong"})
    assert b"Too many" in client.post("/login/", {"username": "alice", "password": PASSWORD}).content
