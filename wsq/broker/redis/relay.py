"""The relay on Redis: one Pub/Sub connection per process for the HTTP streams it holds.

A stream's channel is subscribed while the stream lasts; a POST that another process took is
PUBLISHed there, and PUBLISH's count (receivers) says at once whether any process holds the
stream. On a cluster, classic Pub/Sub on the node the URL names (every process subscribes and
publishes there, so the count is right; a cluster would broadcast it to every node otherwise).

The connection is made at the first stream, not at start: a node that serves none holds none.
After a lost connection the reader subscribes every channel again; what was published
meanwhile is lost (Pub/Sub is at most once), and the stream's sequence numbers then keep what
came later waiting until the idle timeout ends the connection (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import BlockingConnectionPool

from wsq.background import stop
from wsq.broker.redis.client import DOWN, unavailable, write_at_once
from wsq.broker.relay import Deliver, Relay

log = logging.getLogger(__name__)

#: Connections for PUBLISHes of this process (the subscription has one of its own).
MAX_CONNECTIONS = 16
#: Seconds of silence before the reader PINGs its connection.
HEARTBEAT_S = 5.0
#: How long a stream waits for Redis to confirm its subscription.
SUBSCRIBE_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 2.0


class RedisRelay(Relay):
    def __init__(self, url: str) -> None:
        # redis+cluster://host:port: plain Pub/Sub on that node (see the module's comment).
        self._url = "redis://" + url.split("://", 1)[1] if url.startswith("redis+") else url
        self._redis: Redis | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._listeners: dict[str, Deliver] = {}
        # Subscriptions Redis has not confirmed yet (on this connection).
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._connected = asyncio.Event()

    def _client(self) -> Redis:
        if self._redis is None:
            pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=MAX_CONNECTIONS,
                timeout=5.0,
                socket_timeout=HEARTBEAT_S * 2,
                socket_connect_timeout=2.0,
            )
            pool.connection_class = write_at_once(pool.connection_class)
            self._redis = Redis(connection_pool=pool)
            self._reader = asyncio.get_running_loop().create_task(self._read_forever())
        return self._redis

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        await stop([reader])
        redis, self._redis = self._redis, None
        if redis is not None:
            await redis.aclose(close_connection_pool=True)
        self._listeners.clear()

    async def listen(self, channel: str, deliver: Deliver) -> None:
        self._client()
        self._listeners[channel] = deliver
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await self._connected.wait()
                pubsub = self._pubsub
                assert pubsub is not None
                confirmed = self._confirm[channel] = asyncio.get_running_loop().create_future()
                await pubsub.subscribe(channel)
                await confirmed
        except (TimeoutError, *DOWN) as exc:
            self._listeners.pop(channel, None)
            raise unavailable(exc) from exc
        finally:
            self._confirm.pop(channel, None)

    async def forget(self, channel: str) -> None:
        if self._listeners.pop(channel, None) is None:
            return
        pubsub = self._pubsub
        if pubsub is not None:
            with contextlib.suppress(*DOWN):
                await pubsub.unsubscribe(channel)

    async def send(self, channel: str, payload: bytes) -> bool:
        try:
            receivers: Any = await self._client().publish(channel, payload)
        except DOWN as exc:
            raise unavailable(exc) from exc
        return bool(receivers)

    async def _read_forever(self) -> None:
        backoff = 0.05
        while True:
            redis = self._redis
            if redis is None:
                return
            pubsub = redis.pubsub()
            try:
                # A subscription of its own keeps the connection in Pub/Sub mode while no
                # stream is held; then every stream's channel again (after a reconnection).
                await pubsub.subscribe("wsq:relay:keep", *self._listeners)
                self._pubsub = pubsub
                self._connected.set()
                backoff = 0.05
                while True:
                    message = await pubsub.get_message(timeout=HEARTBEAT_S)
                    if message is None:
                        await pubsub.ping()
                        continue
                    self._dispatch(message)
            except DOWN as exc:
                log.warning("the relay's Redis connection failed (%s); reconnecting", exc)
            finally:
                self._connected.clear()
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        raw = message.get("channel")
        channel = raw.decode() if isinstance(raw, bytes) else str(raw)
        if kind == "subscribe":
            confirmed = self._confirm.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif kind == "message":
            deliver = self._listeners.get(channel)
            data = message.get("data")
            if deliver is not None and isinstance(data, bytes):
                try:
                    deliver(data)
                except Exception:
                    log.exception("a relayed POST failed")
