"""Running Celery tasks inline in tests.

The Celery app reads Django settings once, so ``override_settings(CELERY_TASK_ALWAYS_EAGER=...)``
has no effect after the first task; tests switch the app's own configuration instead.
"""

from contextlib import contextmanager

from algoways.celery import app


@contextmanager
def celery_eager():
    """Tasks run inline when queued (after commit), as a worker would run them."""
    previous = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = previous
