"""The contract between the router and the provider modules.

A provider turns one `ProviderRequest` into one `ProviderResult` by calling its upstream (or, for
the sandbox, by rendering locally). It never retries and never fails over: that is the router's
job. It raises a typed `UpstreamError` when nothing usable came back, and returns a partial
result (`missing > 0` plus the `error` that caused it) when only some images arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from generation.params import GenerationParams


@dataclass(frozen=True)
class Credentials:
    """Resolved at call time from the environment or a secret file; never stored in the database."""

    api_key: str | None = None  # Gemini Developer API / Vertex express mode (`x-goog-api-key`)
    service_account_info: dict | None = None  # Vertex AI: parsed service-account JSON
    project: str | None = None  # Vertex AI project id


@dataclass(frozen=True)
class Target:
    """Where and how to call: one route's provider account + upstream model + options."""

    kind: str  # "sandbox" | "gemini_api" | "vertex_ai"
    protocol: str  # "predict" | "generate_content" | "sandbox"
    base_url: str  # e.g. https://generativelanguage.googleapis.com (no trailing slash)
    model: str  # upstream model id, e.g. "gemini-3.1-flash-image"
    region: str = "global"
    credentials: Credentials = field(default_factory=Credentials)
    # Route options, e.g. {"thinking_level": "MINIMAL"}; sandbox: {"latency_ms": 300, "failure_rate": 0.0}
    options: dict = field(default_factory=dict)
    # resolution -> aspect ratio -> [width, height], from the model's capabilities (sandbox renders these)
    dimensions: dict = field(default_factory=dict)
    timeout_seconds: float = 120.0


@dataclass(frozen=True)
class InputImage:
    """An input image's bytes as stored (re-encoded by us, EXIF stripped), read at run time."""

    data: bytes
    mime_type: str  # image/png | image/jpeg | image/webp
    width: int
    height: int


@dataclass(frozen=True, kw_only=True)
class ProviderRequest(GenerationParams):
    """The parameters plus the prompt; validated against the route's capabilities beforehand.
    `count` is the number of images wanted from this call. `input_images` / `input_mask` are the
    bytes of the files named by `images` / `mask`, in the same order."""

    prompt: str
    request_id: str = ""  # for upstream logs / tracing only
    input_images: tuple[InputImage, ...] = ()
    input_mask: InputImage | None = None

    @classmethod
    def of(
        cls,
        *,
        prompt: str,
        params: GenerationParams,
        request_id: str = "",
        input_images: tuple[InputImage, ...] = (),
        input_mask: InputImage | None = None,
    ) -> ProviderRequest:
        return cls(
            prompt=prompt,
            request_id=request_id,
            input_images=input_images,
            input_mask=input_mask,
            **params.to_json(),
        )


@dataclass
class ProviderImage:
    data: bytes | None  # decoded image bytes; None when filtered
    mime_type: str | None
    filtered: bool = False
    filter_reason: str | None = None


@dataclass
class ProviderResult:
    images: list[ProviderImage]  # delivered and filtered candidates; len(images) + missing == count
    missing: int = 0  # requested but neither delivered nor filtered (partial failure)
    error: UpstreamError | None = None  # why `missing` > 0
    usage: dict = field(default_factory=dict)  # upstream token counts (Gemini usageMetadata, summed)
    upstream_cost: Decimal | None = None  # when the provider can price it from `usage`; else None
    upstream_calls: int = 1
    # Google's service tier that served the calls (`x-gemini-service-tier`, else the one asked
    # for); None when the upstream has no tiers (sandbox, Imagen). Mixed answers: the most common.
    service_tier: str | None = None


class UpstreamError(Exception):
    """Base of every upstream failure. `retryable` tells the router whether the same route may
    be tried again; `route_fault` whether other routes may still succeed (failover)."""

    retryable = False
    route_fault = True
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        upstream_status: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.upstream_status = upstream_status  # Google's `error.status`, e.g. "RESOURCE_EXHAUSTED"
        self.retry_after = retry_after  # seconds, from Retry-After or RetryInfo.retryDelay

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, http_status={self.http_status})"


class UpstreamBadRequest(UpstreamError):
    """400 INVALID_ARGUMENT: the request itself is wrong. Never retried, never failed over."""

    route_fault = False
    code = "upstream_rejected"


class UpstreamAuthError(UpstreamError):
    """401/403: this account's credentials or permissions are wrong; other routes may work."""

    code = "upstream_auth"


class UpstreamNotFound(UpstreamError):
    """404: the model is unknown or retired on this account; other routes may work."""

    code = "upstream_not_found"


class UpstreamModelNotFound(UpstreamNotFound):
    """404 NOT_FOUND "models/… is not found": the model is retired (or was never served) on this
    account. Not transient: the router disables the route at once, alerts, and fails over."""

    code = "upstream_model_not_found"


class UpstreamRateLimited(UpstreamError):
    """429 RESOURCE_EXHAUSTED; `retry_after` from RetryInfo.retryDelay or Retry-After."""

    retryable = True
    code = "upstream_rate_limited"


class UpstreamServerError(UpstreamError):
    """5xx."""

    retryable = True
    code = "upstream_server_error"


class UpstreamTimeout(UpstreamError):
    retryable = True
    code = "upstream_timeout"


class UpstreamConnectionError(UpstreamError):
    retryable = True
    code = "upstream_connection_error"


class UpstreamProtocolError(UpstreamError):
    """A 200 we cannot use: malformed JSON, no image and no block reason, undecodable bytes."""

    retryable = True
    code = "upstream_protocol_error"
