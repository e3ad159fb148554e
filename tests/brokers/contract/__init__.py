"""The adapter contract suite: one set of tests, run over every registered broker's harness.

A broker joins the suite by adding ``harness_<code>.py`` here with a ``Harness`` subclass of
``harness.BrokerHarness``; ``all_harnesses()`` discovers it, so a new broker gets every test.
"""

import importlib
import pkgutil
from pathlib import Path


def all_harnesses():
    found = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("harness_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            found.append(module.Harness)
    return sorted(found, key=lambda cls: cls.code)
