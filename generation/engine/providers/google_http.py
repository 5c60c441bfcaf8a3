"""One HTTP exchange with a Google model endpoint, shared by the `:predict` and `:generateContent`
providers and by catalog_sync's models.list: which URL family and auth header a Target selects,
the deadline, and error mapping.

Invariants: a call either returns the parsed JSON object of a 2xx answer or raises a typed
`UpstreamError`; it never retries; `target.timeout_seconds` bounds the whole exchange.
"""

from __future__ import annotations

import asyncio

import httpx
import orjson

from generation.engine.providers import google_errors, vertex_auth
from generation.engine.providers.base import Target, UpstreamAuthError, UpstreamProtocolError, UpstreamTimeout

# Connecting is quick or broken; waiting long for a SYN only delays failover.
CONNECT_TIMEOUT_SECONDS = 10.0


async def endpoint(target: Target, method: str) -> tuple[str, dict[str, str]]:
    """URL and auth headers for `method` ("predict" | "generateContent") on this target.

    gemini_api: `/v1beta/models/{m}` + API key. vertex_ai with a service account: the project
    path + OAuth bearer. vertex_ai with only an API key ("express mode"): `/v1/publishers/...`.
    """
    credentials = target.credentials
    base, model = target.base_url.rstrip("/"), target.model
    if target.kind == "vertex_ai" and credentials.service_account_info:
        info = credentials.service_account_info
        project = credentials.project or info.get("project_id")
        if not project:
            raise UpstreamAuthError("Vertex target has a service account but no project id")
        token = await vertex_auth.access_token(info)
        path = f"/v1/projects/{project}/locations/{target.region}/publishers/google/models/{model}"
        return f"{base}{path}:{method}", {"authorization": f"Bearer {token}"}
    if not credentials.api_key:
        raise UpstreamAuthError(f"{target.kind} target has no API key")
    if target.kind == "vertex_ai":
        return f"{base}/v1/publishers/google/models/{model}:{method}", {"x-goog-api-key": credentials.api_key}
    return f"{base}/v1beta/models/{model}:{method}", {"x-goog-api-key": credentials.api_key}


async def post(client: httpx.AsyncClient, target: Target, method: str, body: dict) -> dict:
    """POST `body` to the target's `method` endpoint; the decoded JSON object of a 2xx answer."""
    payload, _ = await post_with_headers(client, target, method, body)
    return payload


async def post_with_headers(
    client: httpx.AsyncClient, target: Target, method: str, body: dict
) -> tuple[dict, httpx.Headers]:
    """`post`, plus the response headers (`x-gemini-service-tier` says which tier served it)."""
    url, headers = await endpoint(target, method)
    timeout = target.timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            # httpx's read timeout is per chunk; asyncio.timeout makes it a deadline for the call.
            response = await client.post(
                url,
                json=body,
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS)),
            )
    except TimeoutError:
        raise UpstreamTimeout(f"Google {method} did not answer within {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise google_errors.error_from_exception(exc) from None
    return _decoded(response, method), response.headers


async def list_models(client: httpx.AsyncClient, target: Target, *, page_size: int = 100) -> list[dict]:
    """Every model the target's account can see, following `nextPageToken`: Gemini API
    `GET {base}/v1beta/models` (x-goog-api-key), Vertex `GET {base}/v1beta1/publishers/google/models`
    (OAuth bearer, or the API key in express mode). Each entry as Google sends it (`name` is
    "models/…" or "publishers/google/models/…")."""
    url, headers = await _list_endpoint(target)
    timeout = target.timeout_seconds
    models: list[dict] = []
    token: str | None = None
    for _ in range(100):  # a bound: a server repeating a page token must not loop us forever
        params: dict[str, str | int] = {"pageSize": page_size}
        if token:
            params["pageToken"] = token
        try:
            async with asyncio.timeout(timeout):
                response = await client.get(
                    url,
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS)),
                )
        except TimeoutError:
            raise UpstreamTimeout(f"Google models.list did not answer within {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise google_errors.error_from_exception(exc) from None
        payload = _decoded(response, "models.list")
        page = payload.get("models") if "models" in payload else payload.get("publisherModels")
        models += [m for m in page or [] if isinstance(m, dict)]
        token = payload.get("nextPageToken") or None
        if not token:
            return models
    raise UpstreamProtocolError("Google models.list kept returning page tokens (over 100 pages)")


async def _list_endpoint(target: Target) -> tuple[str, dict[str, str]]:
    credentials = target.credentials
    base = target.base_url.rstrip("/")
    if target.kind == "vertex_ai" and credentials.service_account_info:
        token = await vertex_auth.access_token(credentials.service_account_info)
        headers = {"authorization": f"Bearer {token}"}
        project = credentials.project or credentials.service_account_info.get("project_id")
        if project:
            headers["x-goog-user-project"] = project
        return f"{base}/v1beta1/publishers/google/models", headers
    if not credentials.api_key:
        raise UpstreamAuthError(f"{target.kind} target has no API key")
    if target.kind == "vertex_ai":
        return f"{base}/v1beta1/publishers/google/models", {"x-goog-api-key": credentials.api_key}
    return f"{base}/v1beta/models", {"x-goog-api-key": credentials.api_key}


def _decoded(response: httpx.Response, method: str) -> dict:
    if not response.is_success:
        raise google_errors.error_from_response(response)
    try:
        # orjson straight from bytes: ~2x faster than json.loads on these multi-megabyte bodies.
        payload = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            f"Google {method} answered {response.status_code} with a body that is not JSON",
            http_status=response.status_code,
        ) from None
    if not isinstance(payload, dict):
        raise UpstreamProtocolError(
            f"Google {method} answered with JSON that is not an object", http_status=response.status_code
        )
    return payload
