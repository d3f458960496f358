"""The benchmark runs end to end at tiny sizes and reports every row.

No timing is asserted: the figures of a tiny run on a shared machine mean nothing. A peer whose
tool is missing fails this test under CI=true (scripts/bench installs them as root, or exits 3);
elsewhere it is skipped with the bench's message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = {
    "ceiling",
    "ceiling-bare",
    "ceiling-compact",
    "wsq-memory",
    "wsq-memory-compact",
    "wsq-memory-amqp",
    "wsq-redis",
    "wsq-redis-2w",
    "py-websockets",
    "socketio",
    "socketio-redis-2w",
    "node-ws",
    "nats-ws",
    "rabbitmq-stomp",
    "mosquitto-tcp",
    # browser-real: the clients offer permessage-deflate as Chromium does
    "ceiling-deflate",
    "wsq-memory-offered",
    "wsq-memory-deflate",
    "py-websockets-deflate",
}
#: The peers' other browser-real rows take the same path (the generator offering deflate, the
#: peer answering as its own library does) and are left to scripts/bench: the smoke's time is
#: the suite's, and every row costs a few seconds of processes starting.
NOT_IN_SMOKE = ("socketio-deflate", "node-ws-deflate", "nats-ws-deflate", "rabbitmq-stomp-deflate")
#: Chromium 156's offer, byte for byte (a WebSocket from a page, captured at a server)
CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"
#: the browser-real rows whose server declines the offer (wsq's default ws_compression = "off")
DECLINED = {"wsq-memory-offered"}
# the rows that run on a Redis of their own report its commands per published message
REDIS_ROWS = {"wsq-redis", "wsq-redis-2w", "socketio-redis-2w"}
MISSING_TOOLS = 3


@pytest.mark.slow
def test_bench_completes_at_tiny_sizes_and_reports_every_row(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            *(str(ROOT / "scripts" / "bench"), "--tiny", "--out", str(tmp_path)),
            *("--only", ",".join(sorted(ROWS))),
        ],
        capture_output=True,
        text=True,
        timeout=600,  # a loaded machine: a bound on a hang, not a figure
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
            # MONITOR saw the window INFO commandstats counted (the $sys.stats split is its)
            assert figure["monitor_commands"] == figure["commands"], (name, figure)
            assert figure["per_message_net"] <= figure["per_message"], (name, figure)
    for name, row in rows.items():
        # every row's subscribers read something off their sockets for what they got
        assert row["fanout"]["wire_bytes_per_delivery"] > 0, name
        if not name.endswith(("-deflate", "-offered")):
            assert row["deflate_offered"] is False, name
            assert not row["offered"] and not row["extensions"], name
            continue
        assert row["deflate_offered"] is True, name
        assert row["offered"] == CHROMIUM_OFFER, name
        if name in DECLINED:
            assert row["extensions"] == "", name
        else:
            assert row["extensions"].startswith("permessage-deflate"), (name, row["extensions"])
    # the same bodies, the same envelopes: compressed, wsq's deliveries take fewer bytes on the
    # wire than uncompressed; declined, as many as without the offer (byte counts, no timing)
    wire = {n: r["fanout"]["wire_bytes_per_delivery"] for n, r in rows.items()}
    assert wire["wsq-memory-deflate"] < wire["wsq-memory"] / 2
    assert wire["py-websockets-deflate"] < wire["py-websockets"]
    assert wire["wsq-memory-offered"] > wire["wsq-memory-deflate"] * 2
    for name in ROWS:
        assert f"| {name} |" in run.stdout
    assert f"| wsq-memory-deflate | `{CHROMIUM_OFFER}` | `permessage-deflate;" in run.stdout
    assert "Redis cmds/msg" in run.stdout
    assert (tmp_path / "results.md").exists()


def _digests(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(f.relative_to(folder)): (
            hashlib.sha256(f.read_bytes()).hexdigest(),
            f.stat().st_mtime_ns,
        )
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


@pytest.mark.slow
def test_bench_without_out_leaves_the_committed_reference_alone(tmp_path: Path) -> None:
    """`scripts/bench --quick` as a new user runs it: results in bench/out/ (git-ignored), and
    bench/results/ (the committed reference of docs/performance.md) untouched."""
    reference, out = ROOT / "bench" / "results", ROOT / "bench" / "out"
    before = _digests(reference)
    assert "results.json" in before
    saved = tmp_path / "saved-out"
    if out.exists():  # a run of the user's own: put back afterwards
        shutil.move(out, saved)
    try:
        run = subprocess.run(
            [str(ROOT / "scripts" / "bench"), "--quick", "--only", "ceiling", "--no-chart"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        if run.returncode == MISSING_TOOLS and os.environ.get("CI") != "true":
            pytest.skip((run.stderr.strip().splitlines() or ["bench: missing tools"])[-1])
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert _digests(reference) == before
        assert json.loads((out / "results.json").read_text())["preset"] == "quick"
        assert (out / "results.md").exists()
        # it says where it wrote
        assert "results: bench/out/results.json" in run.stdout
        assert "bench/results/ are untouched" in run.stdout
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if saved.exists():
            shutil.move(saved, out)
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "bench/out/results.json"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "bench/out/ is git-ignored"


@pytest.mark.slow
def test_queue_fairness_part_completes_and_leaves_the_rows_results_alone(tmp_path: Path) -> None:
    """`scripts/bench --only fairness --tiny`: every run of bench/queue_fairness.py finishes and
    reports each consumer's jobs; no row runs, so no results.json is written. How fairly the jobs
    are shared is a figure to read (docs/performance.md), not asserted here."""
    if shutil.which("redis-server") is None and os.environ.get("CI") != "true":
        pytest.skip("redis-server is not installed")
    run = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--only", "fairness", "--tiny", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert not (tmp_path / "results.json").exists()
    doc = json.loads((tmp_path / "queue_fairness.json").read_text())
    assert doc["runs"]
    for r in doc["runs"]:
        assert r["error"] is None, r
        assert r["accepted"] == r["jobs"] == sum(r["per_consumer"]), r
        assert len(r["per_consumer"]) == r["consumers"], r
    assert "| memory | 1 | 2 | 10 |" in (tmp_path / "queue_fairness.md").read_text()
