"""A/B of websockets' ``PerMessageDeflate.encode`` on wsq.v1 batches as the bench sends them
(100 transfers of ~100-byte bodies, ~23 KB): zlib level 6 (websockets' default) against level 1,
context kept and not, 4 KiB window, ``memLevel`` 5; best of 7, interleaved. Prints CPU µs and
bytes per delivery for each (docs/performance.md, "Browser-real rows").

Usage: python bench/deflate_micro.py
"""

from __future__ import annotations

import time

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

PER_BATCH = 100


def batch(start: int) -> bytes:
    parts = []
    for i in range(start, start + PER_BATCH):
        body = f'{{"b@":{i},"t":1764739200123.456,"p":"{"x" * 48}"}}'
        parts.append(
            f'{{"op":"transfer","ch":1,"handle":0,"delivery":{i},"id":"1764739200123-{i}",'
            f'"settled":true,"body":{body},"props":{{"ts":1764739200123,"publisher":"bench"}}}}'
        )
    return ("[" + ",".join(parts) + "]").encode()


def main() -> None:
    batches = [batch(k * PER_BATCH) for k in range(100)]
    variants = {  # name: (level, no context takeover)
        "level 6, context kept": (6, False),
        "level 1, context kept": (1, False),
        "level 6, no context": (6, True),
        "level 1, no context": (1, True),
    }
    best = dict.fromkeys(variants, float("inf"))
    size = dict.fromkeys(variants, 0)
    for _ in range(7):
        for name, (level, no_context) in variants.items():
            ext = PerMessageDeflate(False, no_context, 12, 12, {"memLevel": 5, "level": level})
            t0 = time.perf_counter()
            out = sum(len(ext.encode(Frame(Opcode.TEXT, b)).data) for b in batches)
            best[name] = min(best[name], time.perf_counter() - t0)
            size[name] = out
    n = len(batches) * PER_BATCH
    for name in variants:
        print(f"{name:24s} {best[name] / n * 1e6:.3f} us/delivery  {size[name] / n:.1f} B/delivery")


if __name__ == "__main__":
    main()
