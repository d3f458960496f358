"""bench/run.py's figures from made-up readings: KiB per idle connection is never a negative
number or a garbage collector's doing, and how it reads in the table."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bench_scripts import load

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


bench = load("bench/run.py", "bench_run")


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


# -- targets: named when missed; a full run fails on them, a quick one says it cannot tell ----


def _row(system: str, msgs_per_s: float) -> dict[str, Any]:
    return {
        "system": system,
        "what": system,
        "idle": bench.idle_figures(_idle(50 * MiB, 60 * MiB, 0, conns=1000)),
        "fanout": {"msgs_per_s": msgs_per_s, "cpu_us_per_delivery": 1.0, "complete": True},
        "latency": {"p99_ms": 5.0, "complete": True},
    }


@pytest.fixture
def fake_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows without running anything: wsq-memory at 0.5x the ceiling's fan-out (target 0.6x)."""
    speeds = {"ceiling": 2_000_000.0, "wsq-memory": 1_000_000.0}

    def measure(system: Any, *_args: Any) -> dict[str, Any]:
        return _row(system.name, speeds[system.name])

    monkeypatch.setattr(bench, "measure", measure)


@pytest.mark.usefixtures("fake_rows")
def test_a_full_run_that_misses_a_target_names_it_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--only", "ceiling,wsq-memory", "--out", str(tmp_path), "--no-chart", "--no-pin"]
    assert bench.main(argv) == bench.TARGETS_MISSED == 4
    out, err = capsys.readouterr()
    assert "| fan-out >= 0.6x ceiling | 0.50x | NO |" in out
    last = out[out.index("targets NOT met") :]
    assert last.splitlines()[1] == "  - fan-out >= 0.6x ceiling: 0.50x"
    assert "1 target(s) not met (exit 4)" in err


@pytest.mark.usefixtures("fake_rows")
@pytest.mark.parametrize("size", [["--quick"], ["--subs", "10"]])
def test_a_run_at_other_sizes_says_its_figures_are_not_comparable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], size: list[str]
) -> None:
    argv = ["--only", "ceiling,wsq-memory", "--out", str(tmp_path), "--no-chart", "--no-pin"]
    assert bench.main([*argv, *size]) == 0
    out, _ = capsys.readouterr()
    assert "| NO |" not in out
    assert "| fan-out >= 0.6x ceiling | 0.50x | no |" in out
    assert "not comparable with the targets" in out
    assert "below target at these sizes: fan-out >= 0.6x ceiling (0.50x)" in out


@pytest.mark.usefixtures("fake_rows")
def test_a_full_run_that_meets_its_targets_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "measure", lambda system, *_: _row(system.name, 1_000_000.0))
    argv = ["--only", "ceiling,wsq-memory", "--out", str(tmp_path), "--no-chart", "--no-pin"]
    assert bench.main(argv) == 0
    out, _ = capsys.readouterr()
    assert "targets: all 3 checked are met; 18 not checked" in out


def _browser_row(
    system: str, msgs_per_s: float, cpu: float, wire: float, answer: str
) -> dict[str, Any]:
    row = _row(system, msgs_per_s)
    row["fanout"] |= {"cpu_us_per_delivery": cpu, "wire_bytes_per_delivery": wire}
    row["deflate_offered"] = system != "wsq-memory"
    row["offered"] = "permessage-deflate; client_max_window_bits" if row["deflate_offered"] else ""
    row["extensions"] = answer
    return row


