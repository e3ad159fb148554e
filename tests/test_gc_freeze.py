"""Long-running processes freeze their start-up objects out of full collections."""

from __future__ import annotations

import gc
import weakref

import pytest
from celery.signals import worker_init, worker_process_init

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


@pytest.mark.parametrize("signal", [worker_init, worker_process_init], ids=lambda s: s.name)
def test_a_celery_worker_process_freezes_once_started(unfrozen, signal):
    assert gc.get_freeze_count() == 0
    signal.send(sender=None)
    assert gc.get_freeze_count() > 0
