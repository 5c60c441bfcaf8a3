"""A fake Google image upstream: a raw ASGI app served by uvicorn (`python -m fakes.upstream`).

It speaks Imagen `:predict` and Gemini `:generateContent` on every URL family Google uses (Gemini
API `/{v1,v1beta}/models/{m}:...`, Vertex `/{v1,v1beta1}/projects/{p}/locations/{l}/publishers/
google/models/{m}:...`, Vertex express `/{v1,v1beta1}/publishers/google/models/{m}:...`), plus an
OAuth token endpoint `POST /token` for service-account JWTs. Auth, validation, error bodies,
content blocks and usage metadata follow Google's documented and observed shapes.

Images have the exact pixel size of (model, resolution, aspect ratio) and Google-like weight
(a 1K PNG is ~1.5 MB); each (width, height, mime) is rendered once, in a thread, then served from
cache, so answering costs almost no CPU.

Prompt hooks: `[block-prompt]` (predict: 400 "prompt could not be submitted"; generateContent:
200 with promptFeedback.blockReason), `[filter:N]` (the first N images are filtered; for
generateContent, the first N calls carrying that exact prompt since the last reset), `[no-image]`
(generateContent finishReason NO_IMAGE), `[thoughts]` (generateContent also returns a thought
text part and a smaller thought image before the final image).

Models: `GET /{v1,v1beta}/models` (Gemini API, x-goog-api-key) and `GET /v1beta1/publishers/google/
models` (Vertex) list `LISTED_MODELS` with `pageSize`/`pageToken` paging. A model in the
`dropped_models` setting is missing from the list and answers 404 NOT_FOUND "models/… is not found",
as Google answers for a retired model. Per-model rules: Lite is 1K only and takes no service tier,
2.1 has no "512" (both a 400 INVALID_ARGUMENT). Service tiers: the body's `service_tier`
("standard" | "flex" | "priority") is answered with an `x-gemini-service-tier` header naming the tier
that served it; settings `priority_downgrade` (priority served at standard) and `shed_flex` (flex
calls answered 503 UNAVAILABLE, as Google sheds them) switch the two behaviours Google documents.
usageMetadata carries the model's image tokens per size and thinking tokens per level.

Control API (JSON): POST /_fake/script {"model": id|"*", "responses": [{"status": 429,
"retry_delay": "0.2s"}, {"status": 200, "latency_ms": 3000}, {"status": 500, "list_wrapped": true},
...]} queues answers consumed one per model call, the model's queue before "*". Errors are sent
at once unless they carry latency_ms; optional keys: message, upstream_status, retry_after
(header), body + content_type (a raw non-JSON body). POST /_fake/config {latency_ms, jitter_ms,
error_rate, api_key, dropped_models, priority_downgrade, shed_flex} (error_rate answers are sent at
once); POST /_fake/reset; GET /_fake/requests; GET /_fake/stats. State is per process: with
several uvicorn workers, each has its own.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import json
import os
import random
import re
import secrets
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from PIL import Image

from generation.engine.dimensions import dimensions_for_model

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME_SECONDS = 3599
REQUEST_LOG_SIZE = 500
MAX_BODY_BYTES = 8 * 1024 * 1024
# Share of the picture that is incompressible noise: tuned so a 1K PNG weighs ~1.5 MB like Google's.
NOISE_FRACTION = 0.47
RAI_ALL_FILTERED = (
    "Unable to show generated images. All images were filtered out because they violated Vertex AI's "
    "usage guidelines. You will not be charged for blocked images. Try rephrasing the prompt. If you "
    "think this was an error, send feedback. Support codes: 29310472"
)
RAI_SOME_FILTERED = (
    "Your current safety filter threshold filtered out {n} generated images. You will not be charged "
    "for blocked images. Try rephrasing the prompt. If you think this was an error, send feedback."
)
PROMPT_BLOCKED = (
    "Image generation failed with the following error: The prompt could not be submitted. This prompt "
    "contains sensitive words that violate Google's Responsible AI practices. Try rephrasing the "
    "prompt. If you think this was an error, send feedback. Support codes: 42876398"
)
IMAGE_SAFETY_MESSAGE = (
    "Unable to show the generated image. The image was filtered out because it violated Google's "
    "Generative AI Prohibited Use policy. You will not be charged for blocked images. Support codes: 39322892"
)
IMAGE_TOKENS = {
    "flash": {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
    "pro": {"1K": 1120, "2K": 1120, "4K": 2000},
    "lite": {"1K": 1120},
    "nb21": {"1K": 1120, "2K": 1680, "4K": 3780},
}
THOUGHT_TOKENS = {"MINIMAL": 0, "LOW": 60, "MEDIUM": 120, "HIGH": 240}
SERVICE_TIERS = ("standard", "flex", "priority")
FLEX_SHED_MESSAGE = "The Flex tier is at capacity; the request was shed. Please retry later."
# What models.list answers (Gemini API shape), before `dropped_models` is applied. Text models are
# listed too, as Google does, so a caller must pick out the image models itself.
LISTED_MODELS: tuple[dict, ...] = tuple(
    {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": display,
        "description": f"{display} (fake upstream)",
        "inputTokenLimit": 65536 if "image" in model_id else 1048576,
        "outputTokenLimit": 32768 if "image" in model_id else 65536,
        "supportedGenerationMethods": methods,
    }
    for model_id, display, methods in (
        ("gemini-2.5-flash", "Gemini 2.5 Flash", ["generateContent", "countTokens", "createCachedContent"]),
        ("gemini-3-pro-image", "Nano Banana Pro", ["generateContent", "countTokens", "batchGenerateContent"]),
        (
            "gemini-3.1-flash-image",
            "Nano Banana 2",
            ["generateContent", "countTokens", "batchGenerateContent"],
        ),
        ("gemini-3.1-flash-lite-image", "Nano Banana 2 Lite", ["generateContent", "batchGenerateContent"]),
        ("gemini-3.1-pro", "Gemini 3.1 Pro", ["generateContent", "countTokens"]),
        (
            "gemini-nano-banana-2.1",
            "Nano Banana 2.1",
            ["generateContent", "countTokens", "batchGenerateContent"],
        ),
        ("imagen-4.0-fast-generate-001", "Imagen 4 Fast", ["predict"]),
        ("imagen-4.0-generate-001", "Imagen 4", ["predict"]),
        ("imagen-4.0-ultra-generate-001", "Imagen 4 Ultra", ["predict"]),
        ("text-embedding-004", "Text Embedding 004", ["embedContent"]),
    )
)
MODELS_LIST_PATHS = {"/v1/models": "gemini_api", "/v1beta/models": "gemini_api"}
VERTEX_MODELS_LIST_PATHS = {"/v1beta1/publishers/google/models", "/v1/publishers/google/models"}
SAFETY_THRESHOLDS = frozenset(
    {
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
        "BLOCK_LOW_AND_ABOVE",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH",
        "BLOCK_NONE",
        "OFF",
    }
)
VERTEX_ONLY_IMAGE_CONFIG = ("imageOutputOptions", "personGeneration", "prominentPeople")
LOGGED_HEADERS = (
    "content-type",
    "user-agent",
    "x-goog-api-client",
    "x-server-timeout",
    "x-goog-user-project",
)
IMAGEN_MODEL = re.compile(r"imagen-4\.0-(?:[a-z]+-)?generate-001")
GEMINI_IMAGE_MODEL = re.compile(r"gemini-[\w.-]*(?:-image|nano-banana)[\w.-]*")
_MODEL_PATH = r"(?P<model>[^/:]+):(?P<method>[A-Za-z]+)"
ROUTES = (
    (re.compile(rf"/(?:v1|v1beta)/models/{_MODEL_PATH}"), "gemini_api"),
    (
        re.compile(
            rf"/(?:v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
            rf"/publishers/google/models/{_MODEL_PATH}"
        ),
        "vertex_ai",
    ),
    (re.compile(rf"/(?:v1|v1beta1)/publishers/google/models/{_MODEL_PATH}"), "vertex_express"),
)


@dataclass
class Settings:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    api_key: str | None = None
    dropped_models: list[str] = field(default_factory=list)  # gone from models.list, calls 404
    priority_downgrade: bool = False  # priority capacity exhausted: served (and labelled) standard
    shed_flex: bool = False  # flex calls are shed (503 UNAVAILABLE)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=UTF-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Call:
    """One model call after routing."""

    family: str  # "gemini_api" | "vertex_ai" | "vertex_express"
    model: str
    body: dict


def json_response(
    payload: object, status: int = 200, headers: list[tuple[str, str]] | None = None
) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers or [])


def google_error(
    code: int,
    status: str,
    message: str,
    details: list[dict] | None = None,
    *,
    list_wrapped: bool = False,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    error: dict = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    payload: object = [{"error": error}] if list_wrapped else {"error": error}
    return json_response(payload, code, headers)


# Input images (reference images, edits): what Google checks on inlineData parts, and what one
# input image costs in prompt tokens (Gemini 3 image models count ~560 per input image).
INPUT_IMAGE_TOKENS = 560
INPUT_MAX_IMAGES = 14
INPUT_MIME_TYPES = ("image/png", "image/jpeg", "image/webp")
INPUT_MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff", "image/webp": b"RIFF"}


def input_parts_check(contents: list) -> tuple[Response | None, int]:
    """Validate every inlineData part of every turn as Google does (base64, a supported image
    type whose bytes match it, at most 14 images); returns (a 400 or None, images counted)."""
    count = 0
    for turn_index, turn in enumerate(contents):
        for part_index, part in enumerate((turn or {}).get("parts") or [] if isinstance(turn, dict) else []):
            inline = part.get("inlineData") if isinstance(part, dict) else None
            if inline is None or part.get("thought"):
                continue
            where = f"contents[{turn_index}].parts[{part_index}].inline_data"
            mime = inline.get("mimeType") if isinstance(inline, dict) else None
            if mime not in INPUT_MIME_TYPES:
                return invalid_argument(
                    f"* GenerateContentRequest.{where}: Unsupported MIME type: {mime}\n"
                ), 0
            try:
                data = base64.b64decode(inline.get("data") or "", validate=True)
            except (ValueError, TypeError):
                return invalid_argument(
                    f"Invalid value at '{where}.data' (TYPE_BYTES), Base64 decoding failed"
                ), 0
            if not data.startswith(INPUT_MAGIC[mime]):
                return invalid_argument(
                    f"* GenerateContentRequest.{where}: Unable to process input image.\n"
                ), 0
            count += 1
    if count > INPUT_MAX_IMAGES:
        return invalid_argument(f"Too many input images: {count} (at most {INPUT_MAX_IMAGES})."), 0
    return None, count


def invalid_argument(message: str) -> Response:
    return google_error(400, "INVALID_ARGUMENT", message)


def retry_info(delay: str) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


# --- images ----------------------------------------------------------------------------------------


def render_image(width: int, height: int, mime_type: str) -> bytes:
    """Blocking: a gradient with noise tiles. Noise does not compress, so the share of noise
    tiles sets the file size; the tiles make it look like something in an image viewer."""
    rng = random.Random(f"{width}x{height}")
    gradient = Image.new("RGB", (1, 2))
    gradient.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)])
    gradient = gradient.resize((width, height), Image.Resampling.BILINEAR)
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    tiles = 16
    mask = Image.new("L", (tiles, tiles))
    noisy = set(rng.sample(range(tiles * tiles), round(NOISE_FRACTION * tiles * tiles)))
    mask.putdata([255 if index in noisy else 0 for index in range(tiles * tiles)])
    picture = Image.composite(noise, gradient, mask.resize((width, height), Image.Resampling.NEAREST))
    buffer = io.BytesIO()
    if mime_type == "image/jpeg":
        picture.save(buffer, "JPEG", quality=75)
    else:
        picture.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


class ImageStore:
    """Base64 image bytes per (width, height, mime), rendered once off the event loop."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, str], bytes] = {}
        self._pending: dict[tuple[int, int, str], asyncio.Task] = {}

    async def base64(self, width: int, height: int, mime_type: str) -> bytes:
        key = (width, height, mime_type)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        task = self._pending.get(key)
        if task is None:  # the first request for a size renders it; concurrent ones wait for it
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._render, *key))
            self._pending[key] = task
        try:
            encoded = await asyncio.shield(task)
        except Exception:
            self._pending.pop(key, None)  # let the next request try again
            raise
        self._cache[key] = encoded
        self._pending.pop(key, None)
        return encoded

    @staticmethod
    def _render(width: int, height: int, mime_type: str) -> bytes:
        return base64.b64encode(render_image(width, height, mime_type))


