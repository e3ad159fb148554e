"""The Celery app's settings come from Django's (algoways.celery)."""

from __future__ import annotations

from django.conf import settings

from algoways.celery import app


def test_celery_settings_are_copied_out_of_djangos_once_when_celery_loads_them():
    app.conf.task_default_queue  # noqa: B018 - loads the configuration, if nothing has yet
    own = app.conf.changes  # looked up first, before Django's settings and Celery's defaults
    assert own["task_default_queue"] == settings.CELERY_TASK_DEFAULT_QUEUE == "housekeeping"
    assert own["task_acks_late"] is settings.CELERY_TASK_ACKS_LATE is True
    assert own["task_serializer"] == "json"  # a default Django's settings leave alone
    assert app.conf.task_acks_late is True
