"""A small fake of the Stripe v1 API, for tests and local development, served on 127.0.0.1.

localstripe has no Prices, Meters, meter events, Checkout or Portal, so this implements exactly the
endpoints `billing.stripe_client` calls, speaking what stripe-python sends (form-encoded v1 bodies,
`Authorization: Bearer sk_…`, `Idempotency-Key`) and answering with the fields the SDK reads. It
validates what Stripe validates for them and behaves like Stripe where our code depends on it:

- idempotency: the first response to a key is saved and replayed for that key, 500s included
  (a different body with the same key is a 400 `idempotency_error`); validation errors are not saved;
- meter events: an `identifier` is deduplicated for 24 hours only (a second one inside that window is
  a 400 "An event already exists with identifier …" with `Stripe-Should-Retry: false`; after it, the
  event is accepted and counted again, as Stripe does); `timestamp` must be within the past 35 days
  or at most 5 minutes ahead; the payload needs the meter's customer and numeric value keys;
- meter event summaries (`GET /v1/billing/meters/{id}/event_summaries`): the sum of the customer's
  accepted events with `start_time <= timestamp < end_time`, both minute-aligned, as Stripe requires;
- metered prices need a meter; Checkout line items of metered prices must not carry a quantity.

Fault injection (meter events only): `meter_event_failure_rate` answers 500, and
`meter_event_timeout_rate` holds the response past the client's timeout, either before or after
accepting the event (a lost answer). Everything received is recorded in `requests`.

Run it by hand with `python -m fakes.stripe_server --port 12111` and STRIPE_API_BASE=http://127.0.0.1:12111.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

METER_EVENT_MAX_AGE_SECONDS = 35 * 24 * 3600
METER_EVENT_MAX_AHEAD_SECONDS = 5 * 60
# Stripe deduplicates meter event identifiers for a rolling 24 hours, no longer.
METER_EVENT_DEDUPE_SECONDS = 24 * 3600


class FakeStripeError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        saved: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type, "message": message}}
        if code:
            self.body["error"]["code"] = code
        if param:
            self.body["error"]["param"] = param
        self.headers = headers or {}
        # Whether Stripe would save this answer under the idempotency key (execution had begun).
        self.saved = saved


def _missing(param: str) -> FakeStripeError:
    return FakeStripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def _no_such(kind: str, object_id: str, param: str = "id") -> FakeStripeError:
    return FakeStripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def parse_form(text: str) -> dict[str, Any]:
    """Decode stripe-python's bracket encoding (`a[b][0][c]=v`) into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def _as_bool(value: Any) -> bool:
    return str(value).lower() == "true"


@dataclass
class ReceivedRequest:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    status: int = 0
    # accepted, duplicate, replayed, injected_500, timeout_before, timeout_after, invalid, ok
    outcome: str = ""
    at: float = field(default_factory=time.monotonic)