def splice(payload: dict, images: dict[str, bytes]) -> bytes:
    """JSON-encode `payload`, then put each base64 image where its placeholder string is: the
    megabytes are joined once instead of passing through json.dumps."""
    # re.split with a group alternates: text, placeholder name, text, ...
    pieces = re.split(rb'"@@(img\d+)@@"', json.dumps(payload).encode())
    for index in range(1, len(pieces), 2):
        pieces[index] = b'"' + images[pieces[index].decode()] + b'"'
    return b"".join(pieces)


def route(path: str) -> tuple[str, re.Match] | None:
    """(URL family, match with model and method) for a model path, else None."""
    for pattern, family in ROUTES:
        match = pattern.fullmatch(path)
        if match:
            return family, match
    return None


def prompt_hooks(prompt: str) -> dict:
    match = re.search(r"\[filter:(\d+)\]", prompt)
    return {
        "block": "[block-prompt]" in prompt,
        "filter": int(match.group(1)) if match else 0,
        "no_image": "[no-image]" in prompt,
        "thoughts": "[thoughts]" in prompt,
    }


# --- the app ---------------------------------------------------------------------------------------


class FakeUpstream:
    """ASGI application. Construct with the knobs; tests steer it through /_fake/*."""

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        error_rate: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        self.initial = Settings(latency_ms, jitter_ms, error_rate, api_key)
        self.settings = Settings(**asdict(self.initial))
        self.images = ImageStore()
        # Issued OAuth tokens survive /_fake/reset, as real ones survive a test: token -> (email, expiry).
        self.tokens: dict[str, tuple[str, float]] = {}
        self._reset_state()

    def _reset_state(self) -> None:
        self.settings = Settings(**asdict(self.initial))
        self.scripts: dict[str, collections.deque[dict]] = collections.defaultdict(collections.deque)
        self.request_log: collections.deque[dict] = collections.deque(maxlen=REQUEST_LOG_SIZE)
        self.calls_by_model: collections.Counter[str] = collections.Counter()
        self.calls_by_path: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.token_refreshes: collections.Counter[str] = collections.Counter()
        self.filter_counters: collections.Counter[str] = collections.Counter()

    # ASGI plumbing

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await self._send(send, invalid_argument("Request payload size exceeds the limit."))
                return
            if not message.get("more_body"):
                break
        response = await self._dispatch(scope, body)
        await self._send(send, response)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Warm the most common size (1K square PNG) in the background, not on the first call.
                asyncio.get_running_loop().create_task(self.images.base64(1024, 1024, "image/png"))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _send(send, response: Response) -> None:
        headers = [
            (b"content-type", response.content_type.encode()),
            (b"content-length", str(len(response.body)).encode()),
            (b"server", b"scaffolding on HTTPServer2"),
            *((name.encode(), value.encode()) for name, value in response.headers),
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _dispatch(self, scope: dict, raw_body: bytes) -> Response:
        path, method = scope["path"], scope["method"]
        if path.startswith("/_fake/"):
            return self._control(path, method, raw_body)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        entry = {
            "method": method,
            "path": path,
            "headers": _logged_headers(headers),
            "body": None,
            "status": None,
            "at": time.time(),
        }
        self.request_log.append(entry)
        self.calls_by_path[path] += 1
        try:
            response = await self._handle(path, method, headers, query, raw_body, entry)
        except Exception as exc:  # noqa: BLE001 - a fake that crashes silently would hide the caller's bug
            response = google_error(500, "INTERNAL", f"fake upstream crashed: {type(exc).__name__}: {exc}")
        entry["status"] = response.status
        self.statuses[str(response.status)] += 1
        return response

    async def _handle(
        self, path: str, method: str, headers: dict, query: dict, raw_body: bytes, entry: dict
    ) -> Response:
        if path == "/token" and method == "POST":
            return self._token(raw_body, entry)
        if method == "GET" and (path in MODELS_LIST_PATHS or path in VERTEX_MODELS_LIST_PATHS):
            return self._models_list(path, headers, query)
        routed = route(path)
        if routed is None:
            return google_error(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")
        if method != "POST":
            return google_error(405, "UNIMPLEMENTED", f"Method {method} is not allowed for {path}.")
        family, match = routed
        model, rpc = match.group("model"), match.group("method")
        entry["model"] = model

        denied = self._authenticate(family, headers, query)
        if denied:
            return denied
        try:
            body = json.loads(raw_body or b"{}")
        except ValueError:
            return invalid_argument("Invalid JSON payload received. Unexpected token.")
        entry["body"] = body
        if not isinstance(body, dict):
            return invalid_argument("Invalid JSON payload received. Expected an object.")
        dropped = model in self.settings.dropped_models
        if dropped or rpc not in ("predict", "generateContent") or not self._model_serves(model, rpc):
            version = path.split("/")[1]
            return google_error(
                404,
                "NOT_FOUND",
                f"models/{model} is not found for API version {version}, or is not supported for "
                f"{rpc}. Call ListModels to see the list of available models and their supported methods.",
            )
        self.calls_by_model[model] += 1

        scripted = self._next_script(model)
        if scripted is not None and (int(scripted.get("status", 200)) != 200 or "body" in scripted):
            await asyncio.sleep(float(scripted.get("latency_ms", 0)) / 1000)
            return scripted_error(scripted)
        if scripted is None and self.settings.error_rate and random.random() < self.settings.error_rate:
            return random_error()
        if scripted is None and (fault := fault_pick()) is not None:
            return fault_response(fault, rpc)
        latency_ms = scripted.get("latency_ms") if scripted else None
        call = Call(family=family, model=model, body=body)
        if rpc == "predict":
            return await self._predict(call, latency_ms)
        return await self._generate_content(call, latency_ms)

    def _models_list(self, path: str, headers: dict, query: dict) -> Response:
        vertex = path in VERTEX_MODELS_LIST_PATHS
        if vertex and headers.get("authorization"):
            denied = self._authenticate("vertex_ai", headers, query)
        else:
            denied = self._authenticate("vertex_express" if vertex else "gemini_api", headers, query)
        if denied:
            return denied
        try:
            size = int((query.get("pageSize") or ["50"])[0])
            offset = int((query.get("pageToken") or ["0"])[0] or 0)
        except ValueError:
            return invalid_argument("Invalid pageSize or pageToken.")
        if size < 1 or offset < 0:
            return invalid_argument("pageSize must be positive and pageToken a token from a previous page.")
        size = min(size, 1000)
        listed = [m for m in LISTED_MODELS if m["name"].split("/", 1)[1] not in self.settings.dropped_models]
        page = listed[offset : offset + size]
        if vertex:
            payload: dict = {
                "publisherModels": [
                    {
                        "name": "publishers/google/models/" + m["name"].split("/", 1)[1],
                        "versionId": m["version"],
                        "launchStage": "GA",
                        "openSourceCategory": "PROPRIETARY",
                    }
                    for m in page
                ]
            }
        else:
            payload = {"models": page}
        if offset + size < len(listed):
            payload["nextPageToken"] = str(offset + size)
        return json_response(payload)

    def _authenticate(self, family: str, headers: dict, query: dict) -> Response | None:
        if family == "vertex_ai":
            # Project paths take OAuth only, like Vertex: the bearer must be one we issued, unexpired.
            scheme, _, token = headers.get("authorization", "").partition(" ")
            issued = self.tokens.get(token) if scheme.lower() == "bearer" else None
            if issued is None or issued[1] <= time.time():
                return google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                    "login cookie or other valid authentication credential. See "
                    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_EXPIRED"}]
                    if issued
                    else None,
                )
            return None
        expected = self.settings.api_key
        if expected is None:
            return None
        given = headers.get("x-goog-api-key") or (query.get("key") or [None])[0]
        if not given:
            return google_error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if not secrets.compare_digest(given.encode(), expected.encode()):
            service = (
                "aiplatform.googleapis.com"
                if family == "vertex_express"
                else "generativelanguage.googleapis.com"
            )
            return google_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": service},
                    }
                ],
            )
        return None

    @staticmethod
    def _model_serves(model: str, rpc: str) -> bool:
        if rpc == "predict":
            return IMAGEN_MODEL.fullmatch(model) is not None
        return GEMINI_IMAGE_MODEL.fullmatch(model) is not None

    def _next_script(self, model: str) -> dict | None:
        for key in (model, "*"):
            queue = self.scripts.get(key)
            if queue:
                return queue.popleft()
        return None

    async def _sleep(self, latency_ms: float | None) -> None:
        if latency_ms is None:
            jitter = self.settings.jitter_ms
            latency_ms = self.settings.latency_ms + (random.uniform(-jitter, jitter) if jitter else 0)
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)

    # :predict

    async def _predict(self, call: Call, latency_ms: float | None) -> Response:
        body = call.body
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            return invalid_argument('instances must be a non-empty list of {"prompt": ...} objects.')
        prompt = instances[0].get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return invalid_argument("Image generation failed with the following error: prompt is required.")
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            return invalid_argument("parameters must be an object.")
        count = params.get("sampleCount", 4)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 4:
            return invalid_argument(f"sampleCount must be an integer in the range [1, 4], got {count!r}.")
        table = dimensions_for_model(call.model)
        size = str(params.get("sampleImageSize", "1K")).upper()  # Imagen takes "1k" too
        ratio = params.get("aspectRatio", "1:1")
        if size not in table:
            return invalid_argument(
                f"Unsupported sampleImageSize {params.get('sampleImageSize')!r} for {call.model}. "
                f"Supported: {', '.join(table)}."
            )
        if ratio not in table[size]:
            return invalid_argument(
                f"Unsupported aspect ratio {ratio!r} for {call.model}. Supported: {', '.join(table[size])}."
            )
        mime = (params.get("outputOptions") or {}).get("mimeType", "image/png")
        if mime not in ("image/png", "image/jpeg"):
            return invalid_argument(f"Unsupported output mime type {mime!r}. Use image/png or image/jpeg.")
        if call.family != "gemini_api" and "seed" in params and params.get("addWatermark", True) is not False:
            return invalid_argument(
                "Seed is not supported when watermark is enabled. Set addWatermark to false."
            )
        hooks = prompt_hooks(prompt)
        if hooks["block"]:
            return invalid_argument(PROMPT_BLOCKED)

        await self._sleep(latency_ms)
        width, height = table[size][ratio]
        encoded = await self.images.base64(width, height, mime)
        filtered = min(hooks["filter"], count)
        with_reason = bool(params.get("includeRaiReason"))
        elements: list[bytes] = []
        if filtered and with_reason:
            # Google reports all filtered samples of a call in one element.
            reason = RAI_ALL_FILTERED if filtered == count else RAI_SOME_FILTERED.format(n=filtered)
            elements.append(json.dumps({"raiFilteredReason": reason}).encode())
        image_element = b'{"mimeType": "' + mime.encode() + b'", "bytesBase64Encoded": "' + encoded + b'"}'
        elements.extend([image_element] * (count - filtered))
        if not elements:  # all filtered and no reason asked for: Google sends an empty object
            return json_response({})
        return Response(200, b'{"predictions": [' + b", ".join(elements) + b"]}")

    # :generateContent

    async def _generate_content(self, call: Call, latency_ms: float | None) -> Response:
        body = call.body
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return invalid_argument("* GenerateContentRequest.contents: contents is not specified\n")
        parts = contents[-1].get("parts") if isinstance(contents[-1], dict) else None
        prompt = " ".join(
            p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
        if not prompt.strip():
            return invalid_argument(
                "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.\n"
            )
        refused, input_images = input_parts_check(contents)
        if refused is not None:
            return refused
        config = body.get("generationConfig") or {}
        image_config = (config.get("imageConfig") or {}) if isinstance(config, dict) else None
        if not isinstance(config, dict) or not isinstance(image_config, dict):
            return invalid_argument("generationConfig and generationConfig.imageConfig must be objects.")
        candidate_count = config.get("candidateCount", 1)
        if not isinstance(candidate_count, int) or candidate_count > 1:
            return invalid_argument(f"Multiple candidates is not enabled for models/{call.model}")
        if call.family == "gemini_api":
            for name in VERTEX_ONLY_IMAGE_CONFIG:
                if name in image_config:
                    return invalid_argument(
                        f'Invalid JSON payload received. Unknown name "{name}" at '
                        "'generation_config.image_config': Cannot find field."
                    )
        table = dimensions_for_model(call.model)
        size = image_config.get("imageSize", "1K")
        ratio = image_config.get("aspectRatio", "1:1")
        if size not in table:  # case-sensitive: Google rejects "1k"
            return invalid_argument(
                f"Unsupported image size {size!r} for models/{call.model}. "
                f"Supported values: {', '.join(table)}."
            )
        if ratio not in table[size]:
            return invalid_argument(
                f"Unsupported aspect ratio {ratio!r} for models/{call.model}. "
                f"Supported values: {', '.join(table[size])}."
            )
        mime = (image_config.get("imageOutputOptions") or {}).get("mimeType", "image/png")
        if mime not in ("image/png", "image/jpeg"):
            return invalid_argument(f"Unsupported imageOutputOptions.mimeType {mime!r}.")
        for index, setting in enumerate(body.get("safetySettings") or []):
            if not isinstance(setting, dict) or setting.get("threshold") not in SAFETY_THRESHOLDS:
                return invalid_argument(
                    f"Invalid value at 'safety_settings[{index}].threshold' "
                    f"(type.googleapis.com/google.ai.generativelanguage.v1beta.HarmBlockThreshold), "
                    f'"{setting.get("threshold") if isinstance(setting, dict) else setting}"'
                )

        requested_tier = str(body.get("service_tier") or body.get("serviceTier") or "standard").lower()
        if requested_tier not in SERVICE_TIERS:
            return invalid_argument(
                f"Invalid value at 'service_tier', \"{requested_tier}\". "
                f"Supported: {', '.join(SERVICE_TIERS)}."
            )
        if requested_tier != "standard" and "flash-lite-image" in call.model:
            return invalid_argument(
                f"Service tier {requested_tier} is not supported for models/{call.model}."
            )
        if requested_tier == "flex" and self.settings.shed_flex:
            return google_error(503, "UNAVAILABLE", FLEX_SHED_MESSAGE)
        served_tier = (
            "standard"
            if requested_tier == "priority" and self.settings.priority_downgrade
            else requested_tier
        )
        tier_header = [("x-gemini-service-tier", served_tier)]

        hooks = prompt_hooks(prompt)
        thinking = config.get("thinkingConfig") or {}
        level = str(thinking.get("thinkingLevel") or thinking.get("thinking_level") or "").upper()
        is_pro = "pro" in call.model
        prompt_tokens = max(1, len(prompt) // 4) + INPUT_IMAGE_TOKENS * input_images
        thought_tokens = 180 if is_pro else THOUGHT_TOKENS.get(level, 0)
        envelope: dict = {"modelVersion": call.model, "responseId": secrets.token_urlsafe(16)}
        if call.family != "gemini_api":
            envelope["createTime"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")

        def usage(image_tokens: int = 0, text_tokens: int = 0) -> dict:
            metadata: dict = {"promptTokenCount": prompt_tokens}
            candidates_tokens = image_tokens + text_tokens
            if candidates_tokens:
                metadata["candidatesTokenCount"] = candidates_tokens
            if thought_tokens:
                metadata["thoughtsTokenCount"] = thought_tokens
            metadata["totalTokenCount"] = prompt_tokens + candidates_tokens + thought_tokens
            metadata["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt_tokens}]
            details = [
                {"modality": m, "tokenCount": n}
                for m, n in (("IMAGE", image_tokens), ("TEXT", text_tokens))
                if n
            ]
            if details:
                metadata["candidatesTokensDetails"] = details
            if call.family != "gemini_api":
                metadata["trafficType"] = "ON_DEMAND"
            return metadata

        if hooks["block"]:
            # Prompt-level blocks are decided before any generation, so they come back quickly.
            return json_response(
                {
                    "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                    "usageMetadata": usage(),
                    **envelope,
                },
                headers=tier_header,
            )
        await self._sleep(latency_ms)
        self.filter_counters[prompt] += 1
        if self.filter_counters[prompt] <= hooks["filter"]:
            candidate = {
                "content": {"role": "model"},
                "finishReason": "IMAGE_SAFETY",
                "finishMessage": IMAGE_SAFETY_MESSAGE,
                "index": 0,
            }
            return json_response(
                {"candidates": [candidate], "usageMetadata": usage(), **envelope}, headers=tier_header
            )
        if hooks["no_image"]:
            text = "I can describe this scene, but I could not draw it."
            candidate = {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "NO_IMAGE",
                "index": 0,
            }
            return json_response(
                {"candidates": [candidate], "usageMetadata": usage(text_tokens=12), **envelope},
                headers=tier_header,
            )

        width, height = table[size][ratio]
        images = {"img0": await self.images.base64(width, height, mime)}
        parts_out: list[dict] = []
        text_tokens = 0
        if hooks["thoughts"]:
            images["img1"] = await self.images.base64(width // 2, height // 2, "image/png")
            parts_out += [
                {
                    "text": "**Composing the scene**\nPlanning layout and light before drawing.",
                    "thought": True,
                },
                {"inlineData": {"mimeType": "image/png", "data": "@@img1@@"}, "thought": True},
                {"text": "Here is the image you asked for."},
            ]
            text_tokens = 9
        signature = base64.b64encode(os.urandom(24)).decode()
        parts_out.append(
            {"inlineData": {"mimeType": mime, "data": "@@img0@@"}, "thoughtSignature": signature}
        )
        tokens = IMAGE_TOKENS[_token_family(call.model)].get(size, 1120)
        payload = {
            "candidates": [
                {"content": {"role": "model", "parts": parts_out}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": usage(image_tokens=tokens, text_tokens=text_tokens),
            **envelope,
        }
        return Response(200, splice(payload, images), headers=tier_header)

    # OAuth

    def _token(self, raw_body: bytes, entry: dict) -> Response:
        form = urllib.parse.parse_qs(raw_body.decode("latin-1"))
        grant_type = (form.get("grant_type") or [""])[0]
        entry["body"] = {
            "grant_type": grant_type,
            "assertion": "[redacted]" if form.get("assertion") else None,
        }
        if grant_type != JWT_BEARER:
            return json_response(
                {"error": "unsupported_grant_type", "error_description": f"Invalid grant_type: {grant_type}"},
                400,
            )
        claims = _jwt_claims((form.get("assertion") or [""])[0])
        if not claims or not claims.get("iss") or not claims.get("scope"):
            return json_response({"error": "invalid_grant", "error_description": "Invalid JWT."}, 400)
        now = time.time()
        if len(self.tokens) > 10_000:  # long benchmark runs: forget expired tokens
            self.tokens = {t: v for t, v in self.tokens.items() if v[1] > now}
        token = "ya29.fake-" + secrets.token_urlsafe(48)
        self.tokens[token] = (claims["iss"], now + TOKEN_LIFETIME_SECONDS)
        self.token_refreshes[claims["iss"]] += 1
        return json_response(
            {"access_token": token, "expires_in": TOKEN_LIFETIME_SECONDS, "token_type": "Bearer"}
        )

    # control API

    def _control(self, path: str, method: str, raw_body: bytes) -> Response:
        try:
            body = json.loads(raw_body) if raw_body else {}
        except ValueError:
            return json_response({"error": "body is not JSON"}, 400)
        if path == "/_fake/script" and method == "POST":
            responses = body.get("responses")
            if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
                return json_response({"error": "responses must be a list of objects"}, 400)
            self.scripts[body.get("model") or "*"].extend(responses)
            return json_response({"queued": {k: len(v) for k, v in self.scripts.items() if v}})
        if path == "/_fake/config" and method == "POST":
            problem = _settings_problem(body)
            if problem:
                return json_response({"error": problem}, 400)
            for name, value in body.items():
                setattr(self.settings, name, value)
            return json_response(asdict(self.settings) | {"api_key": _redact(self.settings.api_key)})
        if path == "/_fake/reset" and method == "POST":
            self._reset_state()
            return json_response({"ok": True})
        if path == "/_fake/requests" and method == "GET":
            return json_response(list(self.request_log))
        if path == "/_fake/stats" and method == "GET":
            return json_response(
                {
                    "calls": sum(self.calls_by_model.values()),
                    "calls_by_model": self.calls_by_model,
                    "calls_by_path": self.calls_by_path,
                    "statuses": self.statuses,
                    "token_refreshes": sum(self.token_refreshes.values()),
                    "token_refreshes_by_client": self.token_refreshes,
                    "cached_images": len(self.images._cache),
                }
            )
        return json_response({"error": f"no control endpoint {method} {path}"}, 404)


# --- Reliability knobs (tests/chaos): 200 answers that are still broken ---------------------------
# FAKE_UPSTREAM_FAULTS="wrong_shape:0.1,truncated:0.05" (or --faults): that share of calls gets a 200
# whose JSON has the wrong shape, or a body cut off mid-image (not JSON), at once.
def _faults_from_env() -> list[tuple[str, float]]:
    spec = os.environ.get("FAKE_UPSTREAM_FAULTS", "")
    return [
        (name, float(rate)) for name, _, rate in (item.partition(":") for item in spec.split(",") if item)
    ]


FAULTS = _faults_from_env()


def fault_pick() -> str | None:
    roll = random.random()
    for name, rate in FAULTS:
        if roll < rate:
            return name
        roll -= rate
    return None


def fault_response(fault: str, rpc: str) -> Response:
    if fault == "truncated":
        return Response(
            200,
            b'{"candidates": [{"content": {"parts": [{"inlineData": {"data": "iVBORw0K',
            "application/json",
        )
    key = "predictions" if rpc == "predict" else "candidates"
    return Response(200, json.dumps({key: "unexpected"}).encode(), "application/json")


def scripted_error(spec: dict) -> Response:
    status = int(spec["status"])
    headers = [("retry-after", str(spec["retry_after"]))] if spec.get("retry_after") is not None else []
    if "body" in spec:  # a raw body, e.g. the HTML page a proxy sends with a 502
        return Response(status, str(spec["body"]).encode(), spec.get("content_type", "text/html"), headers)
    grpc_status, message = {
        400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
        403: ("PERMISSION_DENIED", "Permission denied on resource project."),
        404: ("NOT_FOUND", "Requested entity was not found."),
        429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
        500: (
            "INTERNAL",
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        ),
        503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
        504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
    }.get(status, ("UNKNOWN", f"Scripted error {status}."))
    details = [retry_info(spec["retry_delay"])] if spec.get("retry_delay") else None
    return google_error(
        status,
        spec.get("upstream_status", grpc_status),
        spec.get("message", message),
        details,
        list_wrapped=bool(spec.get("list_wrapped")),
        headers=headers,
    )


def random_error() -> Response:
    status = random.choice((503, 500, 429))
    spec: dict = {"status": status}
    if status == 429:
        spec["retry_delay"] = f"{random.randint(1, 5)}s"
    return scripted_error(spec)


def _jwt_claims(assertion: str) -> dict | None:
    """The claims of a JWT (signature not checked: this is a fake, the key is the test's own)."""
    try:
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def _token_family(model: str) -> str:
    if "flash-lite-image" in model:
        return "lite"
    if "nano-banana-2.1" in model:
        return "nb21"
    return "pro" if "pro" in model else "flash"


def _settings_problem(settings: dict) -> str | None:
    for name, value in settings.items():
        if name == "dropped_models":
            if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                return "dropped_models must be a list of model ids"
        elif name in ("priority_downgrade", "shed_flex"):
            if not isinstance(value, bool):
                return f"{name} must be true or false"
        elif name in ("latency_ms", "jitter_ms", "error_rate"):
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                return f"{name} must be a non-negative number"
        elif name == "api_key":
            if value is not None and not isinstance(value, str):
                return "api_key must be a string or null"
        else:
            return f"unknown setting {name!r}"
    return None


def _redact(value: str | None) -> str | None:
    # The last 4 characters tell keys apart in a log; short values are hidden entirely.
    if value is None:
        return None
    return f"***{value[-4:]}" if len(value) >= 12 else "***"


def _logged_headers(headers: dict) -> dict:
    logged = {name: headers[name] for name in LOGGED_HEADERS if name in headers}
    if "x-goog-api-key" in headers:
        logged["x-goog-api-key"] = _redact(headers["x-goog-api-key"])
    if "authorization" in headers:
        scheme, _, credential = headers["authorization"].partition(" ")
        logged["authorization"] = f"{scheme} {_redact(credential)}"
    return logged


def create_app_from_env() -> FakeUpstream:
    """uvicorn factory for `--workers > 1` (each worker process builds its own app)."""
    return FakeUpstream(
        latency_ms=float(os.environ.get("FAKE_UPSTREAM_LATENCY_MS", "0")),
        jitter_ms=float(os.environ.get("FAKE_UPSTREAM_JITTER_MS", "0")),
        error_rate=float(os.environ.get("FAKE_UPSTREAM_ERROR_RATE", "0")),
        api_key=os.environ.get("FAKE_UPSTREAM_API_KEY") or None,
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m fakes.upstream`: serve the fake with uvicorn (development and benchmarks only)."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(
        description="Serve a fake Google image upstream (:predict, :generateContent, OAuth /token)."
    )
    # Loopback by default: the fake has no real authentication and must not face a network.
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=float, default=1500.0, help="delay before each image answer")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +/- spread around the latency")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of calls answered 503/500/429")
    parser.add_argument("--api-key", default=None, help="required x-goog-api-key (default: any key)")
    parser.add_argument("--workers", type=int, default=1, help="processes; each keeps its own state")
    parser.add_argument("--faults", default="", help='broken 200s, e.g. "wrong_shape:0.1,truncated:0.05"')
    options = parser.parse_args(argv)
    if options.faults:
        global FAULTS
        os.environ["FAKE_UPSTREAM_FAULTS"] = options.faults
        FAULTS = _faults_from_env()
    if not 0.0 <= options.error_rate <= 1.0:
        parser.error("--error-rate must be between 0 and 1")
    if options.workers < 1:
        parser.error("--workers must be at least 1")
    print(
        f"Fake Google upstream on http://{options.host}:{options.port} "
        f"(latency {options.latency_ms:g} ms ± {options.jitter_ms:g}, error rate {options.error_rate:g}, "
        f"api key {'required' if options.api_key else 'not checked'}, {options.workers} worker(s))",
        flush=True,
    )
    server_options = {
        "host": options.host,
        "port": options.port,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
    }
    if options.workers == 1:
        app = FakeUpstream(
            latency_ms=options.latency_ms,
            jitter_ms=options.jitter_ms,
            error_rate=options.error_rate,
            api_key=options.api_key,
        )
        uvicorn.run(app, workers=1, **server_options)
        return
    # Worker processes import the app by name, so the knobs travel through the environment.
    os.environ.update(
        {
            "FAKE_UPSTREAM_LATENCY_MS": str(options.latency_ms),
            "FAKE_UPSTREAM_JITTER_MS": str(options.jitter_ms),
            "FAKE_UPSTREAM_ERROR_RATE": str(options.error_rate),
            "FAKE_UPSTREAM_API_KEY": options.api_key or "",
        }
    )
    uvicorn.run("fakes.upstream:create_app_from_env", factory=True, workers=options.workers, **server_options)


if __name__ == "__main__":
    main()
