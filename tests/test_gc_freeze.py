"""Long-running processes freeze their start-up objects out of full collections."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from algoways.gc_freeze import startup_objects_freeze


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


class Node:
    def __init__(self):
        self.other = self


def test_objects_alive_at_start_are_frozen_and_later_garbage_is_still_collected(unfrozen):
    kept = Node()  # a start-up object: alive when the process freezes
    startup_objects_freeze()
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(kept)

    later = Node()  # a reference cycle made after the freeze, then dropped
    alive = weakref.ref(later)
    del later
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("signal", ["worker_init", "worker_process_init"])
def test_a_celery_worker_process_freezes_once_started(signal):
    # In a fresh interpreter: the signal's other receivers (Celery's Django fix-up) would
    # change how this test process runs tasks.
    script = (
        "import gc, django; django.setup()\n"
        "from celery import signals\n"
        "import algoways.celery\n"
        "before = gc.get_freeze_count() > 0\n"
        f"signals.{signal}.send(sender=None)\n"
        "print(before, gc.get_freeze_count() > 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "algoways.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
