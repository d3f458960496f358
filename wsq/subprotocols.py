"""The WebSocket subprotocols the gateway speaks, and the protocol object of each: wsq.v1
(JSON text messages, ``wsq.protocol``) and AMQP 1.0 (binary messages, ``wsq.amqp``). Both
hand the gateway the same events and serve the same hub."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from wsq.amqp.connection import DRAIN_WAIT_S, AmqpConnection
from wsq.amqp.connection import SUBPROTOCOL as AMQP
from wsq.core.errors import InvalidFrame
from wsq.framelog import describe_message
from wsq.protocol.connection import ServerConnection

if TYPE_CHECKING:
    from wsq.gateway import Gateway
    from wsq.hub import Hub
    from wsq.protocol.state import Link

WSQ_V1 = "wsq.v1"

log = logging.getLogger("wsq.gateway")

Connection = ServerConnection | AmqpConnection


def choose(offered: Sequence[str]) -> str | None:
    """The subprotocol to answer a handshake with: wsq.v1 first, else amqp; None if neither."""
    if WSQ_V1 in offered:
        return WSQ_V1
    return AMQP if AMQP in offered else None


def connection(
    subprotocol: str | None, gateway: Gateway, on_output: Callable[[], None]
) -> Connection:
    """The protocol object of a socket that speaks ``subprotocol`` (wsq.v1 if none), with the
    gateway's limits, error counts and running figures. AMQP's open names the node and the idle timeout before
    it may know the token (wsq.amqp.cbs)."""
    limits, errors, figures = gateway.limits, gateway.errors, gateway.figures
    if subprotocol == AMQP:
        node = gateway.node
        return AmqpConnection(
            limits,
            on_output=on_output,
            errors=errors,
            node=node.node_id,
            idle_ms=node.settings.server.idle_ms,
            figures=figures,
        )
    return ServerConnection(limits, on_output=on_output, errors=errors, figures=figures)


def credit_granted(conn: Connection, link: Link, hub: Hub) -> None:
    """The client granted credit: the hub delivers. An AMQP client that drains gets its
    answer once the hub has had ``DRAIN_WAIT_S`` to deliver what it can."""
    hub.credit(link)
    if isinstance(conn, AmqpConnection) and getattr(link, "drain", False):
        asyncio.get_running_loop().call_later(DRAIN_WAIT_S, conn.drain_done, link)


def receive(conn: Connection, message: MutableMapping[str, Any], peer: int) -> None:
    """Hand one received WebSocket message to the protocol object, as its protocol carries
    it: text for wsq.v1, binary for AMQP's WebSocket binding."""
    if isinstance(conn, AmqpConnection):
        data = message.get("bytes")
        if data is None:
            conn.close(InvalidFrame("AMQP over WebSocket is carried in binary messages"))
        else:
            conn.receive_data(data)
        return
    text = message.get("text")
    if text is None:
        conn.close(InvalidFrame("messages must be UTF-8 JSON text"))
        return
    if log.isEnabledFor(logging.DEBUG):
        log.debug("peer %d < %s", peer, describe_message(text))
    conn.receive_text(text)


def sent(data: str | bytes, peer: int) -> None:
    """Log a written message at debug level (its shape, never its content)."""
    if isinstance(data, str):
        log.debug("peer %d > %s", peer, describe_message(data))
    else:
        log.debug("peer %d > %d bytes", peer, len(data))
