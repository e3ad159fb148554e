"""Celery tasks take their database connection from the process's pool and hand it back after,
as requests do, instead of starting a PostgreSQL backend per task (algoways.celery)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection, transaction

from algoways.celery import app, database_connections_recycle

pytestmark = [
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="needs PostgreSQL: the connection pool (SQLite keeps one in-process connection)",
    ),
    pytest.mark.django_db(transaction=True),
]


def worker_task(*, eager: bool = False):
    return SimpleNamespace(request=SimpleNamespace(is_eager=eager))


def run_task_body() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_celerys_django_fixup_leaves_the_connection_alone_around_a_task():
    connection.ensure_connection()
    raw = connection.connection
    fixup = DjangoWorkerFixup(app)
    fixup.on_task_prerun(sender=worker_task())
    fixup.on_task_postrun(sender=worker_task())
    assert connection.connection is raw


def test_tasks_reuse_pooled_connections_instead_of_opening_new_ones():
    assert connection.pool is not None
    run_task_body()
    opened_before = connection.pool.get_stats()["connections_num"]
    backends = set()
    for _ in range(20):
        database_connections_recycle(sender=worker_task())
        backends.add(run_task_body())
        database_connections_recycle(sender=worker_task())
        assert connection.connection is None  # handed back to the pool
    assert connection.pool.get_stats()["connections_num"] == opened_before
    assert len(backends) <= connection.pool.max_size


def test_a_broken_connection_is_replaced_before_the_next_task():
    broken_pid = run_task_body()
    connection.errors_occurred = True
    connection.connection.close()  # as if PostgreSQL had dropped it
    database_connections_recycle(sender=worker_task())
    assert run_task_body() != broken_pid


def test_an_eager_task_leaves_its_callers_transaction_alone():
    with transaction.atomic():
        run_task_body()
        raw = connection.connection
        database_connections_recycle(sender=worker_task(eager=True))
        assert connection.in_atomic_block
        assert connection.connection is raw
