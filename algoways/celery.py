"""The Celery app: configured from Django settings (CELERY_*), tasks discovered in every app."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "algoways.settings")

app = Celery("algoways")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(related_name="schedule_tasks")  # orders/schedule_tasks.py
