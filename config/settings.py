"""Imagegate settings: one module, every value from the environment (see README "Configuration")."""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str, required

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("IMAGEGATE_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
# A development key is allowed only with DEBUG; production must set its own.
SECRET_KEY = env_str("SECRET_KEY", "") or (
    "dev-insecure-imagegate-key-do-not-use-in-production-0123456789" if DEBUG else required("SECRET_KEY")
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is required when DEBUG is off")
# Old keys still accepted when verifying signatures (sessions, signed image URLs, e-mail links) while
# everything is re-signed with SECRET_KEY: rotate by moving the old key here (README "Security").
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# The address customers reach us at; used for signed image URLs and SDK snippets.
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "tenants",
    "billing",
    "generation",
    "dashboard",
]

MIDDLEWARE = [
    "config.metrics.MetricsMiddleware",
    "config.middleware.RequestIdMiddleware",
    # Before anything reads the body or looks a path up: size limits, NUL bytes, keys in URLs.
    "tenants.middleware.RequestGuardMiddleware",
    "config.middleware.JsonGZipMiddleware",  # JSON only, never base64 image payloads (see its docstring)
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0), conn_health_checks=True
    )
}
IS_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DB_POOL", True):
    # Django's native psycopg pool: threads borrow a connection and give it back when Django closes
    # it (end of request, or before a request parks to wait for its job), so 100+ waiting requests
    # need only a handful of PostgreSQL connections. Requires CONN_MAX_AGE = 0. With
    # conn_health_checks (above) Django makes the pool check each connection as it is borrowed, so
    # after a PostgreSQL restart dead connections are dropped instead of failing requests.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": env_int("DB_POOL_MAX_SIZE", 16, minimum=2),
        # A request waits at most this long for a connection, then answers 503 (not a 500).
        "timeout": env_float("DB_POOL_TIMEOUT_SECONDS", 3.0),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # No statement runs forever (a hung query would hold a lease, a pool slot and a request).
    DB_STATEMENT_TIMEOUT_MS = env_int("DB_STATEMENT_TIMEOUT_MS", 15_000, minimum=0)
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
        f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS} -c lock_timeout={DB_STATEMENT_TIMEOUT_MS}"
    )
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT_SECONDS", 3))
if IS_SQLITE:
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so two writers queue on `timeout` instead of
        # deadlocking on a read->write lock upgrade ("database is locked").
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not shared-cache memory, so tests that use threads see real SQLite locking.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, rate limits, job notifications and the django-q2 broker when configured -------
REDIS_URL = env_str("REDIS_URL", "")
# Namespace of every key we write to Redis, so several deployments (or test runs) can share one.
REDIS_PREFIX = env_str("REDIS_PREFIX", "imagegate")
# Redis is an accelerator (see config/redis_client.py): a call that takes longer than this fails and
# switches the process to its database/local fallbacks for REDIS_RETRY_SECONDS, then Redis is probed.
REDIS_SOCKET_TIMEOUT_SECONDS = env_float("REDIS_SOCKET_TIMEOUT_SECONDS", 0.5)
REDIS_RETRY_SECONDS = env_float("REDIS_RETRY_SECONDS", 2.0)
# While Redis is down each worker process enforces 1/N of every upstream account limit locally;
# set N to at least the number of worker processes across machines (default: this machine's).
UPSTREAM_LIMIT_DEGRADED_PROCESSES = env_int(
    "UPSTREAM_LIMIT_DEGRADED_PROCESSES", env_int("Q_WORKERS", 2, minimum=1), minimum=1
)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_timeout": REDIS_SOCKET_TIMEOUT_SECONDS, "socket_connect_timeout": 0.5},
        }
    }
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "imagegate_cache"}
    }

