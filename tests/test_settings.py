"""Settings read the environment: production refuses missing secrets, URLs switch backends.

Each case starts a fresh Python process, because settings are read once at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Every variable settings.py reads that a case may set; all are removed first.
READ_BY_SETTINGS = [
    "DEBUG",
    "SECRET_KEY",
    "FERNET_KEYS",
    "DATABASE_URL",
    "DATABASE_PREPARED_STATEMENTS",
    "DATABASE_POOL",
    "DATABASE_POOL_MAX_SIZE",
    "ORDERS_FANOUT_THREADS",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "SQLITE_PATH",
    "ALLOWED_HOSTS",
]

PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
from algoways.celery import app
print(json.dumps({
    "db": settings.DATABASES["default"],
    "cache": settings.CACHES["default"],
    "celery_broker": app.conf.broker_url,
    "celery_transport": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    "celery_transport_class": app.connection_for_write().transport_cls,
    "debug": settings.DEBUG,
}, default=str))
"""


def run_python(code: str, tmp_path, **env_vars: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in READ_BY_SETTINGS}
    env.update(
        DJANGO_SETTINGS_MODULE="algoways.settings",
        ALGOWAYS_VAR_DIR=str(tmp_path / "var"),
        PYTHONPATH=str(ROOT),
        **env_vars,
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_with(tmp_path, **env_vars: str) -> dict:
    result = run_python(PRINT_SETTINGS, tmp_path, **env_vars)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# Production refuses to start without its secrets ------------------------------------------------

SETUP = "import django; django.setup()"


@pytest.mark.parametrize(
    ("env_vars", "missing"),
    [
        ({"FERNET_KEYS": "k1"}, "SECRET_KEY must be set when DEBUG is off"),
        ({"SECRET_KEY": "s" * 50}, "FERNET_KEYS must be set when DEBUG is off"),
        ({}, "SECRET_KEY and FERNET_KEYS must be set when DEBUG is off"),
        ({"SECRET_KEY": "", "FERNET_KEYS": " , "}, "SECRET_KEY and FERNET_KEYS must be set"),
    ],
    ids=["no-secret-key", "no-fernet-keys", "neither", "blank-values"],
)
def test_with_debug_off_a_missing_secret_stops_start_up(tmp_path, env_vars, missing):
    result = run_python(SETUP, tmp_path, DEBUG="0", **env_vars)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert missing in result.stderr


def test_with_debug_off_and_both_secrets_set_start_up_succeeds(tmp_path):
    result = run_python(
        SETUP + "; from django.conf import settings; print(settings.DEBUG)",
        tmp_path,
        DEBUG="0",
        SECRET_KEY="s" * 50,
        FERNET_KEYS="new-key,old-key",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_with_debug_on_the_development_defaults_are_used(tmp_path):
    result = run_python(
        SETUP + "; from django.conf import settings; print(len(settings.FERNET_KEYS))", tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


# URLs switch backends ---------------------------------------------------------------------------


def test_with_nothing_set_everything_is_embedded(tmp_path):
    found = settings_with(tmp_path)
    assert found["db"]["ENGINE"] == "django.db.backends.sqlite3"
    assert found["db"]["NAME"] == str(tmp_path / "var" / "db.sqlite3")
    assert found["cache"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"
    assert found["celery_broker"] == "filesystem://"
    assert found["celery_transport"]["data_folder_in"] == str(tmp_path / "var" / "celery" / "in")


def test_database_url_switches_to_postgresql(tmp_path):
    found = settings_with(tmp_path, DATABASE_URL="postgres://algo:pw@db.internal:6543/algoways")
    db = found["db"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["HOST"], int(db["PORT"])) == (
        "algoways",
        "algo",
        "db.internal",
        6543,
    )
    # A connection pool per process (connections are handed back, not kept per thread), and
    # server-side binding with prepared statements: PostgreSQL keeps each query's plan.
    assert db["CONN_MAX_AGE"] == 0
    assert db["OPTIONS"] == {
        "pool": {"min_size": 1, "max_size": 72, "max_idle": 60, "timeout": 30},
        "server_side_binding": True,
        "prepare_threshold": 2,
    }


def test_without_the_pool_each_thread_keeps_its_own_connection(tmp_path):
    found = settings_with(
        tmp_path, DATABASE_URL="postgres://db.internal/algoways", DATABASE_POOL="0"
    )
    assert "pool" not in found["db"]["OPTIONS"]
    assert found["db"]["CONN_MAX_AGE"] == 600


def test_a_pool_smaller_than_the_fan_out_threads_stops_start_up(tmp_path):
    result = run_python(
        SETUP,
        tmp_path,
        DATABASE_URL="postgres://db.internal/algoways",
        DATABASE_POOL_MAX_SIZE="16",
        ORDERS_FANOUT_THREADS="32",
    )
    assert result.returncode != 0
    assert "DATABASE_POOL_MAX_SIZE (16) must be larger than ORDERS_FANOUT_THREADS (32)" in (
        result.stderr
    )


def test_the_pool_size_is_set_by_the_environment(tmp_path):
    found = settings_with(
        tmp_path, DATABASE_URL="postgres://db.internal/algoways", DATABASE_POOL_MAX_SIZE="96"
    )
    assert found["db"]["OPTIONS"]["pool"]["max_size"] == 96


def test_prepared_statements_can_be_switched_off_for_a_pooler(tmp_path):
    found = settings_with(
        tmp_path, DATABASE_URL="postgres://db.internal/algoways", DATABASE_PREPARED_STATEMENTS="0"
    )
    assert "server_side_binding" not in found["db"]["OPTIONS"]
    assert "prepare_threshold" not in found["db"]["OPTIONS"]


def test_redis_url_switches_the_cache_to_redis(tmp_path):
    found = settings_with(tmp_path, REDIS_URL="redis://cache.internal:6380/3")
    assert found["cache"]["BACKEND"] == "algoways.cache.ResilientRedisCache"
    assert found["cache"]["LOCATION"] == "redis://cache.internal:6380/3"
    assert found["celery_broker"] == "filesystem://"  # the cache URL alone does not move Celery


@pytest.mark.parametrize(
    "broker_url, transport",
    [
        ("redis://queue.internal:6379/1", "algoways.celery_redis:Transport"),
        ("rediss://queue.internal:6380/1", "algoways.celery_redis:Transport"),
        ("amqp://guest:guest@rabbit.internal:5672//", "amqp"),
    ],
)
def test_celery_broker_url_switches_celery_to_redis_or_rabbitmq(tmp_path, broker_url, transport):
    found = settings_with(tmp_path, CELERY_BROKER_URL=broker_url)
    assert found["celery_broker"] == broker_url
    assert found["celery_transport"] == {"visibility_timeout": 3600}
    assert found["celery_transport_class"] == transport
