"""Celery tasks keep a good database connection from task to task, as Django does between
requests, and drop a broken or too old one (algoways.celery)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection, transaction

from algoways.celery import app, database_connections_recycle

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def worker_task(*, eager: bool = False):
    return SimpleNamespace(request=SimpleNamespace(is_eager=eager))


@pytest.fixture
def long_lived_connection(monkeypatch):
    """This test's connection opened as production opens it: kept up to CONN_MAX_AGE."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 600)
    connection.close()
    connection.ensure_connection()
    yield connection.connection
    connection.close()


def test_celerys_django_fixup_leaves_the_connection_open_around_a_task(long_lived_connection):
    fixup = DjangoWorkerFixup(app)
    fixup.on_task_prerun(sender=worker_task())
    fixup.on_task_postrun(sender=worker_task())
    assert connection.connection is long_lived_connection


def test_a_good_connection_is_kept_from_task_to_task(long_lived_connection):
    database_connections_recycle(sender=worker_task())
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    database_connections_recycle(sender=worker_task())
    assert connection.connection is long_lived_connection


def test_a_connection_past_its_age_is_closed_before_the_next_task(long_lived_connection):
    connection.close_at = time.monotonic() - 1
    database_connections_recycle(sender=worker_task())
    assert connection.connection is None


def test_a_broken_connection_is_replaced_before_the_next_task(long_lived_connection):
    connection.errors_occurred = True
    long_lived_connection.close()  # as if PostgreSQL had restarted
    database_connections_recycle(sender=worker_task())
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert connection.connection is not long_lived_connection


def test_an_eager_task_leaves_its_callers_transaction_alone(long_lived_connection):
    with transaction.atomic():
        database_connections_recycle(sender=worker_task(eager=True))
        assert connection.in_atomic_block
        assert connection.connection is long_lived_connection
