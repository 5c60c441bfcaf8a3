"""Keeps the catalog honest against Google itself: `catalog_sync` lists the models each enabled
provider account can see, and `route_model_gone` records a live 404 "model not found".

Invariants: nothing here ever routes a model (a discovered model is recorded, never given a
route); an account's routes of a model it no longer lists are disabled, and the model is retired
once no enabled Google route to it is left; one open alert per (kind, model, account), so a daily
sync never piles them up; an account whose listing fails changes nothing and raises an alert.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

import httpx
from django.db import transaction
from django.utils import timezone

from generation.engine.catalog import catalog_invalidate
from generation.engine.credentials import account_credentials
from generation.engine.providers import google_http
from generation.engine.providers.base import Target, UpstreamError
from generation.models import CatalogAlert, ProviderAccount, Route, UpstreamModel

logger = logging.getLogger(__name__)

CATALOG_SYNC_SCHEDULE_NAME = "generation: catalog_sync (models.list of every provider account)"
# Google has no "outputs images" flag in models.list; image models are named for it.
_IMAGE_MODEL = re.compile(r"(?i)(?:^imagen-|image|nano-banana)")
# The method each protocol needs in `supportedGenerationMethods`.
_METHOD_FOR_PROTOCOL: dict[str, str] = {
    UpstreamModel.Protocol.GENERATE_CONTENT: "generateContent",
    UpstreamModel.Protocol.PREDICT: "predict",
}
_KEPT_METADATA = (
    "displayName",
    "supportedGenerationMethods",
    "inputTokenLimit",
    "outputTokenLimit",
    "version",
)


@dataclass
class SyncReport:
    accounts: list[str] = field(default_factory=list)  # listed successfully
    skipped: list[str] = field(default_factory=list)  # no credentials configured: not in use
    failed: dict[str, str] = field(default_factory=dict)  # account -> error
    retired: list[str] = field(default_factory=list)
    routes_disabled: list[str] = field(default_factory=list)
    discovered: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"listed {len(self.accounts)} account(s), {len(self.failed)} failed, "
            f"{len(self.skipped)} without credentials; retired "
            f"{self.retired or 'none'}; routes disabled {self.routes_disabled or 'none'}; discovered "
            f"{self.discovered or 'none'}; metadata mismatches {self.mismatched or 'none'}"
        )


def model_id_from_name(name: str) -> str:
    """ "models/gemini-3-pro-image" / "publishers/google/models/x@001" -> the bare model id."""
    bare = name.rsplit("/", 1)[-1]
    return bare.split("@", 1)[0]


def alert_raise(
    *, kind: str, model_id: str, message: str, account: ProviderAccount | None = None
) -> CatalogAlert:
    """An open alert for (kind, model, account), created once; a repeat refreshes its message."""
    alert = CatalogAlert.objects.filter(
        kind=kind, model_id=model_id, account=account, acknowledged_at__isnull=True
    ).first()
    if alert is None:
        return CatalogAlert.objects.create(kind=kind, model_id=model_id, account=account, message=message)
    if alert.message != message:
        alert.message = message
        alert.save(update_fields=["message"])
    return alert


def open_alerts(*, limit: int = 50) -> list[CatalogAlert]:
    return list(CatalogAlert.objects.filter(acknowledged_at__isnull=True).select_related("account")[:limit])


@transaction.atomic
def route_model_gone(*, account_id: int, model_id: str, message: str) -> int:
    """A live call answered 404 "model not found": disable this account's routes of the model at
    once (every tier) and alert. Returns how many routes were disabled."""
    reason = f"upstream 404 model not found ({timezone.now():%Y-%m-%d %H:%M} UTC)"
    disabled = Route.objects.filter(account_id=account_id, model__model_id=model_id, enabled=True).update(
        enabled=False, disabled_reason=reason
    )
    account = ProviderAccount.objects.filter(pk=account_id).first()
    alert_raise(
        kind=CatalogAlert.Kind.MODEL_NOT_FOUND,
        model_id=model_id,
        account=account,
        message=f"{disabled} route(s) of {model_id} on {account} disabled: {message}"[:2000],
    )
    transaction.on_commit(catalog_invalidate)
    return disabled


def _list(account: ProviderAccount, credentials) -> list[dict]:
    target = Target(
        kind=account.kind,
        protocol="models.list",
        base_url=account.effective_base_url,
        model="",
        region=account.region,
        credentials=credentials,
        timeout_seconds=float(account.timeout_seconds),
    )

    async def run() -> list[dict]:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            return await google_http.list_models(client, target)

    return asyncio.run(run())


def catalog_sync(*, accounts: list[ProviderAccount] | None = None) -> SyncReport:
    """List every enabled Google account's models and reconcile the catalog with them."""
    report = SyncReport()
    if accounts is None:
        accounts = list(
            ProviderAccount.objects.filter(enabled=True).exclude(kind=ProviderAccount.Kind.SANDBOX)
        )
    listings: dict[int, dict[str, dict]] = {}
    for account in accounts:
        credentials = account_credentials(account)
        if credentials is None:
            report.skipped.append(account.name)  # a fresh install's unconfigured accounts: no noise
            continue
        try:
            entries = _list(account, credentials)
        except UpstreamError as exc:
            report.failed[account.name] = str(exc)
            alert_raise(
                kind=CatalogAlert.Kind.SYNC_FAILED,
                model_id="*",
                account=account,
                message=f"models.list on {account.name} failed: {exc}"[:2000],
            )
            continue
        report.accounts.append(account.name)
        listings[account.pk] = {
            model_id_from_name(str(e.get("name", ""))): e for e in entries if e.get("name")
        }
    if listings:
        _reconcile(listings, {a.pk: a for a in accounts}, report)
        catalog_invalidate()
    logger.info("catalog_sync: %s", report.summary())
    return report