Q_CLUSTER = {
    # The name is also the broker queue's name: distinct deployments sharing a Redis need distinct names.
    "name": env_str("Q_CLUSTER_NAME", "imagegate"),
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    "queue_limit": env_int("Q_WORKERS", 2, minimum=1) * 2,
    "bulk": 1,
    # timeout < retry so a task that overruns is killed before the broker hands it out again.
    "timeout": 60,
    "retry": 90,
    "max_attempts": 3,
    "ack_failures": True,
    "save_limit": 250,
    "recycle": 10_000,
    "catch_up": False,
    "poll": 0.05,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Auth and sessions ------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^livez$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- Static files -----------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
WHITENOISE_USE_FINDERS = DEBUG
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": VAR_DIR / "media"},
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Generated images: the local filesystem (under IMAGEGATE_VAR_DIR/media) unless an S3-compatible
# bucket is configured (`pip install '.[s3]'`); then image URLs are the store's own presigned URLs.
IMAGE_STORAGE_BUCKET = env_str("IMAGE_STORAGE_BUCKET", "")
if IMAGE_STORAGE_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": IMAGE_STORAGE_BUCKET,
            "endpoint_url": env_str("IMAGE_STORAGE_ENDPOINT_URL", "") or None,
            "region_name": env_str("IMAGE_STORAGE_REGION", "") or None,
            "access_key": env_str("IMAGE_STORAGE_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("IMAGE_STORAGE_SECRET_ACCESS_KEY", "") or None,
            "querystring_auth": True,  # private objects, presigned URLs
            "default_acl": None,
            "file_overwrite": False,
            "signature_version": "s3v4",
        },
    }

# --- API --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Deny by default: every API view must authenticate with an API key unless it opts out explicitly.
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["tenants.parsers.JsonParser"],  # depth- and NUL-checked JSON
    "EXCEPTION_HANDLER": "tenants.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Imagegate API",
    "DESCRIPTION": "Fast text-to-image generation. Authenticate with `Authorization: Bearer ig_live_…`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "REDOC_DIST": "SIDECAR",  # docs assets served from our static files, never a CDN
    "SCHEMA_PATH_PREFIX": r"/v1",
    # Several resources have a `status`; each choice set gets its own enum name.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "generation.models.Job.Status",
        "BatchStatusEnum": "generation.models.Batch.Status",
        "WebhookDeliveryStatusEnum": "generation.models.WebhookDelivery.Status",
    },
}
# `last_used_at` is written at most this often per key, to keep the hot path free of writes.
API_KEY_LAST_USED_INTERVAL_SECONDS = 60
# Retry-After of the 503 a client gets while the database or Redis is failing under its request.
SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS = env_int("SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS", 2, minimum=1)
# /readyz fails only after the database has failed this long without a success (no flap on a blip).
READINESS_GRACE_SECONDS = env_float("READINESS_GRACE_SECONDS", 10.0)
# /metrics answers these client addresses (plus 127.0.0.1 and ::1); everyone else gets a 404.
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", [])
# Fallback window for the per-organization request limit.
RATE_LIMIT_WINDOW_SECONDS = 60

