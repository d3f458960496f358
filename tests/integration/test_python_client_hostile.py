"""wsq.client against a gateway that breaks the contract: a small wsq.v1 server in the test (real
sockets, ``websockets.serve``) that misbehaves on its first connection and behaves on the next.
The client must say ``wsq:invalid-frame`` in its close, drop that socket, and reconnect; it must
never hand over more messages than the credit it granted."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from wsq_harness import eventually

from wsq.client import Client, ClientError, Message


def frames(message: str | bytes) -> list[dict[str, Any]]:
    value = json.loads(message)
    return value if isinstance(value, list) else [value]


class FakeGateway:
    """Answers open, begin and attach; on its first socket, then does ``misdeed``."""

    def __init__(self, misdeed: str) -> None:
        self.misdeed = misdeed
        self.sockets = 0
        self.closes: list[dict[str, Any]] = []

    async def handle(self, ws: ServerConnection) -> None:
        self.sockets += 1
        first = self.sockets == 1
        async for message in ws:
            for f in frames(message):
                answer: list[dict[str, Any]] = []
                if f["op"] == "open":
                    answer = [{"op": "open", "node": "fake", "idle": 0, "max_sessions": 8,
                               "max_frame_bytes": 65536, "tenant": "t", "sub": "s",
                               "exp": int(time.time()) + 3600}]  # fmt: skip
                    if first and self.misdeed == "channel":
                        answer.append({"op": "flow", "ch": 42, "handle": 0, "credit": 1})
                elif f["op"] == "begin":
                    answer = [{"op": "begin", "ch": f["ch"]}]
                elif f["op"] == "attach":
                    answer = [{**f, "from": "0-0", "recovered": True}]
                    if first and self.misdeed == "credit":
                        answer += [
                            {"op": "transfer", "ch": f["ch"], "handle": f["handle"],
                             "delivery": i, "id": f"{i + 1}-0", "body": i, "settled": True}
                            for i in range(f["credit"] + 1)
                        ]  # fmt: skip
                elif f["op"] == "close":
                    self.closes.append(f)
                    answer = [{"op": "close"}]
                if answer:
                    with contextlib.suppress(ConnectionClosed):  # the client may be gone
                        await ws.send(json.dumps(answer))


@pytest.mark.parametrize(
    ("misdeed", "says"),
    [("channel", "on a channel that is not begun"), ("credit", "beyond the credit granted")],
)
async def test_a_gateway_that_breaks_the_contract_is_dropped_and_the_client_reconnects(
    misdeed: str, says: str
) -> None:
    fake = FakeGateway(misdeed)
    got: list[Message] = []
    errors: list[ClientError] = []
    async with serve(fake.handle, "127.0.0.1", 0, subprotocols=["wsq.v1"]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        c = Client(f"ws://127.0.0.1:{port}/ws", token="t", reconnect_delay=0.05)
        c.on("error", errors.append)
        async with c:
            if misdeed == "credit":
                await c.subscribe("feed", got.append, credit=3)
            await eventually(lambda: fake.sockets == 2 and c.connected, "reconnected", within=10)
    assert fake.closes[0]["error"]["condition"] == "wsq:invalid-frame"
    assert says in fake.closes[0]["error"]["description"]
    assert errors[0].condition == "wsq:invalid-frame" and says in errors[0].description
    # Beyond the credit: none of that socket's transfers after the violation reached the handler.
    assert len(got) <= 3
