"""Whether this gateway process should be sent traffic (``/readyz``), and why not.

Reasons, in the order they are listed: ``starting`` (the lifespan has not started the broker
yet, or has begun to stop), ``draining`` (whatever drains the node said so: ``set_draining``),
``broker-unavailable`` (the last probe of the broker failed: publishes cannot be stored),
``reader-lag`` (a live reader of the broker lags past ``[server] ready_max_lag_ms``).
``/healthz`` stays liveness only: a process that is not ready is still alive.
"""

from __future__ import annotations

import asyncio
import logging

from wsq.broker.base import Broker

log = logging.getLogger("wsq.readiness")

STARTING = "starting"
DRAINING = "draining"
BROKER_UNAVAILABLE = "broker-unavailable"
READER_LAG = "reader-lag"
#: Longest a probe of the broker may take before it counts as failed (s).
PROBE_TIMEOUT_S = 2.0


class Readiness:
    """The flags and the last probe of one process's readiness."""

    def __init__(self, broker: Broker, max_lag_ms: int) -> None:
        self._broker = broker
        self.max_lag_s = max_lag_ms / 1000
        self.started = False
        self.draining = False
        # The last probe's answer (None: never probed); wsq.stats reports it as it is.
        self.broker_ok: bool | None = None

    def set_started(self, started: bool) -> None:
        self.started = started

    def set_draining(self, draining: bool = True) -> None:
        """Take the node out of the load balancer (``/readyz`` 503) while it drains."""
        self.draining = draining

    async def probe(self) -> bool:
        """Ask the broker whether it can take publishes now; remembered in ``broker_ok``."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                ok = await self._broker.ready()
        except Exception as exc:  # a broker that fails to answer is not ready either
            log.debug("broker probe failed: %s", type(exc).__name__)
            ok = False
        self.broker_ok = ok
        return ok

    def reasons(self, lag_s: float) -> list[str]:
        """Why the process is not ready, from the flags, the last probe and ``lag_s``."""
        reasons: list[str] = []
        if not self.started:
            reasons.append(STARTING)
        if self.draining:
            reasons.append(DRAINING)
        if self.started and self.broker_ok is False:
            reasons.append(BROKER_UNAVAILABLE)
        if lag_s > self.max_lag_s:
            reasons.append(READER_LAG)
        return reasons

    async def check(self) -> list[str]:
        """Probe the broker (once started) and answer the reasons: empty when ready."""
        if self.started:
            await self.probe()
        return self.reasons(self._broker.reader_lag_s())
