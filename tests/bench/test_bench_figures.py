"""bench/run.py's figures from made-up readings: KiB per idle connection is never a negative
number or a garbage collector's doing, and how it reads in the table."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load()


def _idle(before: int, after: int, released: int, conns: int = 200) -> dict[str, Any]:
    return {
        "conns": conns,
        "connects_per_s": 2000.0,
        "marks": {"before": {"rss": before}, "after": {"rss": after, "rss_released": released}},
    }


def test_a_steady_growth_is_the_figure() -> None:
    figures = bench.idle_figures(_idle(50 * MiB, 50 * MiB + 200 * 11 * 1024, 0))
    assert figures["kib_per_conn"] == pytest.approx(11.0)
    assert figures["noisy"] is None


@pytest.mark.parametrize(
    ("after", "released", "why"),
    [
        # what a quick run showed for node-ws: V8 gave back ~5 MB while 200 connections took 2
        (50 * MiB - 3 * MiB, 5 * MiB, "gave back"),
        # a smaller give-back still hides a part of the cost: not the connections' figure
        (50 * MiB + 2 * MiB, 1 * MiB, "gave back"),
        # a few pages: granularity, not a figure
        (50 * MiB + 64 * 1024, 0, "under 256 KiB"),
        (50 * MiB - 8 * 1024, 0, "under 256 KiB"),
    ],
)
def test_a_noisy_reading_is_not_a_figure(after: int, released: int, why: str) -> None:
    figures = bench.idle_figures(_idle(50 * MiB, after, released))
    assert figures["kib_per_conn"] is None
    assert why in figures["noisy"]
    # the raw difference is kept in results.json, for whoever wants to look
    assert figures["kib_per_conn_measured"] == pytest.approx((after - 50 * MiB) / 1024 / 200)


def test_the_table_says_too_noisy_rather_than_a_negative_number() -> None:
    rows = [
        {"system": "ceiling", "idle": bench.idle_figures(_idle(50 * MiB, 53 * MiB, 0))},
        {"system": "node-ws", "idle": bench.idle_figures(_idle(56 * MiB, 53 * MiB, 5 * MiB))},
    ]
    bench.add_ratios(rows)
    table = bench.table(rows)
    node = next(line for line in table.splitlines() if line.startswith("| node-ws |"))
    assert "n/a (too noisy at this size)" in node
    assert "-15" not in node and "(-" not in node
    assert "node-ws: its RSS gave back 5,120 KiB" in bench.noisy_note(rows)


def test_rss_watch_sees_memory_given_back_between_two_readings() -> None:
    # A process that takes 64 MiB, gives it back, and ends where it started: the two readings
    # agree, the watch sees the 64 MiB go.
    code = "import time; time.sleep(0.3); b = bytearray(64 << 20); time.sleep(0.3); del b; time.sleep(0.5)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.1)
        watch = bench.RssWatch(proc.pid)
        time.sleep(1.0)
        released = watch.stop()
    finally:
        proc.wait(10)
    assert released >= 60 * MiB
