"""Graceful drain: what a gateway process does between SIGTERM and its exit.

``[server] drain_timeout_ms`` (D) is a promise to whoever sent the signal (an orchestrator, a
deploy script): the process is gone within D. Its steps, each with a share of D
(``DrainPlan``):

1. **Draining** at once: ``/readyz`` goes red (a load balancer's health check takes the node
   out), a new WebSocket upgrade is answered 503 with ``Retry-After: 1`` (``DrainGate``; a proxy
   retries it elsewhere), ``/healthz`` stays 200 and says ``draining`` (the process is alive:
   no restart).
2. **Going away**: every client is told ``wsq:going-away`` (contract section 2), and the drain
   waits for their sockets to close (``clients_s``): a client reconnects, through the proxy,
   to another node and resumes there.
3. **The rest** is closed: sockets still open are cancelled (``force_s``).
4. **The server** stops: the signal goes on to uvicorn, which stops listening and waits for
   requests in flight (bridge publishes among them: a publish is acknowledged only once the
   broker stored it, and one whose request is still running is finished, not dropped), for
   ``server_s`` (``wsq serve`` gives uvicorn that as ``timeout_graceful_shutdown``); then the
   lifespan closes the hub and the broker in what is left.

A **backstop** thread exits the process with ``EXIT_STUCK`` (70, EX_SOFTWARE) at D if it is
still there: a blocked event loop cannot run any of the above, a thread still can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from wsq.gateway import Gateway

log = logging.getLogger("wsq.drain")

#: The process's exit status when the backstop ends it: the drain did not finish in time.
EXIT_STUCK = 70
#: How often, while clients close, the drain looks for sockets accepted since it began.
TELL_LATE_S = 0.05
#: The answer to a WebSocket upgrade while draining.
_REFUSAL = b"draining: this node is shutting down, connect again (elsewhere)\n"
_REFUSAL_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"retry-after", b"1"),
    (b"content-length", str(len(_REFUSAL)).encode()),
]


@dataclass(frozen=True, slots=True)
class DrainPlan:
    """How the deadline is shared among the steps; what is left after ``server_s`` is the
    lifespan's (hub and broker closed)."""

    deadline_s: float

    @classmethod
    def of(cls, drain_timeout_ms: int) -> DrainPlan:
        return cls(drain_timeout_ms / 1000)

    @property
    def clients_s(self) -> float:
        """For clients to close their sockets after ``wsq:going-away``: most of it, since a
        client that reconnects by itself is what a drain is for."""
        return self.deadline_s * 0.5

    @property
    def force_s(self) -> float:
        """For the sockets still open to end once cancelled."""
        return self.deadline_s * 0.15

    @property
    def server_s(self) -> float:
        """For uvicorn to finish the requests in flight (its ``timeout_graceful_shutdown``)."""
        return self.deadline_s * 0.2


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What a drain did, for the log and for tests."""

    told: int  # clients told wsq:going-away
    forced: int  # sockets still open after clients_s, cancelled


class Backstop:
    """A daemon thread that exits the process with ``EXIT_STUCK`` when ``deadline_s`` has
    passed and nobody called ``disarm`` (the process exiting normally ends the thread too)."""

    def __init__(self, deadline_s: float, *, exit: Callable[[int], Any] = os._exit) -> None:
        self.deadline_s = deadline_s
        self._exit = exit
        self._disarmed = threading.Event()
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="wsq-drain-backstop", daemon=True)

    def arm(self) -> None:
        self._thread.start()

    def disarm(self) -> None:
        self._disarmed.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        if self._disarmed.wait(self.deadline_s):
            return
        self.fired = True
        # os.write: the logging machinery may be what holds the loop (a lock), so not through it.
        with contextlib.suppress(OSError):
            os.write(
                2,
                b"wsq: error: the drain did not finish within drain_timeout_ms; exiting with "
                b"status %d\n" % EXIT_STUCK,
            )
        self._exit(EXIT_STUCK)


class Drain:
    """The drain of one process's gateway (see the module). ``on_draining`` is called once,
    when it starts (the application marks itself not ready)."""

    def __init__(
        self,
        gateway: Gateway,
        drain_timeout_ms: int,
        *,
        on_draining: Callable[[], None] | None = None,
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        self.gateway = gateway
        self.plan = DrainPlan.of(drain_timeout_ms)
        self._on_draining = on_draining
        self._exit = exit
        self.draining = False
        self.started_at: float | None = None  # time.monotonic() of begin()
        self.backstop: Backstop | None = None
        self.report: DrainReport | None = None
        # The tasks serving WebSocket connections (DrainGate), for step 3.
        self.sockets: set[asyncio.Task[Any]] = set()
        self._forced: set[asyncio.Task[Any]] = set()
        self._task: asyncio.Task[DrainReport] | None = None

    @property
    def is_draining(self) -> bool:
        return self.draining

    def begin(self, *, backstop: bool = True) -> asyncio.Task[DrainReport]:
        """Start draining (once; a second call answers the same task). ``backstop``: arm the
        thread that ends the process at the deadline (a process that is exiting: not a
        gateway embedded in tests)."""
        if self._task is not None:
            return self._task
        self.draining = True
        self.started_at = time.monotonic()
        if backstop:
            self.backstop = Backstop(self.plan.deadline_s, exit=self._exit)
            self.backstop.arm()
        if self._on_draining is not None:
            self._on_draining()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self._task

    async def _run(self) -> DrainReport:
        gateway = self.gateway
        loop = asyncio.get_running_loop()
        told: set[Any] = set()

        def tell() -> None:
            for peer in list(gateway.peers):
                if peer not in told:
                    told.add(peer)
                    peer.going_away()

        tell()
        log.info(
            "draining: %d client(s) told wsq:going-away; deadline %.1f s",
            len(told),
            self.plan.deadline_s,
        )
        deadline = loop.time() + self.plan.clients_s
        closed = loop.create_task(self._sockets_closed())
        while not closed.done() and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait([closed], timeout=min(remaining, TELL_LATE_S))
            # A socket whose upgrade was under way when the drain began is accepted after it:
            # it is told too.
            tell()
        closed.cancel()
        stragglers = [task for task in self.sockets if not task.done()]
        if stragglers:
            log.warning("draining: %d socket(s) still open, closing them", len(stragglers))
            self._forced.update(stragglers)
            for task in stragglers:
                task.cancel()
            await asyncio.wait(stragglers, timeout=self.plan.force_s)
        self.report = DrainReport(told=len(told), forced=len(stragglers))
        log.info("draining: clients gone; stopping the server")
        return self.report

    async def _sockets_closed(self) -> None:
        """Until every socket is gone: its peer off the gateway, and its task ended (what it
        had in flight, a publish among them, answered)."""
        if self.gateway.peers:  # no_peers is set by the last one leaving, not at start
            await self.gateway.no_peers.wait()
        pending = [task for task in self.sockets if not task.done()]
        if pending:
            await asyncio.wait(pending)

    def forced(self, task: asyncio.Task[Any] | None) -> bool:
        return task is not None and task in self._forced


class DrainGate:
    """ASGI middleware in front of the WebSocket endpoint: while draining, a WebSocket upgrade
    is refused 503 with ``Retry-After: 1`` (or, where the server cannot answer an upgrade with
    an HTTP response, closed with 1013, try again later); otherwise it is served, and its task
    known to the drain (step 3)."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await refuse_upgrade(scope, send)
            return
        task = asyncio.current_task()
        if task is not None:
            self.drain.sockets.add(task)
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if not self.drain.forced(task):
                raise
            # Cancelled by the drain (step 3): an end, not an error for uvicorn to log.
        finally:
            if task is not None:
                self.drain.sockets.discard(task)


