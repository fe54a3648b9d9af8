"""LashOps settings: one module, read from the environment.

Nothing set means the embedded default: SQLite file, in-memory channel layer,
in-process runner and scheduler, scripted model. See README.md "Configuration".
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from lashops.env import database_from_url, env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("LASHOPS_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
# Set by the test suite (tests/support/testing_env.py, loaded by pytest before the settings).
TESTING = env_bool("LASHOPS_TESTING", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not (DEBUG or TESTING):
        raise ImproperlyConfigured("SECRET_KEY is required unless DEBUG=1 (set it to a long random string)")
    SECRET_KEY = "lashops-development-only-secret-key-never-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "lashops.core",
    "sessions_app",
    "processes_app",
    "mobs_app",
]

MIDDLEWARE = [
    "lashops.core.middleware.ApiErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "lashops.urls"
ASGI_APPLICATION = "lashops.asgi.application"

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

# --- database -------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'lashops.sqlite3'}")
DATABASES = {"default": database_from_url(DATABASE_URL, base_dir=BASE_DIR)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DATABASES["default"]["CONN_MAX_AGE"] = env_int("LASHOPS_DB_CONN_MAX_AGE", 0, minimum=0)
_test_name = env_str("LASHOPS_TEST_DATABASE_NAME")
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not :memory:, so runner threads share it under WAL as they do in production.
    DATABASES["default"]["TEST"] = {"NAME": f"/tmp/lashops-{_test_name or 'test'}-{os.getpid()}.sqlite3"}
elif _test_name:
    DATABASES["default"]["TEST"] = {"NAME": _test_name}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channels -------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
LASHOPS_CHANNEL_CAPACITY = env_int("LASHOPS_CHANNEL_CAPACITY", 1000, minimum=10)
# With REDIS_URL: "redis" (channels-redis RedisChannelLayer: a group_send writes one copy per member
# channel) or "redis_pubsub" (RedisPubSubChannelLayer: one PUBLISH per group, fanned out in each
# server process; best for many sockets on one stream). Without REDIS_URL: in-memory.
LASHOPS_CHANNEL_LAYER = env_str("LASHOPS_CHANNEL_LAYER", "redis")
# redis-py 8 reads with a 5 s socket timeout by default, the same 5 s that channels-redis blocks in
# BZPOPMIN: an idle socket's receive then raised TimeoutError and the socket closed with 1011.
LASHOPS_CHANNEL_SOCKET_TIMEOUT = env_float("LASHOPS_CHANNEL_SOCKET_TIMEOUT", 15.0, minimum=6.0)
_CHANNEL_HOST = {"address": REDIS_URL, "socket_timeout": LASHOPS_CHANNEL_SOCKET_TIMEOUT, "socket_connect_timeout": 5}
if LASHOPS_CHANNEL_LAYER not in ("redis", "redis_pubsub"):
    raise ImproperlyConfigured(f"LASHOPS_CHANNEL_LAYER must be redis or redis_pubsub, not {LASHOPS_CHANNEL_LAYER!r}")
if REDIS_URL and LASHOPS_CHANNEL_LAYER == "redis_pubsub":
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [_CHANNEL_HOST]}}
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [_CHANNEL_HOST], "capacity": LASHOPS_CHANNEL_CAPACITY, "expiry": 60},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": LASHOPS_CHANNEL_CAPACITY}}
    }

# --- celery / runner ------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
# No broker: the in-process thread driver runs work (see lashops.core.runner).
LASHOPS_RUNNER = "celery" if CELERY_BROKER_URL else "in_process"
LASHOPS_RUNNER_THREADS = env_int("LASHOPS_RUNNER_THREADS", 8, minimum=1)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "lashops"

# --- processes (processes_app) --------------------------------------------------------
# Modules whose @process_definition functions are registered (besides the built-in examples).
LASHOPS_PROCESS_DEFINITIONS = env_list("LASHOPS_PROCESS_DEFINITIONS", [])
LASHOPS_PROCESS_LEASE_SECONDS = env_float("LASHOPS_PROCESS_LEASE_SECONDS", 30.0, minimum=0.5)
LASHOPS_PROCESS_CONCURRENCY = env_int("LASHOPS_PROCESS_CONCURRENCY", 64, minimum=1)  # per worker process
LASHOPS_PROCESS_CLAIM_BATCH = env_int("LASHOPS_PROCESS_CLAIM_BATCH", 16, minimum=1)
# Completions of a claimed batch are committed together, at the latest this long after the first.
LASHOPS_PROCESS_GROUP_COMMIT_SECONDS = env_float("LASHOPS_PROCESS_GROUP_COMMIT_SECONDS", 0.05, minimum=0.0)
LASHOPS_PROCESS_DRIVE_SECONDS = env_float("LASHOPS_PROCESS_DRIVE_SECONDS", 10.0, minimum=0.0)
LASHOPS_PROCESS_SWEEP_SECONDS = env_float("LASHOPS_PROCESS_SWEEP_SECONDS", 2.0, minimum=0.1)
LASHOPS_PROCESS_REDISPATCH_SECONDS = env_float("LASHOPS_PROCESS_REDISPATCH_SECONDS", 10.0, minimum=0.0)
# The in-process scheduler runs CELERY_BEAT_SCHEDULE (below) when there is no broker (off under tests).
LASHOPS_SCHEDULER = env_bool("LASHOPS_SCHEDULER", not TESTING)
LASHOPS_PROCESS_RETENTION_DAYS = env_float("LASHOPS_PROCESS_RETENTION_DAYS", 7.0, minimum=0.0)
LASHOPS_PROCESS_PRUNE_BATCH = env_int("LASHOPS_PROCESS_PRUNE_BATCH", 1000, minimum=1)

# --- auth, sessions, static -----------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/admin/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
MEDIA_ROOT = Path(env_str("LASHOPS_MEDIA_ROOT", str(VAR_DIR / "media")))

# Django refuses bodies over this before the API sees them; the API middleware answers 413.
LASHOPS_API_MAX_BODY_BYTES = env_int("LASHOPS_API_MAX_BODY_BYTES", 1_048_576, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = LASHOPS_API_MAX_BODY_BYTES

# --- LashOps knobs --------------------------------------------------------------------
LASHOPS_EVENT_RETENTION_DAYS = env_int("LASHOPS_EVENT_RETENTION_DAYS", 30, minimum=1)
LASHOPS_EVENT_PRUNE_BATCH = env_int("LASHOPS_EVENT_PRUNE_BATCH", 5000, minimum=100)
LASHOPS_WS_REPLAY_BATCH = env_int("LASHOPS_WS_REPLAY_BATCH", 500, minimum=10)
LASHOPS_API_KEY_TOUCH_SECONDS = env_float("LASHOPS_API_KEY_TOUCH_SECONDS", 60.0, minimum=0.0)
# POST /api/ws-tickets: how long a single-use WebSocket ticket (?ticket=) may wait for its handshake.
LASHOPS_WS_TICKET_SECONDS = env_float("LASHOPS_WS_TICKET_SECONDS", 60.0, minimum=1.0)
LASHOPS_HEALTH_PING_TIMEOUT = env_float("LASHOPS_HEALTH_PING_TIMEOUT", 1.0, minimum=0.1)

# --- live operations: worker heartbeats, socket buffers, dashboards --------------------
LASHOPS_WORKER_HEARTBEAT = env_bool("LASHOPS_WORKER_HEARTBEAT", not TESTING)
LASHOPS_WORKER_BEAT_SECONDS = env_float("LASHOPS_WORKER_BEAT_SECONDS", 5.0, minimum=0.1)
LASHOPS_WORKER_STALE_SECONDS = env_float("LASHOPS_WORKER_STALE_SECONDS", 30.0, minimum=0.5)
LASHOPS_WORKER_FORGET_HOURS = env_float("LASHOPS_WORKER_FORGET_HOURS", 24.0, minimum=0.0)
LASHOPS_WS_SEND_QUEUE = env_int("LASHOPS_WS_SEND_QUEUE", 1000, minimum=10)
# How often a server process checks that the channel layer still has its group memberships (a
# Redis restart wipes them without an error); a lost one is joined again and its sockets catch up.
LASHOPS_FANOUT_CHECK_SECONDS = env_float("LASHOPS_FANOUT_CHECK_SECONDS", 1.0, minimum=0.05)
# Workers silent past LASHOPS_WORKER_STALE_SECONDS are reported (worker.stale) by this sweep.
LASHOPS_WORKER_SWEEP_SECONDS = env_float("LASHOPS_WORKER_SWEEP_SECONDS", 5.0, minimum=0.1)

# --- mobs (mobs_app) ------------------------------------------------------------------
LASHOPS_MOB_RUNTIME_ID = env_str("LASHOPS_MOB_RUNTIME_ID", "")  # lease holder id; default host:pid
LASHOPS_MOB_LEASE_TTL = env_float("LASHOPS_MOB_LEASE_TTL", 30.0, minimum=0.1)
LASHOPS_MOB_LEASE_PROVIDER = env_str("LASHOPS_MOB_LEASE_PROVIDER", "")  # dotted path; default: the database
LASHOPS_MOB_MAX_SESSIONS = env_int("LASHOPS_MOB_MAX_SESSIONS", 64, minimum=1)
LASHOPS_MOB_SHELL_ENABLED = env_bool("LASHOPS_MOB_SHELL_ENABLED", False)
LASHOPS_MOB_MATERIALIZE_WAIT = env_float("LASHOPS_MOB_MATERIALIZE_WAIT", 30.0, minimum=0.1)
LASHOPS_MOB_MEMBER_SESSIONS = env_str("LASHOPS_MOB_MEMBER_SESSIONS", "mobs_app.members:SessionsAppMemberSessions")
LASHOPS_MOB_TOPOLOGY_PROVIDER = env_str("LASHOPS_MOB_TOPOLOGY_PROVIDER", "")
# Console frames older than this are deleted hourly in batches (in-flight frames are kept).
LASHOPS_CONSOLE_RETENTION_DAYS = env_float("LASHOPS_CONSOLE_RETENTION_DAYS", 30.0, minimum=0.0)
LASHOPS_CONSOLE_PRUNE_BATCH = env_int("LASHOPS_CONSOLE_PRUNE_BATCH", 1000, minimum=1)
# A console frame whose delivery fails transiently is retried: at most ATTEMPTS attempts, the n-th
# retry RETRY_BASE * 2**(n-1) seconds after the failure (capped at RETRY_MAX). A frame accepted but
# never picked up, or still dispatching, DELIVERY_TIMEOUT seconds on is taken over by the sweep.
LASHOPS_CONSOLE_DELIVERY_ATTEMPTS = env_int("LASHOPS_CONSOLE_DELIVERY_ATTEMPTS", 5, minimum=1)
LASHOPS_CONSOLE_RETRY_BASE_SECONDS = env_float("LASHOPS_CONSOLE_RETRY_BASE_SECONDS", 2.0, minimum=0.0)
LASHOPS_CONSOLE_RETRY_MAX_SECONDS = env_float("LASHOPS_CONSOLE_RETRY_MAX_SECONDS", 300.0, minimum=0.0)
LASHOPS_CONSOLE_DELIVERY_TIMEOUT = env_float("LASHOPS_CONSOLE_DELIVERY_TIMEOUT", 120.0, minimum=1.0)
LASHOPS_CONSOLE_SWEEP_SECONDS = env_float("LASHOPS_CONSOLE_SWEEP_SECONDS", 2.0, minimum=0.1)
# Warms asked for by a bootstrap whose process ended first are finished by this sweep.
LASHOPS_MOB_WARM_SWEEP_SECONDS = env_float("LASHOPS_MOB_WARM_SWEEP_SECONDS", 5.0, minimum=0.1)
# "before_create=pkg.mod:fn,on_error=pkg.mod:fn2" (a hook may be named several times)
LASHOPS_MOB_HOOKS: dict[str, list[str]] = {}
for _item in env_list("LASHOPS_MOB_HOOKS", []):
    _name, _, _path = _item.partition("=")
    LASHOPS_MOB_HOOKS.setdefault(_name.strip(), []).append(_path.strip())

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LASHOPS_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# --- sessions and the agent runtime ---------------------------------------------------
# Tool providers and plugin factories by dotted path ("pkg.module:callable"), comma-separated.
LASHOPS_TOOL_PROVIDERS = env_list(
    "LASHOPS_TOOL_PROVIDERS",
    [
        "lashops.runtime.builtin_tools:builtin_tools",
        "mobs_app.member_tools:member_tools",
        "processes_app.agent_tools:process_tools",
    ],
)
LASHOPS_PLUGINS = env_list("LASHOPS_PLUGINS", [])
# The model a session gets when it names none: "provider:model" (scripted needs no key).
LASHOPS_DEFAULT_MODEL = env_str("LASHOPS_DEFAULT_MODEL", "scripted:scripted-1")
LASHOPS_TRACE_FILE = env_str("LASHOPS_TRACE_FILE")
LASHOPS_SESSION_LEASE_TTL = env_float("LASHOPS_SESSION_LEASE_TTL", 30.0, minimum=1.0)
LASHOPS_MAX_INPUT_CHARS = env_int("LASHOPS_MAX_INPUT_CHARS", 100_000, minimum=1)
LASHOPS_TURN_MAX_STEPS = env_int("LASHOPS_TURN_MAX_STEPS", 16, minimum=1)
LASHOPS_MAX_CONCURRENT_TOOLS = env_int("LASHOPS_MAX_CONCURRENT_TOOLS", 8, minimum=1)
LASHOPS_PROVIDER_MAX_ATTEMPTS = env_int("LASHOPS_PROVIDER_MAX_ATTEMPTS", 4, minimum=1)
LASHOPS_PROVIDER_RETRY_BASE_DELAY = env_float("LASHOPS_PROVIDER_RETRY_BASE_DELAY", 0.5, minimum=0.0)
LASHOPS_PROVIDER_TIMEOUT = env_float("LASHOPS_PROVIDER_TIMEOUT", 120.0, minimum=0.1)
# A queued or running turn whose lease has been free this long is re-driven by the sweeper.
LASHOPS_TURN_SWEEP_GRACE = env_float("LASHOPS_TURN_SWEEP_GRACE", 5.0, minimum=0.0)
# The sweeper sends a turn's drive again only when its last one is this old and still not driven,
# so a turn waiting behind busy workers does not collect a drive message every sweep.
LASHOPS_TURN_REDISPATCH_SECONDS = env_float("LASHOPS_TURN_REDISPATCH_SECONDS", 30.0, minimum=0.0)

# --- the beat schedule -----------------------------------------------------------------
# The one schedule: Celery beat runs it with a broker, lashops.core.scheduler in-process without
# one. Every periodic task (a *_sweep or *_prune task) is here, and nothing else is.
CELERY_BEAT_SCHEDULE = {
    # Durable events older than LASHOPS_EVENT_RETENTION_DAYS.
    "lashops-events-prune": {"task": "lashops.core.events_prune", "schedule": 3600.0},
    # Expired process leases, due timers and crons, undispatched processes.
    "lashops-processes-sweep": {"task": "lashops.processes.sweep", "schedule": LASHOPS_PROCESS_SWEEP_SECONDS},
    # Terminal processes older than LASHOPS_PROCESS_RETENTION_DAYS.
    "lashops-processes-prune": {"task": "lashops.processes.prune", "schedule": 3600.0},
    # Heartbeat rows silent for LASHOPS_WORKER_FORGET_HOURS.
    "lashops-workers-prune": {"task": "lashops.core.workers_prune", "schedule": 3600.0},
    # Workers silent past LASHOPS_WORKER_STALE_SECONDS are reported once (worker.stale).
    "lashops-workers-sweep": {"task": "lashops.core.workers_sweep", "schedule": LASHOPS_WORKER_SWEEP_SECONDS},
    # Console frames older than LASHOPS_CONSOLE_RETENTION_DAYS (in-flight frames are kept).
    "lashops-mobs-console-prune": {"task": "lashops.mobs.console_prune", "schedule": 3600.0},
    # Console deliveries whose retry is due, or accepted/dispatching past LASHOPS_CONSOLE_DELIVERY_TIMEOUT.
    "lashops-mobs-console-deliveries-sweep": {
        "task": "lashops.mobs.console_deliveries_sweep",
        "schedule": LASHOPS_CONSOLE_SWEEP_SECONDS,
    },
    # Members left warming by a dead warmer, and recorded warms with no live warmer.
    "lashops-mobs-warming-sweep": {"task": "lashops.mobs.warming_sweep", "schedule": LASHOPS_MOB_WARM_SWEEP_SECONDS},
    # Queued or running turns whose lease has been free LASHOPS_TURN_SWEEP_GRACE are driven again.
    "lashops-turns-sweep": {"task": "lashops.sessions.turns_sweep", "schedule": 10.0},
}
