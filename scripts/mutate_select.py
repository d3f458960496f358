"""A pytest plugin of scripts/mutate: keeps each mutant's tests fast and in-process.

- The conformance suite runs on the brokers the group names, chosen by the ``broker_kind``
  parameter (``-k memory`` would also drop every other test without "memory" in its name):
  ``WSQ_MUTATE_BROKERS=memory,redis`` keeps those kinds (the default: memory only).
- The unit tests that start processes or read the repository's files (the CLI, the venv
  script, the Docker files, the import layering) are left out: they test none of the mutated
  code, and a copy of the repository is not the repository. So are single tests that read a
  file of the repository (``LEFT_OUT_TESTS``: the examples of docs/webhooks.md).
"""

from __future__ import annotations

import os

import pytest

LEFT_OUT = frozenset(
    {
        "test_cli.py",
        "test_docker_files.py",
        "test_js_client.py",
        "test_layering.py",
        "test_venv_script.py",
    }
)
#: Tests (by name) in files that stay which read the repository's files.
LEFT_OUT_TESTS = frozenset(
    {
        "test_the_example_of_docs_webhooks_md_loads",
        "test_the_sink_example_of_docs_webhooks_md_loads",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kinds = set(os.environ.get("WSQ_MUTATE_BROKERS", "memory").split(","))
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        kind = spec.params.get("broker_kind") if spec is not None else None
        wanted = (
            item.path.name not in LEFT_OUT
            and getattr(item, "originalname", item.name) not in LEFT_OUT_TESTS
            and (kind is None or kind in kinds)
        )
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
