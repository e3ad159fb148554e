"""The scheduler tick task: Celery beat runs it every few seconds on the housekeeping queue.

Found by ``app.autodiscover_tasks(related_name="schedule_tasks")`` in ``algoways/celery.py``.
"""

from __future__ import annotations

from collections import Counter

from celery import shared_task

from . import schedules


@shared_task(name="orders.schedule_tasks.schedules_tick_task")
def schedules_tick_task() -> dict[str, int]:
    """Fire every due scheduled order (each due time at most once, whatever runs concurrently)."""
    runs = schedules.schedules_tick()
    return dict(Counter(run.outcome for run in runs))
