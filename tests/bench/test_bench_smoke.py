"""The benchmark runs end to end at tiny sizes and reports every row.

No timing is asserted: the figures of a tiny run on a shared machine mean nothing. A peer whose
tool is missing fails this test (scripts/bench installs them as root, or exits non-zero).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = {"ceiling", "ceiling-bare", "wsq-memory", "py-websockets", "node-ws", "nats-ws"}


@pytest.mark.slow
def test_bench_completes_at_tiny_sizes_and_reports_every_row(tmp_path: Path) -> None:
    run = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--tiny", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {row["system"]: row for row in results["rows"]}
    assert set(rows) == ROWS
    for name, row in rows.items():
        assert "error" not in row, (name, row)
        assert row["fanout"]["complete"], (name, row["fanout"])
        assert row["latency"]["complete"], (name, row["latency"])
        assert row["idle"]["conns"] == results["sizes"]["conns"], name
        assert row["ratio_to_ceiling"]["fanout"] is not None, name
    for name in ROWS:
        assert f"| {name} |" in run.stdout
    assert (tmp_path / "results.md").exists()
