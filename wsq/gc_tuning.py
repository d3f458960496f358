"""The cyclic garbage collector of a serving process (``wsq serve``, every worker).

Measured (bench/scale.py, 3,000 subscribed sockets, one message a time to all, py-spy with
native frames): 54 % of the server's samples were in ``gc_collect_main``, reached from the
allocation of the write task each delivery starts (``Peer._wake_writer``). A broadcast creates
one task per socket before any runs, so at CPython's default thresholds (700, 10, 10) they are
still pending at the young collections, survive into the oldest generation and make it due for
a full collection (which walks every socket's objects, ~0.3 s at 3,000 sockets on this machine)
every few broadcasts: 9 full collections and 4.6 s of the run's CPU in the collector. With the
objects of the start frozen and a young generation of 100,000, a broadcast's transient objects
(a few per socket, alive until the loop's next turn writes them) mostly die before they are
collected: at 19,500 sockets on one process the server's CPU per delivery went 43 -> 28 us and
a broadcast's p99 to reach all 1.47 -> 0.54 s against a young generation of 20,000, which the
~3 objects per socket of a broadcast outgrew (docs/performance.md, "Scale").

What it costs: garbage in reference cycles (a closed socket's objects) waits for a collection
longer: up to 100,000 net allocations for the young generation (a few MB; 0.3 KiB per socket
at 19,500 sockets in the RSS measured), and a full collection at most every 10 x 10 x 100,000
(the full collection still needs a quarter of the long-lived objects to be new, as before). The
frozen objects are those of the imports and the app, which live as long as the process anyway.
"""

from __future__ import annotations

import gc

#: gen0 (net allocations), gen1 and gen2 (collections of the younger one) thresholds
THRESHOLDS = (100_000, 10, 10)


def tune_collector() -> None:
    """Freeze what exists now (the imports and the app: never garbage, never walked again) and
    raise the young generation's threshold. For the process that serves, once, after the app is
    made: not for a program that embeds wsq (its collector is its own)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
