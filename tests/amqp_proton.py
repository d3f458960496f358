"""Test support: python-qpid-proton's AMQP 1.0 engine as a client, driven without sockets
(bytes in with ``feed``, bytes out with ``output``), so that tests can put it in front of
``wsq.amqp.connection.AmqpConnection`` directly or over a real WebSocket (``over_websocket``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import websockets
from proton import Connection, Delivery, Endpoint, Link, Message, Receiver, Sender, Transport


class ProtonClient:
    """One client connection: SASL PLAIN with ``token`` as the password."""

    def __init__(self, token: str, *, idle_timeout: float = 0) -> None:
        self.connection = Connection()
        self.connection.container = "proton-test"
        self.connection.user = "ignored"
        self.connection.password = token
        self.transport = Transport()
        if idle_timeout:
            self.transport.idle_timeout = idle_timeout
        sasl = self.transport.sasl()
        sasl.allowed_mechs("PLAIN")
        sasl.allow_insecure_mechs = True  # the test socket is not TLS
        self.transport.bind(self.connection)
        self.connection.open()
        self.session = self.connection.session()
        self.session.open()
        self._tags = 0

    def output(self) -> bytes:
        pending = self.transport.pending()
        if pending <= 0:
            return b""
        data = bytes(self.transport.peek(pending))
        self.transport.pop(len(data))
        return data

    def feed(self, data: bytes) -> None:
        self.transport.push(data)

    @property
    def opened(self) -> bool:
        return bool(self.connection.state & Endpoint.REMOTE_ACTIVE)

    @property
    def closed(self) -> bool:
        return bool(self.connection.state & Endpoint.REMOTE_CLOSED) or self.transport.closed

    def receiver(
        self,
        address: str,
        *,
        credit: int = 0,
        mode: str | None = None,
        filters: dict[str, Any] | None = None,
    ) -> Receiver:
        rcv = self.session.receiver(f"r-{address}-{self._tags}")
        self._tags += 1
        rcv.source.address = address
        if mode == "move":
            rcv.source.distribution_mode = rcv.source.DIST_MODE_MOVE
        elif mode == "copy":
            rcv.source.distribution_mode = rcv.source.DIST_MODE_COPY
        if filters:
            rcv.source.filter.put_dict(filters)
        rcv.open()
        if credit:
            rcv.flow(credit)
        return rcv

    def sender(self, address: str) -> Sender:
        snd = self.session.sender(f"s-{address}-{self._tags}")
        self._tags += 1
        snd.target.address = address
        snd.open()
        return snd

    def send(self, snd: Sender, message: Message) -> Delivery:
        self._tags += 1
        delivery = snd.delivery(str(self._tags).encode())
        snd.send(message.encode())
        snd.advance()
        return delivery

    @staticmethod
    def received(rcv: Receiver) -> list[tuple[Delivery, Message]]:
        """Every whole delivery waiting on ``rcv``, decoded (not settled)."""
        out = []
        while (d := rcv.current) is not None and d.readable and not d.partial:
            message = Message()
            message.decode(rcv.recv(d.pending))
            rcv.advance()
            out.append((d, message))
        return out

    @staticmethod
    def remote_error(endpoint: Link | Connection) -> tuple[str | None, str | None]:
        condition = endpoint.remote_condition
        if condition is None:
            return None, None
        return condition.name, condition.description


@contextlib.asynccontextmanager
async def over_websocket(url: str, client: ProtonClient) -> AsyncIterator[Callable[..., Any]]:
    """Run ``client`` over a real WebSocket (subprotocol ``amqp``) to ``url``; yields
    ``until(condition, timeout)``, which pumps bytes both ways until ``condition()`` holds."""
    async with websockets.connect(url, subprotocols=["amqp"], max_size=None) as ws:
        assert ws.subprotocol == "amqp"

        async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                if (data := client.output()) and not client.transport.closed:
                    await ws.send(data)
                if condition():
                    return
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise TimeoutError("the condition did not come true")
                try:
                    message = await asyncio.wait_for(ws.recv(), min(left, 0.05))
                except TimeoutError:
                    continue
                except websockets.ConnectionClosed:
                    client.transport.close_tail()
                    if condition():
                        return
                    raise
                assert isinstance(message, bytes), "AMQP over WebSocket is binary"
                client.feed(message)

        yield until
