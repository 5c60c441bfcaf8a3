"""What counts as an outage of a dependency (the database or Redis), as opposed to a bug.

A request that hits one is answered 503 with Retry-After in the documented error shape, never 500:
by the API's exception handler (tenants.api) and, for every other view and middleware, by
handler500 (config.views.error). Integrity and programming errors are bugs and stay 500s.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, DataError, IntegrityError, NotSupportedError, ProgrammingError
from redis import RedisError

logger = logging.getLogger(__name__)

SERVICE_UNAVAILABLE = {
    "type": "api_error",
    "code": "service_unavailable",
    "message": "The service is briefly unavailable. Retry after the time in the Retry-After header.",
    "param": None,
}


def _outage_exceptions() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [DatabaseError, RedisError]
    try:
        import psycopg
        import psycopg_pool

        found += [psycopg.OperationalError, psycopg_pool.PoolTimeout]
    except ImportError:  # SQLite-only installs
        pass
    return tuple(found)


_OUTAGES = _outage_exceptions()
_BUGS = (IntegrityError, ProgrammingError, DataError, NotSupportedError)


def is_dependency_outage(exc: BaseException | None) -> bool:
    if exc is None or not isinstance(exc, _OUTAGES) or isinstance(exc, _BUGS):
        return False
    logger.warning("dependency failure answered 503: %s: %s", type(exc).__name__, exc)
    return True