# --- Security (README "Security") -------------------------------------------------------------
# Request bodies larger than this are refused with 413 before they are read; /v1/batches (JSONL or
# multipart uploads of up to BATCH_MAX_REQUESTS lines) has its own, larger limit.
REQUEST_BODY_MAX_BYTES = env_int("REQUEST_BODY_MAX_BYTES", 1024 * 1024, minimum=1024)
BATCH_BODY_MAX_BYTES = env_int("BATCH_BODY_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
# Deepest nesting of arrays/objects accepted in a JSON body (deeper is a 400, never a RecursionError).
JSON_MAX_DEPTH = env_int("JSON_MAX_DEPTH", 32, minimum=4)
# Reverse proxies in front of gunicorn that append to X-Forwarded-For (nginx as documented: 1).
# 0 trusts no header: the client is REMOTE_ADDR.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
# Client networks that may reach /admin/ (comma-separated CIDRs); empty: everywhere. Elsewhere 404.
ADMIN_ALLOWED_IPS = env_list("ADMIN_ALLOWED_IPS", [])
# Images a test-mode (free) key may generate per organization and UTC day; 429 test_mode_limit_exceeded.
TEST_MODE_DAILY_IMAGES = env_int("TEST_MODE_DAILY_IMAGES", 1000, minimum=0)
# Self-serve sign-ups verify their e-mail address through a signed link valid this long.
EMAIL_VERIFICATION_MAX_AGE_SECONDS = env_int("EMAIL_VERIFICATION_MAX_AGE_SECONDS", 3 * 24 * 3600, minimum=60)
# Provider-account secrets (ProviderAccount.credentials_ref): environment variables matching these
# names ('*' wildcard) and files under this directory only, so an admin edit cannot read arbitrary
# variables (STRIPE_SECRET_KEY) or files (/proc/self/environ).
PROVIDER_SECRET_ENV_NAMES = env_list(
    "PROVIDER_SECRET_ENV_NAMES", ["IMAGEGATE_PROVIDER_*", "GEMINI_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS"]
)
PROVIDER_SECRETS_DIR = env_str("PROVIDER_SECRETS_DIR", "/run/secrets/imagegate")
# Hosts a provider account's base_url may point at; anything else must be added here explicitly
# (the fake upstream of development and tests: 127.0.0.1).
PROVIDER_BASE_URL_HOSTS = env_list(
    "PROVIDER_BASE_URL_HOSTS",
    ["generativelanguage.googleapis.com", "aiplatform.googleapis.com", "*-aiplatform.googleapis.com"],
)
# Content-Security-Policy of every HTML page: our own static files only, no inline script or style.
CONTENT_SECURITY_POLICY = env_str(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    # Images of an S3-compatible store come from its own (presigned) host.
    f"img-src 'self' data: blob:{' https:' if IMAGE_STORAGE_BUCKET else ''}; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
)

# --- E-mail -----------------------------------------------------------------------------------
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Imagegate <no-reply@imagegate.local>")

# --- I18N / logging ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.middleware.RequestIdLogFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}

# --- Generation -------------------------------------------------------------------------------
# A worker holds a job through a lease it renews every third of this; a job whose lease expires
# (the worker died) is picked up again by the reaper.
GENERATION_LEASE_SECONDS = env_int("GENERATION_LEASE_SECONDS", 60, minimum=3)
GENERATION_MAX_ATTEMPTS = env_int("GENERATION_MAX_ATTEMPTS", 3, minimum=1)
GENERATION_JOB_DEADLINE_SECONDS = env_int("GENERATION_JOB_DEADLINE_SECONDS", 300, minimum=10)
GENERATION_REENQUEUE_AFTER_SECONDS = env_int("GENERATION_REENQUEUE_AFTER_SECONDS", 30, minimum=1)
GENERATION_REAPER_INTERVAL_SECONDS = env_int("GENERATION_REAPER_INTERVAL_SECONDS", 10, minimum=1)
# Largest upstream answer body read (a 4K image is ~25 MB of base64 JSON); bigger is a route fault.
UPSTREAM_MAX_RESPONSE_BYTES = env_int("UPSTREAM_MAX_RESPONSE_BYTES", 64 * 1024 * 1024, minimum=1024)
# Upstream calls one worker process keeps in flight (they are asyncio tasks, not processes).
GENERATION_RUNNER_MAX_JOBS = env_int("GENERATION_RUNNER_MAX_JOBS", 512, minimum=1)
# Decoded upstream image bytes one worker process holds between the upstream answer and the
# finished transaction (transcoding, storing). Past it the runner claims no new job until bytes are
# released; jobs in flight go on (none fails, no image is dropped). 0: no limit.
GENERATION_INFLIGHT_IMAGE_BYTES_MAX = env_int(
    "GENERATION_INFLIGHT_IMAGE_BYTES_MAX", 512 * 1024 * 1024, minimum=0
)
# Threads the runner does its database work on (each keeps one pooled connection: with the webhook
# senders and the task thread this stays under DB_POOL_MAX_SIZE). Load, finish and usage are
# round trips, not CPU: at 128 clients on a loaded 2-core machine, 8 threads carried 21 images/s
# where 4 carried 15 (tests/bench/run.py).
GENERATION_RUNNER_DB_THREADS = env_int("GENERATION_RUNNER_DB_THREADS", 8, minimum=1)
# Image transcodes (CPU-bound) running at once per worker process, out of the job threads above.
GENERATION_TRANSCODE_CONCURRENCY = env_int("GENERATION_TRANSCODE_CONCURRENCY", 1, minimum=1)
# The runner claims due jobs from the database itself (SELECT ... FOR UPDATE SKIP LOCKED) at least
# this often, and at once when the Redis doorbell rings; django-q2 is only a doorbell.
GENERATION_RUNNER_POLL_SECONDS = env_float("GENERATION_RUNNER_POLL_SECONDS", 1.0)
# Hard wall-clock limit of one execution attempt; past it the runner stops renewing the job's lease.
GENERATION_JOB_WALL_SECONDS = env_int("GENERATION_JOB_WALL_SECONDS", 240, minimum=5)
# Runners write a heartbeat file here; `manage.py worker_health` (liveness) reads them.
GENERATION_HEARTBEAT_DIR = Path(env_str("GENERATION_HEARTBEAT_DIR", str(VAR_DIR / "heartbeats")))
# worker_health fails when no runner on this machine beat for this long, or when a claimable job has
# waited this long while no runner here claimed anything.
WORKER_HEALTH_STALE_SECONDS = env_int("WORKER_HEALTH_STALE_SECONDS", 30, minimum=2)
# Run the doorbell in the submitting process instead of through django-q2 (tests, debugging).
GENERATION_INLINE_DOORBELL = env_bool("GENERATION_INLINE_DOORBELL", False)
# Requests parked waiting for their job (`?wait=`, compat APIs) per web process, and per organization
# in one process; past it `?wait=` answers 202 at once and the compat APIs answer 429 + Retry-After.
WAIT_MAX_PARKED_PER_PROCESS = env_int("WAIT_MAX_PARKED_PER_PROCESS", 24, minimum=1)
WAIT_MAX_PARKED_PER_ORGANIZATION = env_int("WAIT_MAX_PARKED_PER_ORGANIZATION", 8, minimum=1)
# How long an OpenAI/Google-compatible request waits for its job before answering 504 (the job
# keeps running and is billed only if it delivers; it is visible in GET /v1/generations).
COMPAT_WAIT_SECONDS = env_int("COMPAT_WAIT_SECONDS", 60, minimum=1)

# Retention (generation/jobs/retention.py, run daily): finished jobs with their images and files,
# per-minute route statistics, and image files no row refers to (a worker died after storing them).
RETENTION_JOB_DAYS = env_int("RETENTION_JOB_DAYS", 90, minimum=1)
RETENTION_ROUTE_STATS_DAYS = env_int("RETENTION_ROUTE_STATS_DAYS", 30, minimum=1)
RETENTION_ORPHAN_FILE_HOURS = env_int("RETENTION_ORPHAN_FILE_HOURS", 24, minimum=1)
# --- Input images (generation.files) -----------------------------------------------------------
# Largest input image we accept at all, per file (uploads, URL fetches, base64, multipart edits);
# each model's own byte and pixel limits (catalog capabilities "inputs") are checked on use.
FILES_MAX_BYTES = env_int("FILES_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
FILES_MAX_PIXELS = env_int("FILES_MAX_PIXELS", 50_000_000, minimum=1)
# How long an input file is kept (uploaded or inline); a file an unfinished job uses is kept longer.
FILES_RETENTION_SECONDS = env_int("FILES_RETENTION_SECONDS", 7 * 24 * 3600, minimum=60)
# Fetching an input image from a tenant's https URL: whole-fetch time limit and redirects followed
# (each redirect target is checked against the SSRF rules again, see engine/outbound.py).
FILES_FETCH_TIMEOUT_SECONDS = env_float("FILES_FETCH_TIMEOUT_SECONDS", 10.0)
FILES_FETCH_MAX_REDIRECTS = env_int("FILES_FETCH_MAX_REDIRECTS", 3, minimum=0)
# Tests only: also allow http:// and private/loopback addresses for input-image URLs.
FILES_ALLOW_PRIVATE_URLS = env_bool("FILES_ALLOW_PRIVATE_URLS", False)
# Bodies that may carry input images (POST /v1/files, /v1/images/edits, /v1/generations,
# :generateContent, the playground; multipart files or base64 in JSON) are bounded by this
# instead of REQUEST_BODY_MAX_BYTES (tenants.middleware.body_limit): a few images at most.
IMAGE_BODY_MAX_BYTES = env_int("IMAGE_BODY_MAX_BYTES", 50 * 1024 * 1024, minimum=1024)
# The request guard bounds every body by its path first; Django's own cap must not be lower.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(REQUEST_BODY_MAX_BYTES, IMAGE_BODY_MAX_BYTES)
# Multipart files up to this stay in memory; bigger ones spool to a temporary file.
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("FILE_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024, minimum=1024)

# --- Batches and tenant webhooks --------------------------------------------------------------
# Share of the organization's concurrent-job limit one batch may hold (at least 1 job), so the
# tenant's interactive requests keep the rest; the feeder tops batches up every interval.
BATCH_CONCURRENCY_SHARE = env_float("BATCH_CONCURRENCY_SHARE", 0.5)
if not 0 < BATCH_CONCURRENCY_SHARE <= 1:
    raise ImproperlyConfigured(f"BATCH_CONCURRENCY_SHARE must be in (0, 1], got {BATCH_CONCURRENCY_SHARE}")
BATCH_MAX_REQUESTS = env_int("BATCH_MAX_REQUESTS", 1000, minimum=1)
BATCH_FEED_INTERVAL_SECONDS = env_float("BATCH_FEED_INTERVAL_SECONDS", 1.0)
# Tests only: allow http:// and loopback/private webhook URLs (SSRF protection off).
WEBHOOK_ALLOW_PRIVATE_URLS = env_bool("WEBHOOK_ALLOW_PRIVATE_URLS", False)
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0)
# Threads per process sending webhooks (a slow receiver holds one for up to the deadline).
WEBHOOK_SENDER_THREADS = env_int("WEBHOOK_SENDER_THREADS", 4, minimum=1)
# Hard wall-clock limit of one attempt (httpx's timeout is per socket read: a receiver trickling a
# byte every 9 s would never trip it), sender threads one organization may hold per process, and
# deliveries queued per process for the sender threads (beyond it they wait for the re-drive).
WEBHOOK_DEADLINE_SECONDS = env_float("WEBHOOK_DEADLINE_SECONDS", 15.0)
WEBHOOK_MAX_CONCURRENT_PER_ORGANIZATION = env_int("WEBHOOK_MAX_CONCURRENT_PER_ORGANIZATION", 2, minimum=1)
WEBHOOK_QUEUE_MAX = env_int("WEBHOOK_QUEUE_MAX", 1000, minimum=1)
# Retries stop (delivery failed) once the first attempt is older than this.
WEBHOOK_RETRY_WINDOW_SECONDS = env_int("WEBHOOK_RETRY_WINDOW_SECONDS", 24 * 3600, minimum=60)

# --- Billing (Stripe) -------------------------------------------------------------------------
# Without STRIPE_SECRET_KEY billing runs ledger-only: usage, statements and invoice previews work,
# payment pages say billing is not configured, and the meter-event outbox sends nothing.
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY", "")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET", "")
# Point at a local fake Stripe for development and tests; both the API and meter-event bases follow it.
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "https://api.stripe.com").rstrip("/")
STRIPE_TIMEOUT_SECONDS = env_float("STRIPE_TIMEOUT_SECONDS", 10.0)
# Retries inside one SDK call (same idempotency key) for interactive calls; the outbox uses its own backoff.
STRIPE_MAX_NETWORK_RETRIES = env_int("STRIPE_MAX_NETWORK_RETRIES", 2, minimum=0)
# How long live generation keeps working after a failed invoice payment before it answers 402.
BILLING_GRACE_PERIOD_DAYS = env_int("BILLING_GRACE_PERIOD_DAYS", 7, minimum=0)
# Meter-event outbox (billing.outbox): meter reports claimed per send batch, usage records aggregated
# per transaction, wall-clock budget per run (a run drains until nothing is due), retry backoff.
BILLING_OUTBOX_BATCH_SIZE = env_int("BILLING_OUTBOX_BATCH_SIZE", 500, minimum=1)
BILLING_OUTBOX_AGGREGATE_BATCH_SIZE = env_int("BILLING_OUTBOX_AGGREGATE_BATCH_SIZE", 20000, minimum=1)
BILLING_OUTBOX_TIME_BUDGET_SECONDS = env_int("BILLING_OUTBOX_TIME_BUDGET_SECONDS", 35, minimum=1)
BILLING_OUTBOX_RETRY_BASE_SECONDS = env_int("BILLING_OUTBOX_RETRY_BASE_SECONDS", 30, minimum=1)
BILLING_OUTBOX_RETRY_MAX_SECONDS = env_int("BILLING_OUTBOX_RETRY_MAX_SECONDS", 3600, minimum=1)
# Unsent usage older than this raises an operator alert; Stripe refuses meter events older than 35 days.
BILLING_OUTBOX_ALERT_AGE_DAYS = env_int("BILLING_OUTBOX_ALERT_AGE_DAYS", 30, minimum=1)
# Live usage of an organization without a billable subscription waits for one (never skipped); past
# this many days an operator alert says so (it becomes unreportable at Stripe's 35 days).
BILLING_OUTBOX_WAITING_ALERT_DAYS = env_int("BILLING_OUTBOX_WAITING_ALERT_DAYS", 7, minimum=1)
# Stripe deduplicates meter event identifiers for 24 h: a send in doubt is retried only while its
# first in-doubt attempt is younger than this; after that reconciliation decides (never a blind resend).
BILLING_OUTBOX_RESEND_WINDOW_HOURS = env_int("BILLING_OUTBOX_RESEND_WINDOW_HOURS", 23, minimum=1)
if BILLING_OUTBOX_RESEND_WINDOW_HOURS >= 24:
    raise ImproperlyConfigured(
        "BILLING_OUTBOX_RESEND_WINDOW_HOURS must stay below Stripe's 24 h dedupe window"
    )