async def refuse_upgrade(scope: Scope, send: Send) -> None:
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send(
            {"type": "websocket.http.response.start", "status": 503, "headers": _REFUSAL_HEADERS}
        )
        await send({"type": "websocket.http.response.body", "body": _REFUSAL})
    else:
        await send({"type": "websocket.close", "code": 1013, "reason": "draining"})


def drain_on_signals(drain: Drain) -> Callable[[], None]:
    """On SIGTERM / SIGINT, drain before the server shuts down, then hand the signal on.

    uvicorn's own shutdown closes WebSockets (code 1012) before the application hears of it,
    and stops listening (a proxy's retry of an upgrade finds a closed port, not a 503): so a
    loop-level handler goes in front of uvicorn's. Only where uvicorn installed a handler (the
    main thread of a serving process); elsewhere (a gateway embedded in tests) nothing is
    installed. A second signal goes straight to uvicorn. Answers a function that puts things
    back.
    """
    loop = asyncio.get_running_loop()
    installed: list[tuple[int, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def on_signal(sig: int = sig, previous: Any = previous) -> None:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous)
            task = drain.begin()
            task.add_done_callback(lambda _task: previous(sig, None))

        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append((sig, previous))

    def restore() -> None:
        for sig, previous in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous)

    return restore
