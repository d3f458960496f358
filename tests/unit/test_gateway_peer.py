"""A Peer's own background work, driven without a socket."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest

from wsq.auth import Principal
from wsq.auth.rights import parse_rights
from wsq.broker.memory import MemoryBroker
from wsq.config import Settings
from wsq.gateway import HEARTBEAT_SHARE, MIN_TICK_S, Gateway, Peer
from wsq.node import Node


async def test_a_forced_close_is_not_lost_to_the_garbage_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The event loop holds only weak references to tasks: a task nobody references, parked on a
    # future nobody else holds, is collected and never finishes ("Task was destroyed but it is
    # pending!"). The forced close of a silent client's socket must not be such a task.
    settings = Settings()
    broker = MemoryBroker(settings.storage_policies())
    gateway = Gateway(Node.build(settings, broker, "n"))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    peer = Peer(gateway, {"type": "websocket"}, receive, send)
    reached = asyncio.Event()
    original = Peer._close_socket

    async def close_socket_later(self: Peer, flush: bool = True) -> None:
        # Parked on a future only this coroutine knows (the writer it waits for in real life
        # may end without anyone else holding the close).
        reached.set()
        await asyncio.get_running_loop().create_future()

    monkeypatch.setattr(Peer, "_close_socket", close_socket_later)
    peer._force_close()
    await asyncio.wait_for(reached.wait(), 5)
    gc.collect()
    parked = [t for t in asyncio.all_tasks() if "close_socket_later" in repr(t.get_coro())]
    assert len(parked) == 1, "the forced close was garbage-collected before it finished"
    parked[0].cancel()
    monkeypatch.setattr(Peer, "_close_socket", original)
    peer._force_close()
    for _ in range(100):
        if sent:
            break
        await asyncio.sleep(0.01)
    assert sent == [{"type": "websocket.close", "code": peer._close_code}]
    await gateway.node.hub.close()


def a_peer() -> Peer:
    """An authenticated peer (a token valid for an hour) that has not ticked yet."""
    settings = Settings()
    broker = MemoryBroker(settings.storage_policies())
    gateway = Gateway(Node.build(settings, broker, "n"))

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    peer = Peer(gateway, {"type": "websocket"}, receive, send)
    peer.principal = Principal("t", "a", int(time.time()) + 3600, parse_rights(None))
    return peer


async def test_an_idle_socket_ticks_when_its_heartbeat_is_due_not_at_a_fixed_pace() -> None:
    peer = a_peer()
    idle_s = peer.node.settings.server.idle_ms / 1000
    peer.conn.client_idle_ms = 30_000
    now = peer.loop.time()
    peer.last_recv = peer.last_sent = now
    # Nothing sent since now: the next tick is when our heartbeat is due, within half of the
    # client's idle (the contract's bound), with room to spare for a busy loop.
    due = peer._tick_delay(now, quiet_since=now)
    assert due == pytest.approx(30 * HEARTBEAT_SHARE)
    assert due < 30 / 2
    # Something went out 5 s ago: the heartbeat is due that much sooner.
    assert peer._tick_delay(now, quiet_since=now - 5) == pytest.approx(due - 5)
    # A client silent for nearly our idle: the tick comes when it times out, if that is sooner.
    peer.last_recv = now - idle_s + 1
    assert peer._tick_delay(now, quiet_since=now) == pytest.approx(1)
    # A client that asked for no heartbeats (idle 0): only our idle timeout paces the ticks.
    peer.last_recv = now
    peer.conn.client_idle_ms = 0
    assert peer._tick_delay(now, quiet_since=now) == pytest.approx(idle_s)
    # Never sooner than the shortest tick, even past a deadline.
    assert peer._tick_delay(now, quiet_since=now - 3600) >= MIN_TICK_S
    await peer.node.hub.close()
