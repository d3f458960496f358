"""wsq.drain's logic: the shares of the deadline, the backstop, the steps of a drain, and the
gate that refuses upgrades while draining. The end-to-end drain (two gateways behind HAProxy,
SIGTERM) is tests/integration/test_drain.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import httpx
from wsq_harness import make_settings

from wsq.app import create_app
from wsq.drain import EXIT_STUCK, Backstop, Drain, DrainGate, DrainPlan
from wsq.gateway import Gateway


def test_the_plan_shares_the_deadline_and_leaves_room_for_the_broker() -> None:
    plan = DrainPlan.of(8000)
    assert plan.deadline_s == 8.0
    assert (plan.clients_s, plan.force_s, plan.server_s) == (4.0, 1.2, 1.6)
    # What is left (the lifespan: hub and broker closed) is 15 % of it.
    assert round(plan.deadline_s - plan.clients_s - plan.force_s - plan.server_s, 9) == 1.2


def test_the_backstop_exits_with_70_when_the_deadline_passes() -> None:
    codes: list[int] = []
    called = threading.Event()

    def exit(code: int) -> None:
        codes.append(code)
        called.set()

    backstop = Backstop(0.05, exit=exit)
    backstop.arm()
    assert called.wait(5)
    backstop.join(5)
    assert codes == [EXIT_STUCK] == [70]
    assert backstop.fired


def test_a_disarmed_backstop_does_nothing() -> None:
    codes: list[int] = []
    backstop = Backstop(0.2, exit=codes.append)
    backstop.arm()
    backstop.disarm()
    backstop.join(5)
    assert codes == [] and not backstop.fired


class _Peer:
    """A socket as the drain sees it: told going-away, it closes (or, stuck, never does)."""

    def __init__(self, gateway: _Gateway, *, stuck: bool = False) -> None:
        self.gateway = gateway
        self.stuck = stuck
        self.told = 0
        self.done = asyncio.Event()
        # Set: the upgrade is accepted (the peer is on the gateway).
        self.accepted = asyncio.Event()
        self.accepted.set()

    def going_away(self) -> None:
        self.told += 1
        if not self.stuck:
            self.done.set()

    async def serve(self) -> None:
        await self.accepted.wait()
        self.gateway.add(self)
        try:
            await self.done.wait()
        finally:
            self.gateway.remove(self)


class _Gateway:
    def __init__(self) -> None:
        self.peers: set[_Peer] = set()
        self.no_peers = asyncio.Event()
        self.no_peers.set()

    def add(self, peer: _Peer) -> None:
        self.peers.add(peer)
        self.no_peers.clear()

    def remove(self, peer: _Peer) -> None:
        self.peers.discard(peer)
        if not self.peers:
            self.no_peers.set()


async def _serving(drain: Drain, peers: list[_Peer]) -> list[asyncio.Task[None]]:
    """Each peer served through a DrainGate, as uvicorn serves a socket: in a task of its own."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await peers[scope["i"]].serve()

    gate = DrainGate(app, drain)
    tasks = [
        asyncio.create_task(gate({"type": "websocket", "i": i}, _nothing, _nothing))
        for i in range(len(peers))
    ]
    await asyncio.sleep(0)  # each task runs to its first wait: its peer is on the gateway
    assert len(drain.gateway.peers) == sum(peer.accepted.is_set() for peer in peers)
    return tasks


async def _nothing(*args: Any) -> Any:
    return None


async def test_a_drain_tells_every_client_and_waits_for_their_sockets() -> None:
    gateway = _Gateway()
    marked: list[str] = []
    drain = Drain(gateway, 2000, on_draining=lambda: marked.append("draining"))  # type: ignore[arg-type]
    peers = [_Peer(gateway) for _ in range(5)]
    tasks = await _serving(drain, peers)
    assert not drain.is_draining
    report = await drain.begin(backstop=False)
    assert drain.is_draining and marked == ["draining"]
    assert (report.told, report.forced) == (5, 0)
    assert [peer.told for peer in peers] == [1] * 5
    assert all(task.done() and not task.cancelled() for task in tasks)
    assert drain.sockets == set()


