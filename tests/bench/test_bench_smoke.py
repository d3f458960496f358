"""The benchmark runs end to end at tiny sizes and reports every row.

No timing is asserted: the figures of a tiny run on a shared machine mean nothing. A peer whose
tool is missing fails this test under CI=true (scripts/bench installs them as root, or exits 3);
elsewhere it is skipped with the bench's message.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = {
    "ceiling",
    "ceiling-bare",
    "wsq-memory",
    "wsq-redis",
    "wsq-redis-2w",
    "py-websockets",
    "socketio",
    "socketio-redis-2w",
    "node-ws",
    "nats-ws",
    "rabbitmq-stomp",
    "mosquitto-tcp",
}
# the rows that run on a Redis of their own report its commands per published message
REDIS_ROWS = {"wsq-redis", "wsq-redis-2w", "socketio-redis-2w"}
MISSING_TOOLS = 3


@pytest.mark.slow
def test_bench_completes_at_tiny_sizes_and_reports_every_row(tmp_path: Path) -> None:
    run = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--tiny", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode == MISSING_TOOLS and os.environ.get("CI") != "true":
        pytest.skip((run.stderr.strip().splitlines() or ["bench: missing tools"])[-1])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {row["system"]: row for row in results["rows"]}
    assert set(rows) == ROWS
    sizes = results["sizes"]
    for name, row in rows.items():
        assert "error" not in row, (name, row)
        assert row["fanout"]["complete"], (name, row["fanout"])
        assert row["latency"]["complete"], (name, row["latency"])
        assert row["idle"]["conns"] == sizes["conns"], name
        assert row["ratio_to_ceiling"]["fanout"] is not None, name
    for name in REDIS_ROWS:
        cmds = rows[name]["redis_commands"]
        assert set(cmds) == {str(sizes["cmd_subs_low"]), str(sizes["cmd_subs_high"])}, name
        for figure in cmds.values():
            assert figure["complete"], (name, figure)
            # at least one command per published message reached this row's own Redis
            assert figure["commands"] >= figure["messages"], (name, figure)
    for name in ROWS:
        assert f"| {name} |" in run.stdout
    assert "Redis cmds/msg" in run.stdout
    assert (tmp_path / "results.md").exists()
