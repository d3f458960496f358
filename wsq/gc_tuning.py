"""The cyclic garbage collector of a serving process (``wsq serve``, every worker).

Measured (bench/scale.py, 3,000 subscribed sockets, one message a time to all, py-spy with
native frames): 54 % of the server's samples were in ``gc_collect_main``, reached from the
allocation of the write task each delivery starts (``Peer._wake_writer``). A broadcast creates
one task per socket before any runs, so at CPython's default thresholds (700, 10, 10) they are
still pending at the young collections, survive into the oldest generation and make it due for
a full collection (which walks every socket's objects, ~0.3 s at 3,000 sockets on this machine)
every few broadcasts: 9 full collections and 4.6 s of the run's CPU in the collector. With the
objects of the start frozen and a young generation of 20,000, the broadcasts' transient objects
mostly die before they are collected: one full collection, 0.35 s in the collector, the server's
CPU per delivery 40 -> 30 us and the p99 to reach all 557 -> 315 ms (docs/performance.md,
"Scale").

What it costs: garbage in reference cycles (a closed socket's objects) waits for a collection
longer: at most 20,000 net allocations for the young generation, and a full collection at most
every 10 x 10 x 20,000 (the full collection still needs a quarter of the long-lived objects to
be new, as before). The frozen objects are those of the imports and the app, which live as long
as the process anyway.
"""

from __future__ import annotations

import gc

#: gen0 (net allocations), gen1 and gen2 (collections of the younger one) thresholds
THRESHOLDS = (20_000, 10, 10)


def tune_collector() -> None:
    """Freeze what exists now (the imports and the app: never garbage, never walked again) and
    raise the young generation's threshold. For the process that serves, once, after the app is
    made: not for a program that embeds wsq (its collector is its own)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
