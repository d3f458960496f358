"""Fan-out A/B interleaved round by round: several servers up at once, one fan-out on each in
turn, again and again, so that a shared machine's load falls on every row alike.

    .venv/bin/python bench/credit_ab.py \\
        ceiling-compact,wsq-memory-compact@256,wsq-memory-compact --reps 7 --out bench/out/ab

A row is a ``bench/run.py`` system; ``NAME@N`` runs a wsq row with the sender credit ``N`` (and
``N`` transfers per broker write, which is what the credit bounded before ``max_publish_batch``):
the ``wsq`` it starts is a launcher that sets them in ``wsq.gateway`` and runs ``wsq.cli``
(one process only: not for rows with ``--workers``). Each turn is ``bench/run.py``'s fan-out at
the full sizes (200 subscribers, 2,000 messages in batches of 100, 32 batches in flight, at
least 1 s), two rounds, the better-median one kept as run.py does; the pinning is run.py's.
Prints every turn and, per row, medians and the median of its per-turn ratios to the first row;
writes ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import run

LAUNCHER = """#!{python}
import functools
import sys

import wsq.gateway

wsq.gateway.Limits = functools.partial(
    wsq.gateway.Limits, sender_credit={credit}, max_publish_batch={credit}
)
from wsq.cli import main

sys.exit(main())
"""


def launcher_dir(tmp: Path, credit: int) -> Path:
    """A folder holding a ``wsq`` that grants ``credit`` on sender links."""
    folder = tmp / f"credit-{credit}"
    folder.mkdir(exist_ok=True)
    script = folder / "wsq"
    script.write_text(LAUNCHER.format(python=run.VENV_BIN / "python", credit=credit))
    script.chmod(0o755)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", help="comma-separated: SYSTEM or SYSTEM@CREDIT (wsq rows)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out", type=Path, default=run.ROOT / "bench" / "out" / "credit-ab")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    args = parser.parse_args()
    rows = args.rows.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="credit-ab-"))
    venv_bin = run.VENV_BIN
    results: dict[str, list[dict[str, Any]]] = {row: [] for row in rows}
    with contextlib.ExitStack() as stack:
        servers = {}
        for row in rows:
            name, _, credit = row.partition("@")
            system = run.SYSTEMS[name]
            if credit and (not name.startswith("wsq") or system.workers > 1):
                raise SystemExit(f"{row}: @CREDIT is for one-process wsq rows")
            run.VENV_BIN = launcher_dir(tmp, int(credit)) if credit else venv_bin
            servers[row] = (system, stack.enter_context(run.running(system, args.pin, tmp)))
        run.VENV_BIN = venv_bin
        for rep in range(args.reps):
            for row in rows if rep % 2 == 0 else rows[::-1]:
                system, srv = servers[row]
                spec = {
                    "adapter": srv.adapter,
                    "url": srv.url,
                    "token": srv.token,
                    "size": 100,
                    "timeout": 60.0,
                    "concurrency": 50,
                    "settle_ms": 1000,
                    "deflate": False,
                    "compact": system.compact,
                    "scenario": "fanout",
                    "address": f"bench.ab{rep}",
                    "subs": 200,
                    "messages": 2000,
                    "batch": 100,
                    "window": 32,
                    "rounds": 2,
                    "min_seconds": 1.0,
                }
                load = os.getloadavg()[0]
                f = run._median_round(run.run_loadgen(spec, srv, args.pin))
                turn = {
                    "msgs_per_s": f["msgs_per_s"],
                    "server_cpu_util": f["server_cpu_util"],
                    "generator_cpu_util": f["generator_cpu_util"],
                    "cpu_us_per_delivery": f["cpu_us_per_delivery"],
                    "complete": f["complete"],
                    "load": load,
                }
                results[row].append(turn)
                print(
                    f"{rep} {row}: {turn['msgs_per_s']:,.0f} msg/s, server "
                    f"{turn['server_cpu_util']:.0%}, generator {turn['generator_cpu_util']:.0%}, "
                    f"{turn['cpu_us_per_delivery']:.2f} us/delivery, load {load:.1f}",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    first = rows[0]
    for row, turns in results.items():
        ratios = [
            a["msgs_per_s"] / b["msgs_per_s"] for a, b in zip(turns, results[first], strict=True)
        ]
        print(
            f"{row}: median {statistics.median(t['msgs_per_s'] for t in turns):,.0f} msg/s, "
            f"{statistics.median(t['cpu_us_per_delivery'] for t in turns):.2f} us/delivery, "
            f"x {first} per turn: median {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
