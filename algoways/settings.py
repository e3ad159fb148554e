"""AlgoWays settings. Every environment variable the platform reads is read here, and only here.

With nothing set the platform runs on embedded defaults: SQLite, Celery over kombu's filesystem
transport (a real worker process, no server), and a local-memory cache. ``DATABASE_URL``,
``CELERY_BROKER_URL`` and ``REDIS_URL`` switch to PostgreSQL, Redis or RabbitMQ. With DEBUG off,
a missing ``SECRET_KEY`` or ``FERNET_KEYS`` stops start-up with a clear message.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("ALGOWAYS_VAR_DIR", BASE_DIR / "var"))


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)

# Development-only fallbacks: refused when DEBUG is off.
_DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"
_DEV_FERNET_KEY = "dev-only-insecure-fernet-key-change-me"

SECRET_KEY = env("SECRET_KEY")
FERNET_KEYS = env_list("FERNET_KEYS")  # newest first; the first one encrypts, all decrypt
if not DEBUG:
    missing = [
        name
        for name, value in (("SECRET_KEY", SECRET_KEY), ("FERNET_KEYS", FERNET_KEYS))
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(
            f"{' and '.join(missing)} must be set when DEBUG is off. "
            "SECRET_KEY signs sessions; FERNET_KEYS (comma-separated, newest first, separate from "
            "SECRET_KEY) encrypts broker credentials and tokens at rest."
        )
SECRET_KEY = SECRET_KEY or _DEV_SECRET_KEY
FERNET_KEYS = FERNET_KEYS or [_DEV_FERNET_KEY]

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
PUBLIC_URL = env("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "accounts",
    "brokers",
    "orders",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "algoways.urls"
WSGI_APPLICATION = "algoways.wsgi.application"
ASGI_APPLICATION = "algoways.asgi.application"

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

# Database ---------------------------------------------------------------------------------------
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    # A pool of connections per process (psycopg_pool): a thread that closes its connection
    # hands it back, the next thread (a request, a task, a fan-out thread) takes it, so no
    # PostgreSQL backend is started per task or per fan-out thread. Idle ones close after a
    # minute; DATABASE_POOL_MAX_SIZE bounds a process (fan-out threads plus a few). Without
    # the pool (DATABASE_POOL=0, e.g. behind PgBouncer) each thread keeps its own connection.
    DATABASE_POOL = env_bool("DATABASE_POOL", True)
    DATABASE_POOL_MAX_SIZE = int(env("DATABASE_POOL_MAX_SIZE", "72"))
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL, conn_max_age=0 if DATABASE_POOL else 600, conn_health_checks=True
        )
    }
    DATABASES["default"]["OPTIONS"] = {}
    if DATABASE_POOL:
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": DATABASE_POOL_MAX_SIZE,
            "max_idle": 60,
            "timeout": 30,
        }
    if env_bool("DATABASE_PREPARED_STATEMENTS", True):
        # Parameters bound by the server, so PostgreSQL can keep each query's plan: psycopg
        # prepares a statement on its second run. Planning the order queries' joins cost up to
        # 1.5 ms each. Set DATABASE_PREPARED_STATEMENTS=0 behind a pooler that cannot keep
        # prepared statements (PgBouncer in transaction mode before 1.21).
        DATABASES["default"]["OPTIONS"].update(server_side_binding=True, prepare_threshold=2)
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env("SQLITE_PATH", str(VAR_DIR / "db.sqlite3")),
            # WAL lets the web process read while a worker writes; wait rather than fail on locks.
            # IMMEDIATE: a writing transaction takes the write lock at BEGIN, so concurrent
            # web and worker writers queue (up to the timeout) instead of failing "locked".
            "OPTIONS": {
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL;",
                "transaction_mode": "IMMEDIATE",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# Cache: shared Redis when configured (throttles, rate limits and API-key last-use live here) ----
REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            # Degrades to a miss when Redis is down: an outage never stops order intake.
            "BACKEND": "algoways.cache.ResilientRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "algoways",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 1.0},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 50_000},
        }
    }

SESSION_ENGINE = "django.contrib.sessions.backends.db"

# Celery -----------------------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "filesystem://")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_FILESYSTEM_DIR = VAR_DIR / "celery"
CELERY_VISIBILITY_TIMEOUT = int(env("CELERY_VISIBILITY_TIMEOUT", "3600"))
if CELERY_BROKER_URL == "filesystem://":
    for sub in ("in", "processed", "control"):
        (CELERY_FILESYSTEM_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_FILESYSTEM_DIR / "in"),
        "data_folder_out": str(CELERY_FILESYSTEM_DIR / "in"),
        "processed_folder": str(CELERY_FILESYSTEM_DIR / "processed"),
        # Exchange bindings; kombu's default is "control" in the working directory.
        "control_folder": str(CELERY_FILESYSTEM_DIR / "control"),
        "store_processed": False,
    }
else:
    # One visibility timeout everywhere (broker and result transport): longer than any task may
    # run (CELERY_TASK_TIME_LIMIT) and than any countdown we schedule (ORDERS_RETRY_MAX_SECONDS),
    # so an unacked order task is never handed to a second worker while the first still works.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        # kombu's Redis transport, reusing its Redis client instead of building one per publish.
        CELERY_BROKER_TRANSPORT = "algoways.celery_redis:Transport"
# Celery's Django fix-up closes every database connection around every task unless this is set;
# algoways.celery recycles them as Django does around requests instead (pool or CONN_MAX_AGE).
CELERY_DB_REUSE_MAX = 1_000_000_000
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_TIME_LIMIT = 900  # hard limit, well inside the visibility timeout
CELERY_TASK_DEFAULT_QUEUE = "housekeeping"
# Placement, reconciliation and fan-out on "orders"; sync, sweeps and cleanups stay on
# "housekeeping" so a backlog there never delays an order.
CELERY_TASK_ROUTES = {"orders.tasks.order_*": {"queue": "orders"}}
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "orders-stuck-sweep": {"task": "orders.tasks.stuck_orders_sweep_task", "schedule": 30.0},
    "orders-status-sync": {"task": "orders.tasks.open_orders_sync_task", "schedule": 15.0},
    "orders-idempotency-cleanup": {
        "task": "orders.tasks.idempotency_records_cleanup_task",
        "schedule": 3600.0,
    },
    # Scheduled orders: a tick older than its interval is useless, so it expires unsent.
    "orders-schedules-tick": {
        "task": "orders.schedule_tasks.schedules_tick_task",
        "schedule": 15.0,
        "options": {"expires": 14},
    },
    "brokers-session-keepalive-sweep": {
        "task": "brokers.tasks.session_keepalive_sweep_task",
        "schedule": 60.0,
    },
    "brokers-expired-sessions-cleanup": {
        "task": "brokers.tasks.expired_sessions_cleanup_task",
        "schedule": 3600.0,
    },
    # 02:30 UTC is 08:00 IST: before the Indian exchanges open, after the brokers publish.
    "brokers-instrument-master-refresh": {
        "task": "brokers.tasks.instrument_master_refresh_task",
        "schedule": crontab(hour=2, minute=30),
    },
}

# Orders -----------------------------------------------------------------------------------------
ORDERS_WAIT_MAX_SECONDS = float(env("ORDERS_WAIT_MAX_SECONDS", "10"))  # cap of Prefer: wait=N
# An order missing from the broker's book this long after it was sent never reached it.
ORDERS_RECONCILE_GRACE_SECONDS = float(env("ORDERS_RECONCILE_GRACE_SECONDS", "30"))
ORDERS_RECONCILE_DELAY_SECONDS = float(env("ORDERS_RECONCILE_DELAY_SECONDS", "2"))
# A working order's status is read again this soon after the broker acknowledged it.
ORDERS_ACK_FOLLOWUP_SECONDS = float(env("ORDERS_ACK_FOLLOWUP_SECONDS", "1"))
# Fill prices a broker left out of its acknowledgements are read once per account per window.
ORDERS_FILL_PRICES_WINDOW_SECONDS = int(env("ORDERS_FILL_PRICES_WINDOW_SECONDS", "1"))
ORDERS_STUCK_PENDING_SECONDS = float(env("ORDERS_STUCK_PENDING_SECONDS", "60"))
# A PENDING order not sent within this many seconds (a long outage) expires instead of going
# out late at a price nobody wanted any more. 0 disables.
ORDERS_PENDING_TTL_SECONDS = float(env("ORDERS_PENDING_TTL_SECONDS", "600"))
ORDERS_RETRY_BASE_SECONDS = float(env("ORDERS_RETRY_BASE_SECONDS", "1"))
ORDERS_RETRY_MAX_SECONDS = float(env("ORDERS_RETRY_MAX_SECONDS", "60"))
# A fan-out is latency-bound: 500 accounts at 50 ms are 25 s of waiting, shared by the broker
# calls in flight. A task takes up to ORDERS_FANOUT_CHUNK accounts (one or two tasks per worker
# process for 500) on ORDERS_FANOUT_THREADS threads (bench_orders: chunk 64 / 32 threads took
# 0.83-0.97 s for 500, 256 / 48 0.59-0.62 s, 256 / 64 0.51-0.63 s).
ORDERS_FANOUT_THREADS = int(env("ORDERS_FANOUT_THREADS", "64"))
ORDERS_FANOUT_CHUNK = int(env("ORDERS_FANOUT_CHUNK", "256"))
if DATABASE_URL and DATABASE_POOL and DATABASE_POOL_MAX_SIZE <= ORDERS_FANOUT_THREADS:
    # Each fan-out thread holds a pooled connection, and the task's own thread one more.
    raise ImproperlyConfigured(
        f"DATABASE_POOL_MAX_SIZE ({DATABASE_POOL_MAX_SIZE}) must be larger than "
        f"ORDERS_FANOUT_THREADS ({ORDERS_FANOUT_THREADS}): a fan-out task's threads each hold "
        "a pooled database connection."
    )
IDEMPOTENCY_KEY_TTL_HOURS = int(env("IDEMPOTENCY_KEY_TTL_HOURS", "24"))  # never below 24

# Brokers ----------------------------------------------------------------------------------------
BROKER_ADAPTERS = [
    "brokers.adapters.paper.PaperAdapter",
    "brokers.adapters.zerodha.ZerodhaAdapter",
    "brokers.adapters.angel.AngelAdapter",
    "brokers.adapters.fyers.FyersAdapter",
    "brokers.adapters.dxtrade.DXtradeAdapter",
    "brokers.adapters.matchtrade.MatchTraderAdapter",
]
BROKER_CONNECT_TIMEOUT = float(env("BROKER_CONNECT_TIMEOUT", "3.05"))
BROKER_READ_TIMEOUT = float(env("BROKER_READ_TIMEOUT", "10"))

# REST API ---------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["algoways.api.permissions.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "algoways.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "algoways.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "algoways.api.throttling.ApiKeyRateThrottle",
        "algoways.api.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "api_key": env("API_KEY_THROTTLE_RATE", "6000/min"),
        "user": env("USER_THROTTLE_RATE", "3000/min"),
    },
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
DATA_UPLOAD_MAX_MEMORY_SIZE = int(env("MAX_REQUEST_BODY_BYTES", str(1024 * 1024)))

SPECTACULAR_SETTINGS = {
    "TITLE": "AlgoWays API",
    "DESCRIPTION": "Run many broker accounts from one place. Authenticate with "
    "`Authorization: Api-Key <key>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "Authorization"}
        }
    },
    "SECURITY": [{"ApiKeyAuth": []}],
    # One schema name for a choice set used by several fields (Order.status, OrderEvent.*_status).
    "ENUM_NAME_OVERRIDES": {"OrderStatusEnum": "orders.models.OrderStatus"},
}

# Static files, i18n, auth -----------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
WHITENOISE_USE_FINDERS = DEBUG  # serve app static files without collectstatic while developing
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "algoways" / "static"]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"urllib3": {"level": "WARNING"}},
}
