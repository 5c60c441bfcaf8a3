"""Tenant webhooks: the endpoint API, signed deliveries to a real local receiver, retries with
backoff driven by the re-drive task on a controlled clock, SSRF refusals, tenant isolation."""

import json
import textwrap
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from generation.engine import outbound
from generation.engine.catalog import catalog_invalidate
from generation.models import ProviderAccount, WebhookDelivery, WebhookEndpoint
from generation.tests.webhook_receiver import Receiver, self_signed_tls
from generation.webhooks import services as webhooks
from generation.webhooks.services import webhook_deliveries_redrive, webhook_event_create

PUBLIC_ADDRESS = "93.184.215.14"


def documented_verify():
    """The verification recipe exactly as the module docstring shows it (extracted, not copied)."""
    doc = webhooks.__doc__
    start = doc.index("    import hashlib")
    end = doc.index("\n\n", doc.index("return fresh", start))
    namespace: dict = {}
    exec(textwrap.dedent(doc[start:end]), namespace)  # noqa: S102 - our own documentation
    return namespace["verify"]


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def allow_private(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True


@pytest.fixture
def fast_sandbox():
    ProviderAccount.objects.filter(kind="sandbox").update(options={"latency_ms": 20, "failure_rate": 0})
    catalog_invalidate()


def assert_error(response, status, code, param=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# --- Endpoint API -----------------------------------------------------------------------------
def test_set_get_rotate_delete(alice, bob, allow_private, receiver):
    client = alice.client()
    assert_error(client.get("/v1/webhook"), 404, "not_found")
    response = client.put("/v1/webhook", {"url": receiver.url}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["url"] == receiver.url and body["enabled"] is True
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert client.get("/v1/webhook").json()["secret"] == body["secret"]
    assert bob.client().get("/v1/webhook").json() | {"secret": "hidden"} == body | {"secret": "hidden"}
    assert bob.client().get("/v1/webhook").json()["secret"] is None  # read-only keys never see it
    rotated = client.post("/v1/webhook/rotate-secret").json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != body["secret"]
    assert client.delete("/v1/webhook").status_code == 204
    assert client.get("/v1/webhook").json()["url"] is None
    assert_error(client.delete("/v1/webhook"), 404, "not_found")


def test_auth_and_scopes(alice, bob, anon):
    assert anon.get("/v1/webhook").status_code == 401
    assert_error(
        bob.client().put("/v1/webhook", {"url": "https://example.com/h"}, format="json"),
        403,
        "permission_denied",
    )
    assert_error(bob.client().post("/v1/webhook/rotate-secret"), 403, "permission_denied")
    assert bob.client().get("/v1/webhook/deliveries").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "http://example.com/hook",  # plain http is refused
        "ftp://example.com/hook",
        "https://user:pw@example.com/hook",
        "not a url",
    ],
)
def test_unsafe_urls_are_refused_at_save_time(alice, url, monkeypatch):
    monkeypatch.setattr(
        outbound,
        "resolver",
        lambda host, port: {"localhost": ["127.0.0.1", "::1"]}.get(host, [PUBLIC_ADDRESS]),
    )
    assert_error(
        alice.client().put("/v1/webhook", {"url": url}, format="json"), 400, "invalid_request", "url"
    )
    assert not WebhookEndpoint.objects.exists()


def test_a_hostname_resolving_to_a_private_address_is_refused(alice, monkeypatch):
    monkeypatch.setattr(outbound, "resolver", lambda host, port: [PUBLIC_ADDRESS, "10.1.2.3"])
    response = alice.client().put("/v1/webhook", {"url": "https://hooks.example.com/x"}, format="json")
    assert_error(response, 400, "invalid_request", "url")


def test_per_request_webhook_url_follows_the_same_rules(alice):
    response = alice.client().post(
        "/v1/generations", {"prompt": "a cat", "webhook_url": "https://169.254.169.254/x"}, format="json"
    )
    assert_error(response, 400, "invalid_request", "webhook_url")


# --- Delivery ---------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_job_completion_is_delivered_and_the_signature_verifies(alice, allow_private, receiver, fast_sandbox):
    client = alice.client()
    secret = client.put("/v1/webhook", {"url": receiver.url}, format="json").json()["secret"]
    job = client.post("/v1/generations?wait=20", {"prompt": "a red fox"}, format="json").json()
    assert job["status"] == "succeeded"
    # The receiver has the request before the sender records its answer: wait for the record.
    assert wait_for(lambda: WebhookDelivery.objects.filter(status="succeeded").exists())
    [request] = receiver.requests
    headers = request["headers"]
    assert request["path"] == "/hooks/imagegate"
    assert headers["Content-Type"] == "application/json"
    assert headers["Imagegate-Event"] == "generation.completed"
    assert documented_verify()(secret, request["body"], headers["Imagegate-Signature"])
    assert not documented_verify()(secret, request["body"] + b" ", headers["Imagegate-Signature"])
    payload = json.loads(request["body"])
    assert payload["id"] == job["id"] and payload["status"] == "succeeded"
    assert payload["images"][0]["url"].startswith("http") and "storage_path" not in payload["images"][0]
    delivery = WebhookDelivery.objects.get()
    assert headers["Imagegate-Delivery"] == delivery.public_id
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)


