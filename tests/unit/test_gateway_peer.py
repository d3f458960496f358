"""A Peer's own background work, driven without a socket."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from wsq.broker.memory import MemoryBroker
from wsq.config import Settings
from wsq.gateway import Gateway, Peer
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