@transaction.atomic
def _reconcile(
    listings: dict[int, dict[str, dict]], accounts: dict[int, ProviderAccount], report: SyncReport
) -> None:
    now = timezone.now()
    today = now.date()
    known = {m.model_id: m for m in UpstreamModel.objects.select_for_update()}
    routed: dict[str, set[int]] = {}
    for route in Route.objects.filter(enabled=True, account_id__in=listings).select_related("model"):
        routed.setdefault(route.model.model_id, set()).add(route.account_id)

    for model_id, account_ids in sorted(routed.items()):
        model = known[model_id]
        missing = {pk for pk in account_ids if model_id not in listings[pk]}
        if not missing:
            continue
        for pk in sorted(missing):
            count = Route.objects.filter(account_id=pk, model=model, enabled=True).update(
                enabled=False, disabled_reason=f"not in models.list of {accounts[pk].name} on {today}"
            )
            report.routes_disabled += [f"{accounts[pk].name}/{model_id}"] * bool(count)
            alert_raise(
                kind=CatalogAlert.Kind.MODEL_GONE,
                model_id=model_id,
                account=accounts[pk],
                message=f"{model_id} is no longer listed by {accounts[pk].name}; its {count} route(s) "
                "there were disabled.",
            )
        still_served = (
            Route.objects.filter(model=model, enabled=True, account__enabled=True)
            .exclude(account__kind=ProviderAccount.Kind.SANDBOX)
            .exists()
        )
        if not still_served and model.lifecycle != UpstreamModel.Lifecycle.RETIRED:
            model.lifecycle = UpstreamModel.Lifecycle.RETIRED
            if model.shutdown_date is None or model.shutdown_date > today:
                model.shutdown_date = today
            model.save(update_fields=["lifecycle", "shutdown_date"])
            report.retired.append(model_id)

    for pk, listing in listings.items():
        account = accounts[pk]
        for model_id, entry in sorted(listing.items()):
            found = known.get(model_id)
            if found is None:
                if not _IMAGE_MODEL.search(model_id):
                    continue
                methods = entry.get("supportedGenerationMethods") or []
                known[model_id] = UpstreamModel.objects.create(
                    model_id=model_id,
                    display_name=str(entry.get("displayName") or model_id)[:100],
                    protocol=UpstreamModel.Protocol.PREDICT
                    if "predict" in methods and "generateContent" not in methods
                    else UpstreamModel.Protocol.GENERATE_CONTENT,
                    lifecycle=UpstreamModel.Lifecycle.DISCOVERED,
                    source=f"discovered by catalog_sync in models.list of {account.name} on {today}",
                    upstream_metadata={account.name: _kept(entry)},
                    last_seen_upstream_at=now,
                )
                report.discovered.append(model_id)
                alert_raise(
                    kind=CatalogAlert.Kind.MODEL_DISCOVERED,
                    model_id=model_id,
                    account=account,
                    message=f"{model_id} appeared in models.list of {account.name}: check its capabilities "
                    "and prices, then make it active and give it a route (it is not routed until then).",
                )
                continue
            model = found
            mismatch = _mismatch(model, entry, today=today)
            model.upstream_metadata = {**model.upstream_metadata, account.name: _kept(entry)}
            model.last_seen_upstream_at = now
            model.metadata_mismatch = mismatch
            model.save(update_fields=["upstream_metadata", "last_seen_upstream_at", "metadata_mismatch"])
            if mismatch:
                report.mismatched.append(model_id)
                alert_raise(
                    kind=CatalogAlert.Kind.METADATA_MISMATCH,
                    model_id=model_id,
                    account=account,
                    message=mismatch,
                )


def _kept(entry: dict) -> dict:
    return {key: entry[key] for key in _KEPT_METADATA if key in entry}


def _mismatch(model: UpstreamModel, entry: dict, *, today) -> str:
    """What Google says that contradicts our row (empty when nothing does)."""
    problems = []
    methods = entry.get("supportedGenerationMethods")
    wanted = _METHOD_FOR_PROTOCOL.get(model.protocol)
    if isinstance(methods, list) and wanted and wanted not in methods:
        problems.append(f"upstream methods {methods} lack {wanted} (our protocol {model.protocol})")
    if model.is_retired(today):
        # e.g. a shutdown date we only have from a third party: Google still serves the model.
        since = f" since {model.shutdown_date}" if model.shutdown_date else ""
        problems.append(f"still listed upstream although retired here{since}")
    return "; ".join(problems)[:500]


def catalog_sync_task() -> str:
    """django-q2 schedule entry point (daily)."""
    return catalog_sync().summary()
