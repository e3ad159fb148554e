"""The Celery app: configured from Django settings (CELERY_*), tasks discovered in every app."""

import os

from celery import Celery
from celery.app.defaults import DEFAULTS
from celery.signals import task_postrun, task_prerun, worker_init, worker_process_init

from algoways.gc_freeze import startup_objects_freeze

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "algoways.settings")

app = Celery("algoways")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(related_name="schedule_tasks")  # orders/schedule_tasks.py


@app.on_after_configure.connect
def celery_settings_resolve(sender, source, **kwargs) -> None:
    """Copy every Celery setting's value out of Django's settings once, when Celery loads them.

    Celery otherwise looks a setting up through Django's settings object each time it reads it
    (a miss, an exception, for each one left at its default), a dozen times per task published:
    0.81 -> 0.63 ms of CPU per publish, on every order. Django's settings do not change while a
    process runs; ``app.conf`` changes made later (the tests' eager mode) still apply.
    """
    source.update({name: source[name] for name in DEFAULTS if name in source})


@task_prerun.connect
@task_postrun.connect
def database_connections_recycle(sender=None, **kwargs) -> None:
    """Around each task, what Django does around each request: drop a broken or too old
    database connection, keep a good one (CONN_MAX_AGE) or hand it back to the process's pool
    (DATABASE_POOL), health-check it on first use.

    Celery's own Django fix-up closes every connection around every task instead, unless
    CELERY_DB_REUSE_MAX is set (settings.py sets it): a new PostgreSQL connection per task cost
    about 6 ms on every order. Not in eager mode, where a task runs inside the caller's
    transaction (a test's, a request's) and must not touch its connection.
    """
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@worker_init.connect
@worker_process_init.connect
def worker_startup_objects_freeze(**kwargs) -> None:
    """Freeze a worker's start-up objects: in its main process once the tasks are imported and
    before a prefork pool forks (the children inherit them frozen, so their collections never
    write to those pages, which stay shared), then what each prefork child adds as it starts."""
    startup_objects_freeze()