@pytest.mark.django_db(transaction=True)
def test_per_request_webhook_url_gets_the_job(alice, allow_private, receiver, fast_sandbox):
    job = (
        alice.client()
        .post("/v1/generations?wait=20", {"prompt": "a red fox", "webhook_url": receiver.url}, format="json")
        .json()
    )
    assert wait_for(lambda: receiver.requests)
    secret = WebhookEndpoint.objects.get(organization=alice.organization).secret  # created for signing
    request = receiver.requests[0]
    assert json.loads(request["body"])["id"] == job["id"]
    assert documented_verify()(secret, request["body"], request["headers"]["Imagegate-Signature"])


def test_failing_twice_then_succeeding_records_one_success(alice, allow_private, receiver):
    alice.client().put("/v1/webhook", {"url": receiver.url}, format="json")
    receiver.statuses = [500, 500]
    delivery = webhook_event_create(
        organization_id=alice.organization.pk,
        event="batch.completed",
        object_id="batch_x",
        payload={"a": 1},
        url=receiver.url,
    )
    webhook_deliveries_redrive()  # first attempt (the `db` fixture never commits, so we drive it)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "pending",
        1,
        500,
        "HTTP 500",
    )
    first_retry = delivery.next_attempt_at
    assert timedelta(seconds=25) < first_retry - timezone.now() < timedelta(seconds=40)
    assert webhook_deliveries_redrive() == {"succeeded": 0, "failed": 0}  # not due yet: nothing sent
    assert len(receiver.requests) == 1

    webhook_deliveries_redrive(now=first_retry + timedelta(seconds=1))
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 2)
    second_retry = delivery.next_attempt_at
    assert timedelta(seconds=100) < second_retry - first_retry < timedelta(seconds=150)

    assert webhook_deliveries_redrive(now=second_retry + timedelta(seconds=1)) == {
        "succeeded": 1,
        "failed": 0,
    }
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 3, 200)
    assert delivery.delivered_at is not None and delivery.last_error == ""
    assert webhook_deliveries_redrive(now=second_retry + timedelta(hours=30)) == {"succeeded": 0, "failed": 0}
    assert len(receiver.requests) == 3
    assert {r["headers"]["Imagegate-Delivery"] for r in receiver.requests} == {delivery.public_id}
    assert WebhookDelivery.objects.filter(status="succeeded").count() == 1


def test_gives_up_after_the_retry_window(alice, allow_private, receiver):
    alice.client().put("/v1/webhook", {"url": receiver.url}, format="json")
    receiver.statuses = [503] * 50
    delivery = webhook_event_create(
        organization_id=alice.organization.pk,
        event="batch.completed",
        object_id="batch_x",
        payload={},
        url=receiver.url,
    )
    now = timezone.now()
    for _ in range(20):
        webhook_deliveries_redrive(now=now)
        delivery.refresh_from_db()
        if delivery.status != "pending":
            break
        now = delivery.next_attempt_at + timedelta(seconds=1)
    assert delivery.status == "failed"
    assert now - delivery.created_at < timedelta(hours=25)
    assert 5 <= delivery.attempts <= 12
    # The tenant retries it by hand: pending again, sent at once.
    receiver.statuses = []
    response = alice.client().post(f"/v1/webhook/deliveries/{delivery.public_id}/retry")
    assert response.status_code == 200, response.content
    webhook_deliveries_redrive()
    delivery.refresh_from_db()
    assert delivery.status == "succeeded"
    assert_error(alice.client().post(f"/v1/webhook/deliveries/{delivery.public_id}/retry"), 409, "conflict")


def test_delivery_time_check_catches_dns_that_changed(alice, receiver, monkeypatch):
    addresses = {"hooks.example.com": [PUBLIC_ADDRESS]}
    monkeypatch.setattr(outbound, "resolver", lambda host, port: addresses[host])
    response = alice.client().put("/v1/webhook", {"url": "https://hooks.example.com/h"}, format="json")
    assert response.status_code == 200, response.content
    addresses["hooks.example.com"] = ["127.0.0.1"]  # rebinding: now points at us
    delivery = webhook_event_create(
        organization_id=alice.organization.pk,
        event="batch.completed",
        object_id="batch_x",
        payload={},
        url="https://hooks.example.com/h",
    )
    webhook_deliveries_redrive()
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.attempts == 1
    assert delivery.last_error.startswith("URL refused") and delivery.last_status_code is None
    assert receiver.requests == []