# Reconciliation (billing.reconciliation): how long Stripe's summaries may lag behind accepted events,
# and how many days back the hourly audit compares ledger and Stripe per customer, meter and day.
BILLING_RECONCILE_SETTLE_SECONDS = env_int("BILLING_RECONCILE_SETTLE_SECONDS", 3600, minimum=0)
BILLING_RECONCILE_DAYS = env_int("BILLING_RECONCILE_DAYS", 2, minimum=1)
if STRIPE_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured(f"STRIPE_TIMEOUT_SECONDS must be > 0, got {STRIPE_TIMEOUT_SECONDS}")
# One Stripe call lasts at most 2 x STRIPE_TIMEOUT_SECONDS (connect + read).
if int(str(Q_CLUSTER["timeout"])) <= BILLING_OUTBOX_TIME_BUDGET_SECONDS + 2 * STRIPE_TIMEOUT_SECONDS:
    raise ImproperlyConfigured(
        "BILLING_OUTBOX_TIME_BUDGET_SECONDS + 2 x STRIPE_TIMEOUT_SECONDS must stay below the task timeout "
        f"({Q_CLUSTER['timeout']} s), or a worker could be killed in the middle of a send"
    )
# stripe-python logs every request at INFO.
LOGGING["loggers"] = {**LOGGING["loggers"], "stripe": {"level": "WARNING"}}  # type: ignore[dict-item]
