"""When to try again: full-jitter exponential backoff for reconnects and link retries, the prompt
return after ``wsq:going-away``, and what counts as a connection that lasted."""

from __future__ import annotations

import random

#: A connection that stayed up this long (s) resets the backoff: one that dies right after its
#: open (a node that accepts and fails) keeps backing off instead of looping.
STABLE_S = 5.0


class Backoff:
    """Attempt n waits a random time in [0, min(ceiling, base * 2**n)) (full jitter, so that a
    crowd of clients that lost the same node does not come back in step)."""

    def __init__(self, base: float, ceiling: float, rng: random.Random | None = None) -> None:
        if base <= 0 or ceiling < base:
            raise ValueError("backoff: 0 < base <= ceiling")
        self.base = base
        self.ceiling = ceiling
        self.attempts = 0  # failed connections since the last stable one (the exponent)
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        ceiling = min(self.ceiling, self.base * 2 ** min(attempt, 30))
        return float(self._rng.random() * ceiling)

    def next(self) -> float:
        """The delay after one more failed connection."""
        delay = self.delay(self.attempts)
        self.attempts += 1
        return delay

    def soon(self) -> float:
        """A draining node: come back promptly (jittered, so its clients spread out)."""
        return self._rng.random() * min(self.base, 1.0)