def test_a_delivery_is_never_sent_twice_concurrently(alice, allow_private, receiver):
    alice.client().put("/v1/webhook", {"url": receiver.url}, format="json")
    delivery = webhook_event_create(
        organization_id=alice.organization.pk,
        event="batch.completed",
        object_id="b",
        payload={},
        url=receiver.url,
    )
    # A sender holds it (its claim pushed next_attempt_at a lease into the future): others skip it.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() + timedelta(seconds=60)
    )
    assert webhooks.webhook_delivery_send(public_id=delivery.public_id) is None
    assert receiver.requests == []


# --- Delivery log -----------------------------------------------------------------------------
def test_delivery_log_pagination_filter_and_isolation(alice, charlie, allow_private, receiver):
    alice.client().put("/v1/webhook", {"url": receiver.url}, format="json")
    receiver.statuses = [500]
    for index in range(3):
        webhook_event_create(
            organization_id=alice.organization.pk,
            event="batch.completed",
            object_id=f"b{index}",
            payload={},
            url=receiver.url,
        )
    webhook_deliveries_redrive()
    client = alice.client()
    page = client.get("/v1/webhook/deliveries?limit=2").json()
    assert len(page["data"]) == 2 and page["has_more"] is True
    rest = client.get(f"/v1/webhook/deliveries?limit=2&cursor={page['next_cursor']}").json()
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    assert [d["status"] for d in client.get("/v1/webhook/deliveries?status=succeeded").json()["data"]] == [
        "succeeded",
        "succeeded",
    ]
    pending = client.get("/v1/webhook/deliveries?status=pending").json()["data"]
    assert len(pending) == 1 and pending[0]["last_error"] == "HTTP 500" and pending[0]["attempts"] == 1
    assert_error(client.get("/v1/webhook/deliveries?status=lost"), 400, "invalid_request", "status")
    assert_error(client.get("/v1/webhook/deliveries?cursor=zzz"), 400, "invalid_request", "cursor")

    # charlie sees none of it and cannot touch it.
    assert charlie.client().get("/v1/webhook/deliveries").json()["data"] == []
    assert_error(charlie.client().get("/v1/webhook"), 404, "not_found")
    failed = WebhookDelivery.objects.filter(organization=alice.organization).first()
    WebhookDelivery.objects.filter(pk=failed.pk).update(status="failed")
    assert_error(charlie.client().post(f"/v1/webhook/deliveries/{failed.public_id}/retry"), 404, "not_found")
    assert WebhookDelivery.objects.get(pk=failed.pk).status == "failed"


def test_the_request_goes_to_the_checked_address_with_the_original_host(
    alice, allow_private, receiver, monkeypatch
):
    """hooks.invalid exists in no DNS: the delivery arrives only because the sender connects to the
    address it checked (the resolver's answer) instead of looking the name up again."""
    monkeypatch.setattr(outbound, "resolver", lambda host, port: ["127.0.0.1"])
    port = receiver.server.server_address[1]
    url = f"http://hooks.invalid:{port}/in?source=imagegate"
    assert alice.client().put("/v1/webhook", {"url": url}, format="json").status_code == 200
    delivery = webhook_event_create(
        organization_id=alice.organization.pk, event="batch.completed", object_id="b", payload={}, url=url
    )
    webhook_deliveries_redrive()
    delivery.refresh_from_db()
    assert delivery.status == "succeeded", delivery.last_error
    [request] = receiver.requests
    assert request["path"] == "/in?source=imagegate"
    assert request["headers"]["Host"] == f"hooks.invalid:{port}"


