"""The serving process's collector (wsq.gc_tuning): ``app_factory`` (what ``wsq serve`` and
every worker run) freezes the start's objects and raises the young generation's threshold;
``create_app`` (what an embedding program calls) leaves the collector alone. Each in a fresh
interpreter: the test process's collector is not touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from wsq.gc_tuning import THRESHOLDS

PROBE = """
import gc, json
from wsq import app
from wsq.config import load_settings
before = gc.get_threshold()
{call}
print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))
"""


def _probe(call: str) -> list[object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSQ_")}
    env["WSQ_DEV_SECRET"] = "gc-tuning-test-" + "x" * 40
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(call=call)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    ).stdout
    return list(json.loads(out.splitlines()[-1]))


def test_the_serving_process_freezes_its_start_and_raises_the_young_threshold() -> None:
    before, after, frozen = _probe("app.app_factory()")
    assert after == list(THRESHOLDS) != before
    assert isinstance(frozen, int) and frozen > 10_000  # the imports and the app


def test_an_embedding_program_keeps_its_own_collector() -> None:
    before, after, frozen = _probe("app.create_app(load_settings())")
    assert after == before
    assert frozen == 0
