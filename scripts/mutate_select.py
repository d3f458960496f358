"""A pytest plugin of scripts/mutate: keeps the conformance suite to the brokers it names.

``-k memory`` would also drop every other selected test without "memory" in its name, so the
conformance runs are chosen by their ``broker_kind`` parameter instead:
``WSQ_MUTATE_BROKERS=memory,redis`` keeps those kinds (the default: memory only).
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kinds = set(os.environ.get("WSQ_MUTATE_BROKERS", "memory").split(","))
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        kind = spec.params.get("broker_kind") if spec is not None else None
        (keep if kind is None or kind in kinds else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
