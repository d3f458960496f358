"""Stopping background tasks (a lease refresher, a sweeper, a reader): cancelled, and cancelled
again until they end.

A cancellation can be lost: Python 3.11's ``asyncio.wait_for`` returns normally when it is
cancelled just as what it waits for ends (python/cpython gh-86296), and a library may catch
one. A loop whose cancellation was lost runs on, and a close that awaits it waits for ever (a
CI run sat 87 minutes in a broker's close so). ``stop`` cancels again every ``RETRY_S`` until
every task has ended, for at most ``patience_s``; one still running then is logged and left, so
that a close always ends. A task that ended with an error is logged, not raised: a close goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("wsq.background")

#: How long a cancelled task is given before it is cancelled again (s): longer than the cleanup
#: a task does on its way out (a webhook sink gives its held messages back and its turn up,
#: bounded at 2 s), which a second cancellation would cut short.
RETRY_S = 3.0
#: The most ``stop`` waits for its tasks (s).
PATIENCE_S = 15.0


async def stop(
    tasks: Iterable[asyncio.Future[Any] | None],
    patience_s: float = PATIENCE_S,
    retry_s: float = RETRY_S,
) -> None:
    """Cancel ``tasks`` (None entries skipped) and wait until each has ended, cancelling again
    every ``retry_s`` what a lost cancellation left running; at most ``patience_s``."""
    every = [t for t in tasks if t is not None]
    pending = set(every)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            log.warning("%d background tasks did not stop when cancelled", len(pending))
            break
        _, pending = await asyncio.wait(pending, timeout=min(retry_s, left))
    for task in every:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("a background task had failed: %r", task.exception())