class FakeStripe:
    def __init__(self, *, seed: int = 20261124, livemode: bool = False):
        self.livemode = livemode
        self.rng = random.Random(seed)
        self.meter_event_failure_rate = 0.0
        self.meter_event_timeout_rate = 0.0
        self.timeout_sleep_seconds = 2.0
        # "before": hold, then accept (the event lands after the client gave up); "after": accept, then
        # hold (the answer is lost); "random": either.
        self.timeout_mode = "random"
        self.meter_event_latency_seconds = 0.0
        self._lock = threading.RLock()
        self.customers: dict[str, dict] = {}
        self.products: dict[str, dict] = {}
        self.prices: dict[str, dict] = {}
        self.meters: dict[str, dict] = {}
        self.meter_events: dict[str, dict] = {}  # accepted, by identifier (the latest one)
        self.meter_event_log: list[dict] = []  # every accepted event, duplicates past the window included
        self.checkout_sessions: dict[str, dict] = {}
        self.portal_sessions: dict[str, dict] = {}
        self.requests: list[ReceivedRequest] = []
        self._idempotent: dict[str, tuple[str, int, dict]] = {}
        self._in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        fake = self

        class Handler(_Handler):
            stripe = fake

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # do not wait for handlers still sleeping out a timeout
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-stripe", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"  # noqa: S101 - a test double
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- what tests read ------------------------------------------------------------------------

    def received(self, method: str | None = None, path: str | None = None) -> list[ReceivedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def created_objects(self) -> int:
        """Objects created so far (customers, products, prices, meters)."""
        with self._lock:
            return len(self.customers) + len(self.products) + len(self.prices) + len(self.meters)

    def usage_by_customer(self) -> dict[tuple[str, str], Decimal]:
        """Sum of accepted meter event values per (customer, event name), as a sum meter aggregates."""
        totals: dict[tuple[str, str], Decimal] = {}
        with self._lock:
            for event in self.meter_event_log:
                key = (event["payload"]["stripe_customer_id"], event["event_name"])
                totals[key] = totals.get(key, Decimal(0)) + Decimal(event["payload"]["value"])
        return totals

    # --- request handling ---------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{'test_' if prefix == 'cs' and not self.livemode else ''}{secrets.token_hex(12)}"

    def handle(
        self, method: str, path: str, params: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict, dict[str, str], float, str]:
        """Returns (status, body, headers, seconds to hold the response, outcome)."""
        key = headers.get("idempotency-key") if method == "POST" else None
        record = ReceivedRequest(method=method, path=path, params=params, idempotency_key=key)
        with self._lock:
            self.requests.append(record)
            self._in_flight += 1
        try:
            status, body, extra, hold, outcome = self._handle(method, path, params, headers, key)
            record.status, record.outcome = status, outcome
        finally:
            with self._lock:
                self._in_flight -= 1
        return status, body, extra, hold, outcome

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being processed (a held one may still be accepted late)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._in_flight:
                    return
            time.sleep(0.01)
        raise TimeoutError("the fake Stripe is still processing requests")

    def _handle(self, method, path, params, headers, key):
        authorization = headers.get("authorization", "")
        if not re.match(r"^Bearer (sk|rk)_(test|live)_\S+$", authorization):
            error = FakeStripeError(401, "Invalid API Key provided.", code="api_key_invalid")
            return error.status, error.body, {}, 0.0, "invalid"
        fingerprint = json.dumps([method, path, params], sort_keys=True)
        with self._lock:
            if key is not None and key in self._idempotent:
                saved_fingerprint, status, body = self._idempotent[key]
                if saved_fingerprint != fingerprint:
                    error = FakeStripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{key}' if you meant to execute a "
                        "different request.",
                        type="idempotency_error",
                    )
                    return error.status, error.body, {}, 0.0, "invalid"
                return status, body, {"Idempotent-Replayed": "true"}, 0.0, "replayed"
        hold, outcome = 0.0, "ok"
        is_meter_event = method == "POST" and path == "/v1/billing/meter_events"
        if is_meter_event:
            roll = self.rng.random()
            if roll < self.meter_event_failure_rate:
                error = FakeStripeError(
                    500, "An unknown error occurred (injected).", type="api_error", saved=True
                )
                self._save(key, fingerprint, error.status, error.body)
                return error.status, error.body, {}, 0.0, "injected_500"
            if roll < self.meter_event_failure_rate + self.meter_event_timeout_rate:
                hold = self.timeout_sleep_seconds
                mode = (
                    self.timeout_mode
                    if self.timeout_mode != "random"
                    else self.rng.choice(["before", "after"])
                )
                outcome = f"timeout_{mode}"
                if outcome == "timeout_before":
                    # Stripe is slow to even start: the client gives up, then the event lands anyway.
                    time.sleep(hold)
                    hold = 0.0
            elif self.meter_event_latency_seconds:
                time.sleep(self.meter_event_latency_seconds)
        try:
            with self._lock:
                status, body = self._route(method, path, params)
                self._save(key, fingerprint, status, body)
        except FakeStripeError as error:
            if error.saved:
                self._save(key, fingerprint, error.status, error.body)
            duplicate = error.body["error"].get("code") == "duplicate_meter_event"
            return error.status, error.body, error.headers, hold, "duplicate" if duplicate else "invalid"
        if is_meter_event and outcome == "ok":
            outcome = "accepted"
        return status, body, {}, hold, outcome

    def _save(self, key: str | None, fingerprint: str, status: int, body: dict) -> None:
        if key is not None:
            with self._lock:
                self._idempotent[key] = (fingerprint, status, body)

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, dict]:
        routes: list[tuple[str, str, Any]] = [
            ("POST", r"/v1/customers", self._customer_create),
            (
                "GET",
                r"/v1/customers/(?P<oid>[^/]+)",
                lambda p, oid: self._get(self.customers, "customer", oid),
            ),
            ("POST", r"/v1/products", self._product_create),
            ("GET", r"/v1/products/(?P<oid>[^/]+)", lambda p, oid: self._get(self.products, "product", oid)),
            ("POST", r"/v1/products/(?P<oid>[^/]+)", self._product_update),
            ("POST", r"/v1/prices", self._price_create),
            ("GET", r"/v1/prices", self._price_list),
            ("GET", r"/v1/prices/(?P<oid>[^/]+)", lambda p, oid: self._get(self.prices, "price", oid)),
            ("POST", r"/v1/billing/meters", self._meter_create),
            ("GET", r"/v1/billing/meters/(?P<oid>[^/]+)/event_summaries", self._meter_event_summaries),
            ("GET", r"/v1/billing/meters", self._meter_list),
            (
                "GET",
                r"/v1/billing/meters/(?P<oid>[^/]+)",
                lambda p, oid: self._get(self.meters, "billing.meter", oid),
            ),
            ("POST", r"/v1/billing/meter_events", self._meter_event_create),
            ("POST", r"/v1/checkout/sessions", self._checkout_session_create),
            ("POST", r"/v1/billing_portal/sessions", self._portal_session_create),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                return 200, handler(params, **match.groupdict())
        raise FakeStripeError(404, f"Unrecognized request URL ({method}: {path}).")

    def _base(self, prefix: str, object_name: str) -> dict[str, Any]:
        return {
            "id": self._id(prefix),
            "object": object_name,
            "livemode": self.livemode,
            "created": int(time.time()),
        }

    def _get(self, store: dict[str, dict], kind: str, object_id: str) -> dict:
        if object_id not in store:
            raise _no_such(kind, object_id)
        return store[object_id]

    @staticmethod
    def _metadata(params: dict[str, Any]) -> dict[str, str]:
        metadata = params.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise FakeStripeError(400, "Invalid object", param="metadata")
        return metadata

    # --- customers and products --------------------------------------------------------------

    def _customer_create(self, params: dict[str, Any]) -> dict:
        customer = {
            **self._base("cus", "customer"),
            "name": params.get("name"),
            "email": params.get("email"),
            "metadata": self._metadata(params),
        }
        self.customers[customer["id"]] = customer
        return customer

    def _product_create(self, params: dict[str, Any]) -> dict:
        if not params.get("name"):
            raise _missing("name")
        product = {
            **self._base("prod", "product"),
            "name": params["name"],
            "active": True,
            "metadata": self._metadata(params),
        }
        self.products[product["id"]] = product
        return product

    def _product_update(self, params: dict[str, Any], oid: str) -> dict:
        product = self._get(self.products, "product", oid)
        if "name" in params:
            if not params["name"]:
                raise FakeStripeError(400, "You passed an empty string for 'name'.", param="name")
            product["name"] = params["name"]
        if "active" in params:
            product["active"] = _as_bool(params["active"])
        return product

    # --- prices --------------------------------------------------------------------------------

    def _price_create(self, params: dict[str, Any]) -> dict:
        for required in ("currency", "product"):
            if not params.get(required):
                raise _missing(required)
        product = params["product"]
        if not isinstance(product, str) or product not in self.products:
            raise _no_such("product", str(product), "product")
        has_amount, has_decimal = "unit_amount" in params, "unit_amount_decimal" in params
        if has_amount and has_decimal:
            raise FakeStripeError(
                400, "You may only specify one of these parameters: unit_amount, unit_amount_decimal."
            )
        if not (has_amount or has_decimal):
            raise _missing("unit_amount")
        try:
            amount = Decimal(params["unit_amount_decimal"] if has_decimal else params["unit_amount"])
        except InvalidOperation:
            raise FakeStripeError(400, "Invalid decimal", param="unit_amount_decimal") from None
        exponent = amount.as_tuple().exponent
        if amount < 0 or (has_amount and amount != amount.to_integral_value()):
            raise FakeStripeError(400, "Invalid amount", param="unit_amount")
        if isinstance(exponent, int) and -exponent > 12:
            raise FakeStripeError(
                400, "unit_amount_decimal allows at most 12 decimal places.", param="unit_amount_decimal"
            )
        recurring = params.get("recurring")
        if recurring is not None:
            if not isinstance(recurring, dict) or recurring.get("interval") not in (
                "day",
                "week",
                "month",
                "year",
            ):
                raise _missing("recurring[interval]")
            usage_type = recurring.get("usage_type", "licensed")
            if usage_type not in ("licensed", "metered"):
                raise FakeStripeError(400, "Invalid usage_type", param="recurring[usage_type]")
            meter = recurring.get("meter")
            if usage_type == "metered":
                if not meter:
                    raise FakeStripeError(
                        400,
                        "A meter is required for prices with `usage_type=metered`.",
                        param="recurring[meter]",
                    )
                if meter not in self.meters or self.meters[meter]["status"] != "active":
                    raise _no_such("billing meter", meter, "recurring[meter]")
            elif meter:
                raise FakeStripeError(
                    400, "A meter can only be set on metered prices.", param="recurring[meter]"
                )
            recurring = {
                "interval": recurring["interval"],
                "interval_count": int(recurring.get("interval_count", 1)),
                "usage_type": usage_type,
                "meter": meter,
                "aggregate_usage": None,
                "trial_period_days": None,
            }
        lookup_key = params.get("lookup_key")
        if lookup_key:
            holder = next((p for p in self.prices.values() if p["lookup_key"] == lookup_key), None)
            if holder is not None:
                if not _as_bool(params.get("transfer_lookup_key", "false")):
                    raise FakeStripeError(
                        400, f"A price (`{holder['id']}`) already uses that lookup key.", param="lookup_key"
                    )
                holder["lookup_key"] = None
        price = {
            **self._base("price", "price"),
            "active": True,
            "product": product,
            "currency": params["currency"].lower(),
            "unit_amount": int(amount) if amount == amount.to_integral_value() else None,
            "unit_amount_decimal": format(amount.normalize(), "f"),
            "recurring": recurring,
            "type": "recurring" if recurring else "one_time",
            "billing_scheme": "per_unit",
            "lookup_key": lookup_key or None,
            "nickname": params.get("nickname"),
            "metadata": self._metadata(params),
        }
        self.prices[price["id"]] = price
        return price

    def _price_list(self, params: dict[str, Any]) -> dict:
        prices = list(self.prices.values())
        lookup_keys = params.get("lookup_keys")
        if lookup_keys is not None:
            wanted = set(lookup_keys if isinstance(lookup_keys, list) else [lookup_keys])
            prices = [p for p in prices if p["lookup_key"] in wanted]
        if "active" in params:
            prices = [p for p in prices if p["active"] == _as_bool(params["active"])]
        if params.get("product"):
            prices = [p for p in prices if p["product"] == params["product"]]
        return self._list("/v1/prices", prices, params)

    @staticmethod
    def _list(url: str, items: list[dict], params: dict[str, Any]) -> dict:
        limit = int(params.get("limit", 10))
        return {"object": "list", "url": url, "has_more": len(items) > limit, "data": items[:limit]}

    # --- meters and meter events ---------------------------------------------------------------

    def _meter_create(self, params: dict[str, Any]) -> dict:
        for required in ("display_name", "event_name"):
            if not params.get(required):
                raise _missing(required)
        formula = (params.get("default_aggregation") or {}).get("formula")
        if not formula:
            raise _missing("default_aggregation[formula]")
        if formula not in ("count", "sum", "last"):
            raise FakeStripeError(400, "Invalid formula", param="default_aggregation[formula]")
        event_name = params["event_name"]
        if any(m["event_name"] == event_name and m["status"] == "active" for m in self.meters.values()):
            raise FakeStripeError(
                400, f"An active meter with event_name `{event_name}` already exists.", param="event_name"
            )
        mapping = params.get("customer_mapping") or {}
        meter = {
            **self._base("mtr", "billing.meter"),
            "display_name": params["display_name"],
            "event_name": event_name,
            "status": "active",
            "default_aggregation": {"formula": formula},
            "customer_mapping": {
                "type": mapping.get("type", "by_id"),
                "event_payload_key": mapping.get("event_payload_key", "stripe_customer_id"),
            },
            "value_settings": {
                "event_payload_key": (params.get("value_settings") or {}).get("event_payload_key", "value")
            },
            "event_time_window": params.get("event_time_window"),
            "status_transitions": {"deactivated_at": None},
            "updated": int(time.time()),
        }
        self.meters[meter["id"]] = meter
        return meter

    def _meter_list(self, params: dict[str, Any]) -> dict:
        meters = list(self.meters.values())
        if params.get("status"):
            meters = [m for m in meters if m["status"] == params["status"]]
        return self._list("/v1/billing/meters", meters, params)

    def _meter_event_create(self, params: dict[str, Any]) -> dict:
        if not params.get("event_name"):
            raise _missing("event_name")
        payload = params.get("payload")
        if not isinstance(payload, dict) or not payload:
            raise _missing("payload")
        meter = next(
            (
                m
                for m in self.meters.values()
                if m["event_name"] == params["event_name"] and m["status"] == "active"
            ),
            None,
        )
        customer_key = meter["customer_mapping"]["event_payload_key"] if meter else "stripe_customer_id"
        value_key = meter["value_settings"]["event_payload_key"] if meter else "value"
        if not payload.get(customer_key):
            raise _missing(f"payload[{customer_key}]")
        if value_key not in payload:
            raise _missing(f"payload[{value_key}]")
        try:
            Decimal(payload[value_key])
        except InvalidOperation:
            raise FakeStripeError(400, "The value must be a number.", param=f"payload[{value_key}]") from None
        now = int(time.time())
        timestamp = int(params.get("timestamp") or now)
        if timestamp < now - METER_EVENT_MAX_AGE_SECONDS:
            raise FakeStripeError(
                400,
                "Timestamp must be within the past 35 calendar days.",
                code="timestamp_too_far_in_past",
                param="timestamp",
            )
        if timestamp > now + METER_EVENT_MAX_AHEAD_SECONDS:
            raise FakeStripeError(
                400,
                "Timestamp must not be more than 5 minutes in the future.",
                code="timestamp_in_future",
                param="timestamp",
            )
        identifier = params.get("identifier") or secrets.token_hex(16)
        previous = self.meter_events.get(identifier)
        if previous is not None and now - previous["created"] < METER_EVENT_DEDUPE_SECONDS:
            raise FakeStripeError(
                400,
                f"An event already exists with identifier {identifier}.",
                code="duplicate_meter_event",
                param="identifier",
                headers={"Stripe-Should-Retry": "false"},
            )
        event = {
            "object": "billing.meter_event",
            "event_name": params["event_name"],
            "identifier": identifier,
            "payload": payload,
            "timestamp": timestamp,
            "created": now,
            "livemode": self.livemode,
            # Not in Stripe's response: what its asynchronous validation would report.
            "_error": None if meter and payload[customer_key] in self.customers else "no_meter_or_customer",
        }
        self.meter_events[identifier] = event
        self.meter_event_log.append(event)
        return {k: v for k, v in event.items() if not k.startswith("_")}

    def _meter_event_summaries(self, params: dict[str, Any], oid: str) -> dict:
        meter = self._get(self.meters, "billing.meter", oid)
        if not params.get("customer"):
            raise _missing("customer")
        bounds = {}
        for name in ("start_time", "end_time"):
            if not params.get(name):
                raise _missing(name)
            try:
                bounds[name] = int(params[name])
            except ValueError:
                raise FakeStripeError(400, f"Invalid integer: {params[name]}", param=name) from None
            if bounds[name] % 60:
                raise FakeStripeError(400, f"{name} must be aligned with minute boundaries.", param=name)
        start, end = bounds["start_time"], bounds["end_time"]
        if end <= start:
            raise FakeStripeError(400, "end_time must be after start_time.", param="end_time")
        if params.get("value_grouping_window"):
            raise FakeStripeError(400, "value_grouping_window is not supported by this fake.")
        customer_key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        total = sum(
            (
                Decimal(event["payload"][value_key])
                for event in self.meter_event_log
                if event["event_name"] == meter["event_name"]
                and event["payload"].get(customer_key) == params["customer"]
                and start <= event["timestamp"] < end
            ),
            Decimal(0),
        )
        summary = {
            "id": f"mtrusg_{secrets.token_hex(12)}",
            "object": "billing.meter_event_summary",
            "aggregated_value": float(total),
            "start_time": start,
            "end_time": end,
            "livemode": self.livemode,
            "meter": oid,
        }
        return self._list(f"/v1/billing/meters/{oid}/event_summaries", [summary], params)

    # --- checkout and portal -------------------------------------------------------------------

    def _customer(self, params: dict[str, Any], required: bool) -> str | None:
        customer = params.get("customer")
        if not customer:
            if required:
                raise _missing("customer")
            return None
        if customer not in self.customers:
            raise _no_such("customer", customer, "customer")
        return customer

    def _checkout_session_create(self, params: dict[str, Any]) -> dict:
        mode = params.get("mode")
        if not mode:
            raise _missing("mode")
        if mode not in ("payment", "setup", "subscription"):
            raise FakeStripeError(400, "Invalid mode", param="mode")
        if params.get("ui_mode", "hosted_page") in ("hosted", "hosted_page") and not params.get(
            "success_url"
        ):
            raise _missing("success_url")
        customer = self._customer(params, required=False)
        line_items = params.get("line_items") or []
        if mode != "setup" and not line_items:
            raise _missing("line_items")
        recurring_seen = False
        for index, item in enumerate(line_items):
            price_id = item.get("price")
            if not price_id:
                raise _missing(f"line_items[{index}][price]")
            price = self.prices.get(price_id)
            if price is None or not price["active"]:
                raise _no_such("price", price_id, f"line_items[{index}][price]")
            recurring = price["recurring"]
            recurring_seen = recurring_seen or recurring is not None
            if recurring and recurring["usage_type"] == "metered":
                if "quantity" in item:
                    raise FakeStripeError(
                        400,
                        "Quantity should not be specified where usage_type is `metered`. "
                        f"Remove quantity from `line_items[{index}]`.",
                        param=f"line_items[{index}][quantity]",
                    )
            elif "quantity" not in item:
                raise _missing(f"line_items[{index}][quantity]")
        if mode == "subscription" and not recurring_seen:
            raise FakeStripeError(
                400,
                "You must provide at least one recurring price in `subscription` mode.",
                param="line_items",
            )
        session = {
            **self._base("cs", "checkout.session"),
            "mode": mode,
            "customer": customer,
            "client_reference_id": params.get("client_reference_id"),
            "metadata": self._metadata(params),
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
            "status": "open",
            "payment_status": "unpaid",
            "subscription": None,
            "line_items_requested": line_items,  # not Stripe's shape (that is a sub-list); for tests
        }
        session["url"] = f"{self.base_url}/c/pay/{session['id']}"
        self.checkout_sessions[session["id"]] = session
        return session

    def _portal_session_create(self, params: dict[str, Any]) -> dict:
        customer = self._customer(params, required=True)
        session = {
            **self._base("bps", "billing_portal.session"),
            "customer": customer,
            "return_url": params.get("return_url"),
            "configuration": "bpc_default",
        }
        session["url"] = f"{self.base_url}/p/session/{session['id']}"
        self.portal_sessions[session["id"]] = session
        return session


class _Handler(BaseHTTPRequestHandler):
    stripe: FakeStripe
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; without TCP_NODELAY each answer waits on a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # quiet: tests read `FakeStripe.requests`
        pass

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        params = parse_form(body if self.command == "POST" else url.query)
        headers = {key.lower(): value for key, value in self.headers.items()}
        status, payload, extra, hold, _ = self.stripe.handle(self.command, url.path, params, headers)
        if hold:
            time.sleep(hold)  # past the client's timeout: it has given up by now
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", f"req_{secrets.token_hex(8)}")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = _serve
    do_POST = _serve
    do_DELETE = _serve


def main() -> None:  # pragma: no cover - manual use
    parser = argparse.ArgumentParser(description="Serve a fake Stripe API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=12111)
    args = parser.parse_args()
    fake = FakeStripe()
    print(f"Fake Stripe on {fake.start(port=args.port)} (Ctrl-C stops it)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
