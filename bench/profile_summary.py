"""Summarise a py-spy ``--format raw`` profile (``scripts/bench --profile`` writes them):
the functions with the largest share of samples, by self time and by total (inclusive) time.

Usage: python bench/profile_summary.py bench/out/profiles/wsq-memory-fanout.txt [--top 20]
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_IDLE = re.compile(r"\((?:selectors|asyncio/base_events)\.py:\d+\)$")


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def frame_name(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``path/file.py:func`` (line numbers merged)."""
    m = re.match(r"(.*) \((.*?):\d+\)$", frame)
    return f"{m.group(2)}:{m.group(1)}" if m else frame


def summarise(stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(n for _, n in stacks)
    self_time: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        names = [frame_name(f) for f in frames]
        self_time[names[-1]] += n
        for name in set(names):
            incl[name] += n
    lines = [f"{total} samples", "", "self time (where the CPU is):"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in self_time.most_common(top)]
    lines += ["", "total time, project code only (wsq/):"]
    ours = [(k, v) for k, v in incl.most_common() if k.startswith("wsq/")]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in ours[:top]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    print(summarise(load(args.profile), args.top))


if __name__ == "__main__":
    main()
