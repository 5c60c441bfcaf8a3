"""Log-in throttling by exponential back-off, shared by the dashboard and the admin log-in.

Each attempt is checked against three keys: the user name from this client network, the client
network alone, and the user name from anywhere. Below a key's free allowance failures cost nothing;
from then on each failure blocks the key for 30 s, 60 s, 120 s, ... up to 15 min. A blocked attempt
is refused before the password is checked and is not counted, so a person who mistyped waits
seconds, not a window, and an attacker gets a handful of guesses per hour. Failure counts are kept
for an hour after the first failure; a successful log-in clears the user-and-network key.

Client networks come from config.client_address (trusted proxy hops, IPv6 /64), so one client
behind the documented nginx no longer locks every other client out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from config.client_address import client_bucket
from tenants.models import LoginFailure

FAILURE_MEMORY = timedelta(hours=1)
BASE_DELAY_SECONDS = 30
MAX_DELAY_SECONDS = 15 * 60


@dataclass(frozen=True)
class ThrottleKey:
    key: str
    free_failures: int


def login_throttle_keys(
    *, request: HttpRequest | None, username: str, scope: str = "login"
) -> list[ThrottleKey]:
    network = client_bucket(request) if request is not None else "unknown"
    username = username.strip().lower()[:100]
    return [
        ThrottleKey(f"{scope}:user-net:{username}:{network}", 10),
        ThrottleKey(f"{scope}:net:{network}", 30),
        ThrottleKey(f"{scope}:user:{username}", 100),
    ]


def backoff_delay(*, failures: int, free_failures: int) -> int:
    """Seconds a key stays blocked after its `failures`-th failure (0 below the allowance)."""
    if failures < free_failures:
        return 0
    return min(BASE_DELAY_SECONDS * 2 ** min(failures - free_failures, 16), MAX_DELAY_SECONDS)


def login_throttle_wait(*, keys: list[ThrottleKey], now: datetime | None = None) -> int:
    """Seconds until an attempt may be made (0: now)."""
    now = now or timezone.now()
    rows = LoginFailure.objects.filter(key__in=[k.key for k in keys], blocked_until__gt=now)
    waits = [(row.blocked_until - now).total_seconds() for row in rows if row.blocked_until]
    return max(1, int(max(waits)) + 1) if waits else 0


def login_throttle_fail(*, keys: list[ThrottleKey], now: datetime | None = None) -> None:
    """Count one failure against every key (conditional UPDATEs: parallel failures all count)."""
    now = now or timezone.now()
    LoginFailure.objects.filter(first_failure_at__lt=now - FAILURE_MEMORY).delete()
    for throttle in keys:
        with transaction.atomic():
            if not LoginFailure.objects.filter(key=throttle.key).update(failures=F("failures") + 1):
                try:
                    with transaction.atomic():
                        LoginFailure.objects.create(key=throttle.key, failures=1, first_failure_at=now)
                except IntegrityError:  # created meanwhile by a parallel failure
                    LoginFailure.objects.filter(key=throttle.key).update(failures=F("failures") + 1)
            row = LoginFailure.objects.get(key=throttle.key)
            delay = backoff_delay(failures=row.failures, free_failures=throttle.free_failures)
            if delay:
                LoginFailure.objects.filter(pk=row.pk).update(blocked_until=now + timedelta(seconds=delay))


def login_throttle_succeed(*, keys: list[ThrottleKey]) -> None:
    LoginFailure.objects.filter(key=keys[0].key).delete()