def test_browser_real_rows_are_checked_against_their_targets_and_their_plain_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--only browser expands to the browser-real rows and what they are compared with; the
    targets of issue 18 read wsq-memory-offered (the default setting), the accepted row is
    reported beside, and the offer table puts each row's wire bytes by its plain row's."""
    accepted = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    rows = {
        "ceiling": _browser_row("ceiling", 2_000_000.0, 0.1, 246.0, ""),
        "wsq-memory": _browser_row("wsq-memory", 1_000_000.0, 1.0, 250.0, ""),
        "py-websockets": _browser_row("py-websockets", 250_000.0, 4.0, 102.0, ""),
        "wsq-memory-offered": _browser_row("wsq-memory-offered", 900_000.0, 1.2, 250.0, ""),
        "wsq-memory-deflate": _browser_row("wsq-memory-deflate", 400_000.0, 2.5, 12.5, accepted),
        "py-websockets-deflate": _browser_row(
            "py-websockets-deflate", 200_000.0, 6.0, 11.0, accepted
        ),
    }
    seen: list[str] = []

    def measure(system: Any, *_args: Any) -> dict[str, Any]:
        seen.append(system.name)
        return rows.get(system.name) or _browser_row(system.name, 1.0, 1.0, 1.0, "")

    monkeypatch.setattr(bench, "measure", measure)
    # Nothing is started (measure is the stand-in above): the peers' tools need not be here.
    monkeypatch.setattr(bench, "_have", lambda _tool: True)
    argv = ["--only", "browser", "--out", str(tmp_path), "--no-chart", "--no-pin", "--quick"]
    assert bench.main(argv) == 0
    assert seen == [
        "ceiling",
        "wsq-memory",
        "py-websockets",
        *(name for name, s in bench.SYSTEMS.items() if s.deflate),
    ]
    out, _ = capsys.readouterr()
    assert (
        "| browser-real: wsq-memory-offered fan-out >= 3x py-websockets-deflate | 4.50x | yes |"
        in out
    )
    assert (
        "| browser-real: wsq-memory-offered CPU per delivery <= 1.5x wsq-memory's | 1.20x | yes |"
        in out
    )
    assert (
        "| wsq-memory-deflate: CPU per delivery vs wsq-memory's (report only) | 2.50x | - |" in out
    )
    assert (
        "| wsq-memory-deflate: wire bytes per delivery vs wsq-memory's (report only) | 0.05x | - |"
        in out
    )
    assert (
        "| wsq-memory-deflate | `permessage-deflate; client_max_window_bits` | "
        f"`{accepted}` | 12.5 | wsq-memory | 250.0 |" in out
    )
    assert (
        "| wsq-memory-offered | `permessage-deflate; client_max_window_bits` | none | 250.0 | "
        "wsq-memory | 250.0 |" in out
    )


def test_every_row_is_in_the_smoke_run_or_left_out_by_name() -> None:
    """A new row of the bench is smoked (test_bench_smoke.ROWS) unless it is named as left out."""
    spec = importlib.util.spec_from_file_location(
        "bench_smoke", ROOT / "tests" / "bench" / "test_bench_smoke.py"
    )
    assert spec is not None and spec.loader is not None
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    assert smoke.ROWS | set(smoke.NOT_IN_SMOKE) == set(bench.SYSTEMS)
    assert not smoke.ROWS & set(smoke.NOT_IN_SMOKE)


def _monitor(lines: list[str]) -> Any:
    m = bench.RedisMonitor.__new__(bench.RedisMonitor)
    m.lines = lines
    return m


def test_the_gateways_own_figures_are_counted_apart_within_the_info_window() -> None:
    sys_keys = '"4" "wsq:{%24sys:%24sys.stats}:s" "wsq:{%24sys:%24sys.stats}:m"'
    bench_keys = '"4" "wsq:{dev:bench.cmds10}:s" "wsq:{dev:bench.cmds10}:m"'
    lines = [
        "+OK",
        '+1.0 [0 127.0.0.1:1] "EVALSHA" "abc" ' + sys_keys,  # before the window
        '+1.1 [0 lua] "XADD" "wsq:{%24sys:%24sys.stats}:s" "*"',
        '+2.0 [0 127.0.0.1:9] "INFO" "commandstats"',
        '+2.1 [0 127.0.0.1:1] "EVALSHA" "abc" ' + bench_keys + ' "[\\"a \\\\\\" b\\"]"',
        '+2.2 [0 lua] "TIME"',
        '+2.3 [0 lua] "XADD" "wsq:{dev:bench.cmds10}:s" "*" "b" "1"',
        '+2.4 [0 127.0.0.1:2] "EVALSHA" "abc" ' + sys_keys,
        '+2.5 [0 lua] "TIME"',
        '+2.6 [0 lua] "XADD" "wsq:{%24sys:%24sys.stats}:s" "*"',
        '+2.7 [0 127.0.0.1:3] "XRANGE" "wsq:{dev:bench.cmds10}:s" "(0-0" "+"',
        '+2.8 [0 127.0.0.1:4] "XRANGE" "wsq:{%24sys:%24sys.stats}:s" "-" "+"',
        '+3.0 [0 127.0.0.1:9] "INFO" "commandstats"',
        '+3.1 [0 127.0.0.1:2] "EVALSHA" "abc" ' + sys_keys,  # after it
    ]
    window = _monitor(lines).window()
    assert window == {
        "sys": {"evalsha": 1, "time": 1, "xadd": 1, "xrange": 1},
        "other": {"evalsha": 1, "time": 1, "xadd": 1, "xrange": 1},
    }
