"""Schemathesis over the published schema (/v1/openapi.json) against a live server with a test
key: no input, valid or not, may produce a 5xx, and every response must match the schema.

Bounded for CI: FUZZ_MAX_EXAMPLES cases per operation and generation mode (default 3,
derandomized so CI runs the same cases every time); `make fuzz` runs the long, random form.
(Schemathesis' own pytest plugin does not run under pytest 9 yet, so the operations are driven
through `as_strategy` with Hypothesis directly.)"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "3"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_api_never_errors_and_matches_its_schema(live_server, alice, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False  # the fuzzer's webhook URLs must never be called
    schema = schemathesis.openapi.from_url(f"{live_server.url}/v1/openapi.json")
    headers = {"Authorization": f"Bearer {alice.raw_key}"}
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15
    failures = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=not RANDOM,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case):
                case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

            try:
                run()
            except (AssertionError, BaseExceptionGroup) as exc:  # every operation's failure, then fail once
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
