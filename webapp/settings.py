"""Settings, read from the environment in this one place.

Defaults suit the embedded development run (`make run`): DEBUG on, a local secret key. Production sets
`DJANGO_ENV=production`, which turns DEBUG off and every secure-cookie / HSTS / SSL option on, so
`manage.py check --deploy` is clean; it then refuses to start without a real `DJANGO_SECRET_KEY`.

`DATABASE_URL` / `REDIS_URL` name the servers. When they are unset, `make run` and `make test` start an
embedded PostgreSQL and Valkey (webapp/embedded.py) and set them before Django starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SAFELADDER_DATA_DIR", BASE_DIR / ".data"))


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """Turn `postgres://user:pw@host:port/name?host=/socket/dir` into a Django DATABASES entry."""
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(f"DATABASE_URL must be a postgres:// URL, got scheme {parsed.scheme!r}")
    query = parse_qs(parsed.query)
    host = query.get("host", [parsed.hostname or ""])[0]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "safeladder",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
        "OPTIONS": {},
        "TEST": {"NAME": os.environ.get("DATABASE_TEST_NAME") or None},
    }


PRODUCTION = os.environ.get("DJANGO_ENV", "development") == "production"
DEBUG = _env_bool("DJANGO_DEBUG", not PRODUCTION)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_ENV=production")
    SECRET_KEY = "dev-only-insecure-key-" + "x" * 40

ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/safeladder")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "annotator",
]

MIDDLEWARE = [
    "webapp.middleware.ApiGuardMiddleware",  # outermost: every /api/ answer leaves in the JSON error shape
    "django.middleware.security.SecurityMiddleware",
    "webapp.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "webapp" / "templates"],
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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [p for p in [BASE_DIR / "frontend" / "dist"] if p.exists()]
WHITENOISE_USE_FINDERS = DEBUG  # production serves what collectstatic gathered
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("DJANGO_MEDIA_ROOT", DATA_DIR / "media"))
MODEL_STORE = Path(os.environ.get("SAFELADDER_MODEL_STORE", DATA_DIR / "models"))
VLLM_BASE_URL = os.environ.get("VLLM_BASE_URL", "http://127.0.0.1:8001")
# Where model versions may point (annotator/outbound.py): backend URLs (`scheme://host:port[/path]`, a port
# of `*` matches any port) and folders besides the model store that checkpoints may be loaded from.
BACKEND_URL_ALLOWLIST = _env_list("SAFELADDER_BACKEND_URLS", VLLM_BASE_URL)
MODEL_ROOTS = _env_list("SAFELADDER_MODEL_ROOTS", "")
# Where project webhooks may deliver (annotator/outbound.py); empty: nowhere until named.
WEBHOOK_URL_ALLOWLIST = _env_list("SAFELADDER_WEBHOOK_URLS", "")
# Attempts of one webhook delivery and the waits between them (seconds).
WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("SAFELADDER_WEBHOOK_MAX_ATTEMPTS", "6"))
WEBHOOK_BACKOFF_S = [float(x) for x in _env_list("SAFELADDER_WEBHOOK_BACKOFF_S", "10,60,300,1800,7200")]
WEBHOOK_TIMEOUT_S = float(os.environ.get("SAFELADDER_WEBHOOK_TIMEOUT_S", "10"))
# A one-time invite link lasts this long.
INVITE_TTL_HOURS = int(os.environ.get("SAFELADDER_INVITE_TTL_HOURS", "72"))
EXPORT_ROOT = Path(os.environ.get("SAFELADDER_EXPORT_ROOT", DATA_DIR / "exports"))

# Proxies whose X-Forwarded-For is believed (addresses or networks, e.g. `10.0.0.0/8`); nobody else's.
TRUSTED_PROXIES = _env_list("SAFELADDER_TRUSTED_PROXIES", "")
API_TOKEN_TTL_S = int(os.environ.get("SAFELADDER_TOKEN_TTL_HOURS", 7 * 24)) * 3600

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# Uploads: images are checked by type and size in the service layer; these caps stop anything larger
# from being read into memory at all.
MAX_IMAGE_BYTES = int(os.environ.get("SAFELADDER_MAX_IMAGE_BYTES", 5 * 1024 * 1024))
MAX_IMPORT_BYTES = int(os.environ.get("SAFELADDER_MAX_IMPORT_BYTES", 50 * 1024 * 1024))
# A JSON (or form) body: no field of the API needs more; larger bodies get 413 by Content-Length.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("SAFELADDER_MAX_JSON_BYTES", 2 * 1024 * 1024))
# A whole multipart body (an import's JSONL and its images). Refused by Content-Length before it is read,
# in the web server (webapp/server.py) and again in webapp.middleware.ApiGuardMiddleware.
MAX_REQUEST_BYTES = int(os.environ.get("SAFELADDER_MAX_REQUEST_BYTES", MAX_IMPORT_BYTES + 16 * 1024 * 1024))
# A websocket message, in the web server: over it Daphne closes the connection (1009). The trace
# socket's own limit is far lower (annotator.consumers.MAX_FRAME_BYTES) and answers an error frame, so
# this only needs to be large enough that an ordinary oversize frame reaches the consumer; it is a
# per-connection buffer, so not much larger.
WEBSOCKET_MAX_MESSAGE_BYTES = int(os.environ.get("SAFELADDER_WEBSOCKET_MAX_MESSAGE_BYTES", 4 * 1024 * 1024))
# Uploads above this go to a temporary file, not memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous request then gets 401 with `WWW-Authenticate: Token`, not a bare 403.
        "annotator.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "annotator.api.schema.StudioAutoSchema",
    "DEFAULT_PARSER_CLASSES": [
        "annotator.api.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "annotator.api.pagination.StudioPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "annotator.api.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "SafeLadder Studio API",
    "DESCRIPTION": "Review and correct chains of thought; export correction datasets; train and serve.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "annotator.api.schema.add_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "annotator.models.Role",
        "RunStatusEnum": "annotator.models.RunStatus",
        "TraceStatusEnum": "annotator.models.TraceStatus",
        # Named here, so that a second field called "kind" does not rename the dataset kinds' enum.
        "KindEnum": "annotator.datasets.materialise.KIND_NAMES",
        "CandidateKindEnum": ["step", "end", "incomplete"],
        "AlternativesStatusEnum": "annotator.models.AlternativesStatus",
    },
}

CHANNEL_LAYERS = {
    "default": {
        # Pub/sub: one Redis publish per event, fanned out in each web process. Measured against the
        # list-based layer in bench/streaming.py. Pub/sub keeps nothing: resume and gap-filling come
        # from the per-trace event log (annotator/events.py), not from the layer.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    }
}

# How a web process hands trace events to its viewers: "process" (one Redis subscription per
# process, annotator/fanout.py) or "layer" (the channel layer's per-viewer queues: the baseline of
# bench/streaming.py; other channel layers always take this path).
TRACE_FANOUT = os.environ.get("TRACE_FANOUT", "process")
if TRACE_FANOUT not in ("process", "layer"):
    raise ImproperlyConfigured(f"TRACE_FANOUT must be 'process' or 'layer', got {TRACE_FANOUT!r}")

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = "default"
# The trainer workers' queue; a test session or a second studio on one Redis names its own.
CELERY_TRAIN_QUEUE = os.environ.get("CELERY_TRAIN_QUEUE", "train")
CELERY_GENERATE_QUEUE = os.environ.get("CELERY_GENERATE_QUEUE", "generate")
# annotator.enqueue names each task's queue when it sends; these routes cover a task sent otherwise.
CELERY_TASK_ROUTES = {
    "annotator.generate*": {"queue": CELERY_GENERATE_QUEUE},
    "trainer_worker.*": {"queue": CELERY_TRAIN_QUEUE},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A broker connection lost mid-task (a Valkey restart) leaves running tasks running: a generation goes
# on, and a late ack lost that way means a redelivery, which every task is idempotent against. Named
# because Celery 6 turns it on by default (webapp/celery.py keeps the worker alive through the loss).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_ALWAYS_EAGER = False
# Redis redelivers a late-acked task whose worker died once it has been unacknowledged this long.
# A healthy run longer than this is redelivered too; the train service then sees the owner's live
# heartbeat (renewed every TRAIN_HEARTBEAT_S / 3 while training) and drops the copy.
CELERY_VISIBILITY_TIMEOUT = int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", 3600))
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
if CELERY_VISIBILITY_TIMEOUT < 60:
    # Short timeouts (tests): sweep for abandoned messages every second rather than every ~100 s.
    CELERY_BROKER_TRANSPORT_OPTIONS.update(unacked_restore_interval=1, unacked_restore_throttle=1)
if os.environ.get("CELERY_UNACKED_NAMESPACE"):
    # Workers sharing one Redis restore each other's unacked messages after *their own* timeout: a
    # worker with a short one would redeliver others' long tasks. A namespace keeps its own apart.
    _ns = os.environ["CELERY_UNACKED_NAMESPACE"]
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        unacked_key=f"unacked:{_ns}", unacked_index_key=f"unacked_index:{_ns}", unacked_mutex_key=f"unacked_mutex:{_ns}"
    )
TRAIN_HEARTBEAT_S = int(os.environ.get("TRAIN_HEARTBEAT_S", 30))
# A run with more than one process is started under `accelerate launch`; with this accelerate config
# file (DeepSpeed, FSDP, several machines) rather than the built-in single-machine multi-process one.
ACCELERATE_CONFIG_FILE = os.environ.get("SAFELADDER_ACCELERATE_CONFIG") or None
# A generation's heartbeat lives this long and is renewed every third of it. Every generate and
# default worker sweeps for traces whose heartbeat has gone (their worker died) every
# GENERATE_SWEEP_S and ends those missing it for GENERATE_SWEEP_GRACE_S: with the defaults a trace
# whose worker is killed ends within about 21 s (9 + 3 + 6 + 3).
GENERATE_HEARTBEAT_S = int(os.environ.get("GENERATE_HEARTBEAT_S", 9))
GENERATE_SWEEP_S = float(os.environ.get("GENERATE_SWEEP_S", 3))
GENERATE_SWEEP_GRACE_S = float(os.environ.get("GENERATE_SWEEP_GRACE_S", 6))
# Work waiting longer than this (a queued trace, set of alternatives or run, a pending snapshot) has
# its task sent again by the sweep, then after 2x, 4x ... (its message may have been lost); a task
# that fails before its claim is retried, and the item ends failed after WORKER_START_ATTEMPTS
# (annotator/services/waiting.py).
WAITING_RESEND_S = float(os.environ.get("WAITING_RESEND_S", 60))
WORKER_START_ATTEMPTS = int(os.environ.get("WORKER_START_ATTEMPTS", 5))
if WAITING_RESEND_S <= 0 or WORKER_START_ATTEMPTS < 1:
    raise ImproperlyConfigured("WAITING_RESEND_S must be above 0 and WORKER_START_ATTEMPTS at least 1")
# How the generate worker relays vLLM streams: "asyncio" (every stream of a worker process on one
# event loop, annotator/services/relay.py) or "thread" (one thread per trace, as local models do).
GENERATE_RELAY = os.environ.get("GENERATE_RELAY", "asyncio")
if GENERATE_RELAY not in ("asyncio", "thread"):
    raise ImproperlyConfigured(f"GENERATE_RELAY must be 'asyncio' or 'thread', got {GENERATE_RELAY!r}")
GENERATE_RELAY_MAX_TRACES = int(os.environ.get("GENERATE_RELAY_MAX_TRACES", 256))  # per worker process
GENERATE_RELAY_DB_THREADS = int(os.environ.get("GENERATE_RELAY_DB_THREADS", 4))  # = its DB connections
GENERATE_RELAY_DRAIN_S = float(os.environ.get("GENERATE_RELAY_DRAIN_S", 60))
if GENERATE_RELAY_MAX_TRACES < 1 or GENERATE_RELAY_DB_THREADS < 1:
    raise ImproperlyConfigured("GENERATE_RELAY_MAX_TRACES and GENERATE_RELAY_DB_THREADS must be at least 1")
# A snapshot build keeps its own heartbeat (same lifetime and renewal); the same sweep ends a
# `building` snapshot whose heartbeat has been missing for GENERATE_SWEEP_GRACE_S as `failed`.
SNAPSHOT_HEARTBEAT_S = int(os.environ.get("SNAPSHOT_HEARTBEAT_S", 9))

# Everything the UI, the admin and the API docs load comes from this origin (Swagger UI from
# drf-spectacular-sidecar); no inline script anywhere. Inline styles stay allowed: the server-rendered
# pages carry a <style> block and Swagger UI sets style attributes. (Redoc is not served: its bundle
# loads a logo from the vendor's CDN, which the policy refuses.)
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self' 'unsafe-inline'",
    "img-src": "'self' data: blob:",
    "font-src": "'self' data:",
    "connect-src": "'self'",
    "worker-src": "'self' blob:",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the SPA reads it to send X-CSRFToken
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = _env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", 31536000))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