async def test_a_drain_closes_the_sockets_still_open_after_the_clients_share() -> None:
    gateway = _Gateway()
    drain = Drain(gateway, 500)  # type: ignore[arg-type]
    peers = [_Peer(gateway), _Peer(gateway, stuck=True), _Peer(gateway)]
    tasks = await _serving(drain, peers)
    report = await drain.begin(backstop=False)
    assert (report.told, report.forced) == (3, 1)
    # The stuck one was cancelled; the gate ended its task quietly (no error for uvicorn).
    assert all(task.done() for task in tasks)
    assert [task.exception() for task in tasks] == [None, None, None]
    assert gateway.peers == set()


async def test_a_socket_accepted_after_the_drain_began_is_told_too() -> None:
    gateway = _Gateway()
    drain = Drain(gateway, 2000)  # type: ignore[arg-type]
    early, late = _Peer(gateway), _Peer(gateway)
    late.accepted.clear()  # its upgrade is under way: served, not yet on the gateway
    tasks = await _serving(drain, [early, late])
    task = drain.begin(backstop=False)
    await asyncio.sleep(0)
    assert (early.told, late.told) == (1, 0)
    late.accepted.set()
    report = await task
    assert (report.told, report.forced) == (2, 0)
    assert (early.told, late.told) == (1, 1)
    assert all(t.done() and not t.cancelled() for t in tasks)


async def test_begin_twice_is_one_drain() -> None:
    drain = Drain(_Gateway(), 1000)  # type: ignore[arg-type]
    first = drain.begin(backstop=False)
    assert drain.begin(backstop=False) is first
    assert (await first).told == 0


async def test_while_draining_an_upgrade_is_refused_503_with_retry_after() -> None:
    drain = Drain(_Gateway(), 1000)  # type: ignore[arg-type]
    served: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        served.append(scope["type"])

    gate = DrainGate(app, drain)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "extensions": {"websocket.http.response": {}}}
    await drain.begin(backstop=False)
    await gate(scope, _nothing, send)
    start, body = sent
    assert start["type"] == "websocket.http.response.start" and start["status"] == 503
    assert (b"retry-after", b"1") in start["headers"]
    assert body["type"] == "websocket.http.response.body"
    assert body["body"].startswith(b"draining")
    # A server without the denial-response extension: a close saying "try again later".
    sent.clear()
    await gate({"type": "websocket"}, _nothing, send)
    assert sent == [{"type": "websocket.close", "code": 1013, "reason": "draining"}]
    # Plain HTTP goes on (/healthz, the bridge): requests in flight finish, health answers.
    await gate({"type": "http"}, _nothing, send)
    assert served == ["http"]


async def test_healthz_says_draining_and_stays_200_and_the_readiness_flag_is_set() -> None:
    app = create_app(make_settings())
    assert isinstance(app.state.gateway, Gateway)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wsq") as http:
        assert app.state.is_draining() is False
        drain: Drain = app.state.drain
        report = await drain.begin(backstop=False)
        assert (report.told, report.forced) == (0, 0)
        answer = await http.get("/healthz")
        assert answer.status_code == 200 and answer.json()["status"] == "draining"
        assert app.state.is_draining() is True
        assert (await http.get("/readyz")).status_code == 503


STUCK = """
import asyncio, time
from wsq.drain import Drain

class Gateway:
    peers = set()
    no_peers = asyncio.Event()

async def main():
    drain = Drain(Gateway(), 500)
    drain.begin()  # the backstop armed, with the real os._exit
    time.sleep(30)  # the event loop blocked: nothing of the drain can run

asyncio.run(main())
"""


def test_a_process_whose_loop_is_stuck_is_ended_by_the_backstop_with_70() -> None:
    done = subprocess.run([sys.executable, "-c", STUCK], capture_output=True, text=True, timeout=20)
    assert done.returncode == EXIT_STUCK == 70
    assert "the drain did not finish within drain_timeout_ms" in done.stderr