@pytest.mark.parametrize(
    "certificate_for, delivered", [("hooks.invalid", True), ("elsewhere.invalid", False)]
)
def test_https_delivery_verifies_the_hostname_while_connecting_to_the_checked_address(
    alice, allow_private, monkeypatch, tmp_path, certificate_for, delivered
):
    """TLS: SNI and certificate verification use the URL's hostname although the connection goes
    to the checked IP address; a certificate for another name is refused."""
    tls, cert_path = self_signed_tls(certificate_for, tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", cert_path)  # trust our self-signed certificate
    monkeypatch.setattr(outbound, "resolver", lambda host, port: ["127.0.0.1"])
    server = Receiver(tls=tls)
    try:
        url = f"https://hooks.invalid:{server.server.server_address[1]}/h"
        alice.client().put("/v1/webhook", {"url": url}, format="json")
        delivery = webhook_event_create(
            organization_id=alice.organization.pk, event="batch.completed", object_id="b", payload={}, url=url
        )
        webhook_deliveries_redrive()
        delivery.refresh_from_db()
        assert (delivery.status == "succeeded") is delivered, delivery.last_error
        assert len(server.requests) == (1 if delivered else 0)
        if not delivered:
            assert "ConnectError" in delivery.last_error
    finally:
        server.close()


@pytest.mark.django_db(transaction=True)
def test_production_path_sends_from_sender_threads_and_the_schedule_redrives(
    alice, allow_private, receiver, settings
):
    """Without the inline doorbell: the commit hook hands the delivery to a sender thread; a delivery
    whose process died before sending (still pending and due) goes out at the next scheduled run."""
    from generation.worker.tasks import redrive_webhooks

    settings.GENERATION_INLINE_DOORBELL = False
    alice.client().put("/v1/webhook", {"url": receiver.url}, format="json")
    sent = webhook_event_create(
        organization_id=alice.organization.pk,
        event="batch.completed",
        object_id="b1",
        payload={},
        url=receiver.url,
    )
    assert wait_for(lambda: WebhookDelivery.objects.get(pk=sent.pk).status == "succeeded")
    orphan = WebhookDelivery.objects.create(
        organization=alice.organization,
        event="batch.completed",
        object_id="b2",
        url=receiver.url,
        payload={},
        next_attempt_at=timezone.now(),
    )
    assert redrive_webhooks() == 1
    assert wait_for(lambda: WebhookDelivery.objects.get(pk=orphan.pk).status == "succeeded")
    assert [json.loads(r["body"]) for r in receiver.requests] == [{}, {}]
    assert redrive_webhooks() == 0


def test_the_delivery_is_recorded_in_the_jobs_terminal_transaction(alice, allow_private, receiver):
    """Under the `db` fixture nothing commits, so no after-commit hook runs: the delivery row exists
    because it was written together with the job's terminal status (a crash cannot separate them)."""
    client = alice.client()
    client.put("/v1/webhook", {"url": receiver.url}, format="json")
    job = client.post("/v1/generations", {"prompt": "never mind"}, format="json").json()
    assert not WebhookDelivery.objects.exists()
    assert client.post(f"/v1/generations/{job['id']}/cancel").status_code == 200
    delivery = WebhookDelivery.objects.get()
    assert (delivery.event, delivery.object_id, delivery.status) == (
        "generation.completed",
        job["id"],
        "pending",
    )
    assert delivery.payload["status"] == "canceled"


def test_a_redirect_is_not_followed_and_counts_as_a_failure(alice, allow_private, receiver):
    alice.client().put("/v1/webhook", {"url": receiver.url}, format="json")
    receiver.statuses = [307]
    delivery = webhook_event_create(
        organization_id=alice.organization.pk,
        event="batch.completed",
        object_id="b",
        payload={},
        url=receiver.url,
    )
    webhook_deliveries_redrive()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_status_code, delivery.last_error) == ("pending", 307, "HTTP 307")
    assert len(receiver.requests) == 1


class _TricklingReceiver:
    """Accepts, then sends one byte of a status line every 0.3 s and never finishes: a per-read
    timeout never fires, only a wall-clock deadline ends the attempt."""

    def __init__(self):
        import socket as socket_module

        self.server = socket_module.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hooks"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection):
        with connection:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                if self.stop.wait(0.3):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self):
        self.stop.set()
        self.server.close()


def test_a_trickling_receiver_cannot_hold_a_sender_past_the_deadline(alice, allow_private, settings):
    import time as time_module

    settings.WEBHOOK_TIMEOUT_SECONDS = 1.0
    settings.WEBHOOK_DEADLINE_SECONDS = 1.5
    slow = _TricklingReceiver()
    try:
        alice.client().put("/v1/webhook", {"url": slow.url}, format="json")
        delivery = webhook_event_create(
            organization_id=alice.organization.pk,
            event="batch.completed",
            object_id="batch_x",
            payload={"a": 1},
            url=slow.url,
        )
        started = time_module.monotonic()
        webhook_deliveries_redrive()
        elapsed = time_module.monotonic() - started
    finally:
        slow.close()
    delivery.refresh_from_db()
    assert elapsed < 4, elapsed  # the byte-every-0.3-s answer would otherwise last 5 minutes
    assert delivery.status == "pending" and delivery.last_error.startswith("Timed out")
