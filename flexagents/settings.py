"""Settings for Flex Agents: one module, driven by the environment (12-factor).

Every value that comes from the environment goes through `flexagents.env`,
which raises `ImproperlyConfigured` on bad values instead of guessing.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from flexagents.env import env_bool, env_float, env_int, env_origins, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
TESTING = "pytest" in sys.modules or env_bool("FLEX_TESTING", False)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or ""
if not SECRET_KEY:
    # No key given: keep a random one in a local file (never committed), so
    # a fresh checkout works and sessions survive restarts. Deployments set
    # SECRET_KEY explicitly (docs/deployment.md).
    _key_file = BASE_DIR / "db" / "secret_key"
    _key_file.parent.mkdir(parents=True, exist_ok=True)
    if not _key_file.exists():
        import secrets as _secrets

        _key_file.write_text(_secrets.token_urlsafe(50))
        _key_file.chmod(0o600)
    SECRET_KEY = _key_file.read_text().strip()

ALLOWED_HOSTS = [h.strip() for h in (env_str("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver") or "").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in (env_str("CSRF_TRUSTED_ORIGINS", "") or "").split(",") if o.strip()]
# JSON for /api/ paths, Django's page elsewhere.
CSRF_FAILURE_VIEW = "flexagents.views.csrf_failure"

INSTALLED_APPS = [
    # daphne first: `runserver` then serves ASGI, which SSE needs.
    "daphne",
    "corsheaders",
    "servestatic",  # its system checks; the middleware serves static files
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "django_eventstream",
    "django_jsonform",  # the human-task form widget (runs/task_forms.py)
    "flexagents",
    "planner",
    "hitl",
    "runs",
]

MIDDLEWARE = [
    # First: preflights are answered here, and every response under /api/
    # (errors rewritten below, SSE streams) leaves through it.
    "corsheaders.middleware.CorsMiddleware",
    # A span per request when OpenTelemetry is configured; removes itself when not.
    "flexagents.tracing.TracingMiddleware",
    "flexagents.access.RequestLogMiddleware",
    "flexagents.access.InputGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Async-capable (ServeStatic, a maintained fork of WhiteNoise): with every
    # middleware async-capable Django runs the chain on the event loop, so a
    # long-lived request (an SSE stream, a task claim's long poll) holds no
    # thread for its lifetime.
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "flexagents.middleware.ApiErrorMiddleware",
]

ROOT_URLCONF = "flexagents.urls"
ASGI_APPLICATION = "flexagents.asgi.application"
WSGI_APPLICATION = None

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

# --- Database -------------------------------------------------------------
DEFAULT_SQLITE = BASE_DIR / "db" / "flexagents.sqlite3"
DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE}"
try:
    _db = dj_database_url.parse(DATABASE_URL)
except Exception as exc:  # dj-database-url raises several types on bad URLs
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None

if _db["ENGINE"] == "django.db.backends.sqlite3":
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Several writers (web threads, embedded workers, flex_worker processes):
    # WAL lets readers run beside a writer, IMMEDIATE takes the write lock at
    # BEGIN so two writers queue instead of failing with "database is locked".
    _db["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    # A file, not :memory:, so that test worker threads and child processes
    # (daphne, flex_worker) share the test database.
    _db["TEST"] = {"NAME": str(Path(_db["NAME"]).with_name("test_" + Path(_db["NAME"]).name))}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # A pool instead of persistent connections: SSE streams and worker
    # threads borrow a connection only while they read or write.
    _db["CONN_MAX_AGE"] = 0
    _db["OPTIONS"] = {
        "pool": {
            "min_size": 2,
            "max_size": env_int("FLEX_DB_POOL_MAX", 20, minimum=2),
            "timeout": 20,
        }
    }
    _db["TEST"] = {"NAME": "test_" + (_db["NAME"] or "flexagents")}
else:
    raise ImproperlyConfigured(f"DATABASE_URL must name sqlite or postgresql, got {_db['ENGINE']}")
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis ----------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL") or None
if REDIS_URL and urlparse(REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
    raise ImproperlyConfigured(f"REDIS_URL must start with redis://, rediss:// or unix://, got {REDIS_URL!r}")

# --- Auth -----------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS: list[dict] = []
if TESTING:
    # Tests create many users; the production hasher would dominate their time.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "/admin/login/"
GUARDIAN_RAISE_403 = False
ANONYMOUS_USER_NAME = None  # no guardian anonymous user: anonymous callers get 401

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # servestatic warns about a missing root before collectstatic
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
SERVESTATIC_USE_FINDERS = True

# Body size limit (API.md: 1 MiB by default); DRF >= 3.18 honours it for JSON.
FLEX_MAX_BODY_BYTES = env_int("FLEX_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = FLEX_MAX_BODY_BYTES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "flexagents.authentication.BearerTokenAuthentication",
        "flexagents.authentication.CsrfSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["flexagents.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "flexagents.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "flexagents.openapi.FlexAutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        # One scope for the debug view, the history page and the events (runs/throttles.py).
        "run_detail": env_str("FLEX_RUN_DETAIL_RATE") or env_str("FLEX_DEBUG_VIEW_RATE", "120/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Flex Agents API",
    "DESCRIPTION": "Runs multi-agent work with people in the loop. See docs/api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Request and response bodies, errors, operation ids, /api/health: flexagents/openapi.py.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "flexagents.openapi.postprocess_schema"],
    # Swagger UI assets from the sidecar package: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- CORS: an SPA on another origin (API.md, "The SPA as a client") ----------
# Empty (the default): same origin only, no CORS header is ever sent.
CORS_ALLOWED_ORIGINS = env_origins("FLEX_CORS_ALLOWED_ORIGINS")
CORS_URLS_REGEX = r"^/api/"
CORS_ALLOW_METHODS = ("GET", "POST", "OPTIONS")
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-Correlation-ID")
CORS_EXPOSE_HEADERS = ("X-Correlation-ID", "Retry-After", "Idempotent-Replayed")
# Sent only beside an allowed origin's own name (never with `*`).
CORS_ALLOW_CREDENTIALS = True
CORS_PREFLIGHT_MAX_AGE = 600

# --- Events / SSE ------------------------------------------------------------
EVENTSTREAM_STORAGE_CLASS = "runs.streaming.RunEventStorage"
EVENTSTREAM_CHANNELMANAGER_CLASS = "runs.streaming.RunChannelManager"
# Seconds between keep-alive comments on an idle stream.
FLEX_SSE_KEEPALIVE_SECONDS = env_float("FLEX_SSE_KEEPALIVE_SECONDS", 15.0, minimum=0.1)
# How often a web process checks the event table for runs its streams follow
# when no notification arrives (the only path without Redis; a safety net with it).
FLEX_SSE_POLL_SECONDS = env_float("FLEX_SSE_POLL_SECONDS", 0.25 if not REDIS_URL else 2.0, minimum=0.01)
FLEX_SSE_MAX_STREAMS_PER_USER = env_int("FLEX_SSE_MAX_STREAMS_PER_USER", 200, minimum=1)
FLEX_SSE_MAX_STREAMS = env_int("FLEX_SSE_MAX_STREAMS", 5000, minimum=1)
# How long a stream request's access (token -> user, user+run -> may view) is
# cached per process (runs.stream_access); 0 turns the cache off. A right
# revoked in another process takes effect here within this many seconds.
FLEX_SSE_ACCESS_CACHE_SECONDS = env_float("FLEX_SSE_ACCESS_CACHE_SECONDS", 5.0, minimum=0.0)
# A stream whose client leaves more than this unread in the server is cut
# with a retry hint (it reconnects with Last-Event-ID and loses nothing).
FLEX_SSE_SLOW_CONSUMER_BYTES = env_int("FLEX_SSE_SLOW_CONSUMER_BYTES", 256 * 1024, minimum=1024)
FLEX_SSE_SLOW_CONSUMER_SECONDS = env_float("FLEX_SSE_SLOW_CONSUMER_SECONDS", 10.0, minimum=0.05)
# The kernel send buffer of a stream's socket (bounded memory per stream).
FLEX_SSE_SOCKET_BUFFER_BYTES = env_int("FLEX_SSE_SOCKET_BUFFER_BYTES", 64 * 1024, minimum=4096)
# Pushpin (GRIP) in front of the web processes (docs/deployment.md): the URL of
# its publish endpoint, e.g. http://127.0.0.1:5561 (optionally `?key=<sig_key>`).
# Unset: streams are served by the web process itself, as always.
FLEX_GRIP_URL = env_str("FLEX_GRIP_URL") or None
# Pushpin's `sig_key`: requests that claim to come through Pushpin (Grip-Sig)
# are believed only with a valid signature. Also read from FLEX_GRIP_URL's `key`.
FLEX_GRIP_KEY = env_str("FLEX_GRIP_KEY") or None
# A held stream with no new event for this long asks the web processes again
# (from its last id): a publish that was lost (a worker killed between commit
# and publish, Pushpin briefly unreachable) costs at most this much latency.
FLEX_GRIP_RECOVER_SECONDS = env_int("FLEX_GRIP_RECOVER_SECONDS", 60, minimum=1, maximum=3600)
# Committed frames waiting to be published to Pushpin per process; past this
# they are dropped (the gap is repaired from the event table, see runs/grip.py).
FLEX_GRIP_PUBLISH_QUEUE = env_int("FLEX_GRIP_PUBLISH_QUEUE", 20000, minimum=100)
# How long a stream ticket (`?ticket=` for EventSource) may wait to be used.
FLEX_STREAM_TICKET_SECONDS = env_int("FLEX_STREAM_TICKET_SECONDS", 60, minimum=1, maximum=3600)

# --- Engine ------------------------------------------------------------------
FLEX_ENABLED = env_bool("FLEX_ENABLED", True)
# Worker threads inside the web process (the embedded default of `make run`).
FLEX_EMBEDDED_WORKERS = env_int("FLEX_EMBEDDED_WORKERS", 0, minimum=0, maximum=64)
FLEX_LEASE_SECONDS = env_float("FLEX_LEASE_SECONDS", 30.0, minimum=0.2)
FLEX_SWEEP_SECONDS = env_float("FLEX_SWEEP_SECONDS", 15.0, minimum=0.05)
FLEX_IDLE_POLL_SECONDS = env_float("FLEX_IDLE_POLL_SECONDS", 0.5, minimum=0.01)
# How many times a node may be started by workers that then died.
FLEX_MAX_CRASH_ATTEMPTS = env_int("FLEX_MAX_CRASH_ATTEMPTS", 3, minimum=1)
# Back-off before a node that failed with a retryable error runs again (doubles
# per attempt, capped at 30 s); the run waits in the queue (Run.available_at),
# holding no worker. 0 retries at once (the test default, so drain() finishes).
FLEX_RETRY_BACKOFF_SECONDS = env_float("FLEX_RETRY_BACKOFF_SECONDS", 0.0 if TESTING else 1.0, minimum=0.0)
# Backpressure (503 server_busy past them): queued runs per user, and in all.
FLEX_MAX_QUEUED_RUNS_PER_USER = env_int("FLEX_MAX_QUEUED_RUNS_PER_USER", 20, minimum=1)
FLEX_MAX_QUEUED_RUNS = env_int("FLEX_MAX_QUEUED_RUNS", 200, minimum=1)
FLEX_CAPABILITIES = [
    "planner.capabilities.strategist.SocialPosting",
    "planner.capabilities.copywriter.SocialpostDrafting",
    "planner.capabilities.shortform.ShortformDrafting",
    "planner.capabilities.qa.ContentReview",
    "planner.capabilities.output.OutputMapper",
]
FLEX_EXTRA_CAPABILITIES = [c.strip() for c in (env_str("FLEX_EXTRA_CAPABILITIES", "") or "").split(",") if c.strip()]
FLEX_FACET_CATALOG = Path(env_str("FLEX_FACET_CATALOG") or BASE_DIR / "planner" / "catalog" / "facets.json")
# A person's claim on a human task (the console's task inbox): a form takes minutes.
FLEX_HUMAN_TASK_LEASE_SECONDS = env_float("FLEX_HUMAN_TASK_LEASE_SECONDS", 1800.0, minimum=1.0)
# Language-model capabilities, declared as data (docs/models.md). Their
# endpoints and keys come from the environment (OPENAI_API_KEY,
# OPENAI_BASE_URL, FLEX_LLM_ENDPOINT_<NAME>_*), read by planner/llm.py when a
# client is made: never copied into settings.
FLEX_LLM_CAPABILITIES = Path(env_str("FLEX_LLM_CAPABILITIES") or BASE_DIR / "planner" / "catalog" / "llm.json")
# The default time limit of one model call (a declaration's timeoutSeconds wins).
FLEX_LLM_TIMEOUT_SECONDS = env_float("FLEX_LLM_TIMEOUT_SECONDS", 120.0, minimum=0.1)

# --- Operations (runs/ops.py, runs/metrics.py) ---------------------------------
# A worker writes its heartbeat row at most this often; /api/ready wants one
# newer than FLEX_WORKER_STALE_SECONDS (or a live run lease).
FLEX_WORKER_HEARTBEAT_SECONDS = env_float("FLEX_WORKER_HEARTBEAT_SECONDS", 5.0, minimum=0.01)
FLEX_WORKER_STALE_SECONDS = env_float("FLEX_WORKER_STALE_SECONDS", 30.0, minimum=0.1)
# /metrics asks for `Authorization: Bearer <token>` when this is set.
FLEX_METRICS_TOKEN = env_str("FLEX_METRICS_TOKEN") or ""

# --- Idempotency and notifications (API.md, Governance) ----------------------
# How long an Idempotency-Key's response is kept and replayed.
FLEX_IDEMPOTENCY_TTL_SECONDS = env_int("FLEX_IDEMPOTENCY_TTL_SECONDS", 24 * 3600, minimum=1)
# Webhook targets on loopback, private, link-local, reserved or multicast
# addresses are refused unless this is set.
FLEX_WEBHOOK_ALLOW_PRIVATE = env_bool("FLEX_WEBHOOK_ALLOW_PRIVATE", False)
# Retry schedule of a notification (webhook or email): exponential backoff
# from the first delay, doubled each attempt, capped, with +-20 % jitter,
# for up to FLEX_NOTIFY_GIVE_UP_SECONDS after the event; then `failed`.
FLEX_NOTIFY_FIRST_RETRY_SECONDS = env_float("FLEX_NOTIFY_FIRST_RETRY_SECONDS", 5.0, minimum=0.01)
FLEX_NOTIFY_MAX_RETRY_SECONDS = env_float("FLEX_NOTIFY_MAX_RETRY_SECONDS", 3600.0, minimum=0.01)
FLEX_NOTIFY_GIVE_UP_SECONDS = env_float("FLEX_NOTIFY_GIVE_UP_SECONDS", 24 * 3600.0, minimum=0.1)
# Delivered and failed notifications (with their attempts) are kept this long.
FLEX_NOTIFY_KEEP_DAYS = env_int("FLEX_NOTIFY_KEEP_DAYS", 30, minimum=1)
# Per delivery attempt: connect and read timeout.
FLEX_WEBHOOK_TIMEOUT_SECONDS = env_float("FLEX_WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1)
# How often a worker looks for due notifications (it is also woken by new ones).
FLEX_NOTIFY_POLL_SECONDS = env_float("FLEX_NOTIFY_POLL_SECONDS", 1.0, minimum=0.01)
# Email: console backend unless configured (EMAIL_BACKEND, EMAIL_HOST, ...).
EMAIL_BACKEND = env_str("EMAIL_BACKEND") or "django.core.mail.backends.console.EmailBackend"
EMAIL_HOST = env_str("EMAIL_HOST") or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH") or str(BASE_DIR / "db" / "emails")  # the file-based backend
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or "flexagents@localhost"
# prometheus-client's multi-process mode reads PROMETHEUS_MULTIPROC_DIR when it
# is first imported, so it is settled here, before any app loads. Every process
# of a deployment must share it (docs/deployment.md); `make run` empties the
# default one at start; a test session gets its own, which its child processes inherit.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    if TESTING:
        import tempfile as _tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _tempfile.mkdtemp(prefix="flex-metrics-")
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(BASE_DIR / "db" / "prometheus")
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

# --- Logging -------------------------------------------------------------------
# structlog renders every line (flexagents/logging.py): JSON, or plain lines
# for a person at a terminal (`make run` sets DEBUG=1).
FLEX_LOG_FORMAT = env_str("FLEX_LOG_FORMAT", "console" if DEBUG and not TESTING else "json")
if FLEX_LOG_FORMAT not in ("json", "console"):
    raise ImproperlyConfigured(f"FLEX_LOG_FORMAT must be json or console, not {FLEX_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "flexagents.logging.JsonFormatter"},
                   "console": {"()": "flexagents.logging.ConsoleFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": FLEX_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING" if TESTING else "INFO")},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "django_eventstream": {"level": "WARNING"},
    },
}

# --- Agents and tasks (docs/agents.md) -------------------------------------------
# How often a process checks that its cached capability catalog is current
# (planner.registry; the process that registers an agent sees it at once).
FLEX_CATALOG_RECHECK_SECONDS = env_float("FLEX_CATALOG_RECHECK_SECONDS", 0.0 if TESTING else 1.0, minimum=0.0)
# A claimed task's lease (the holder heartbeats it: POST /tasks/{id}/heartbeat).
FLEX_TASK_LEASE_SECONDS = env_float("FLEX_TASK_LEASE_SECONDS", 60.0, minimum=0.2)
# Without Redis a long-polling claim learns of new tasks by one poll per process at this interval.
FLEX_TASK_POLL_SECONDS = env_float("FLEX_TASK_POLL_SECONDS", 0.5 if not REDIS_URL else 5.0, minimum=0.01)
# Capabilities done by people in the console, declared as data (agentType "human"; always active):
# a JSON list of {"capabilityId", "displayName", "kind", "inputFacets", "optionalInputFacets"?,
# "outputFacets", "description"?, "version"?}.
FLEX_HUMAN_CAPABILITIES = json.loads(env_str("FLEX_HUMAN_CAPABILITIES") or "[]")
