"""The process's connections to Redis (one server or a cluster), and the one way commands go.

Two clients: ``redis`` for reads, claims, settles and polls, which redis-py retries after a
connection error (they are idempotent, or a settle checks ownership), and ``once`` for the
publish script, with every retry off. A publish whose answer was lost after it ran would
otherwise be run again and store its messages a second time (those without a message_id have
nothing to dedup them); instead the caller gets ``BrokerUnavailable`` and retries with its
message_ids. MOVED and ASK redirections, which mean the script did not run, are still followed.

Every command passes ``Gate``: at most ``MAX_CONNECTIONS`` in flight, and a disconnect that
redis-py lets through raw (redis-py#4287) becomes the connection error it is.

A command is written to the socket when it is sent (``WriteAtOnce``), not on a later turn of
the event loop behind whatever else was queued there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import redis as redis_package
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ClusterError, RedisClusterException, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsq.broker.redis.entries import raw_reply
from wsq.broker.redis.scripts import ENTRY_SCRIPTS, source
from wsq.core.errors import BrokerUnavailable

#: Connections to Redis per process (one of them holds the subscription).
MAX_CONNECTIONS = 64
#: Connection errors: Redis is down or unreachable (a cluster: a slot without a master, too).
DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterError,
    RedisClusterException,
    TryAgainError,
)

#: Where a transport race surfaces: redis-py's own code and asyncio's streams and transports.
_TRANSPORT_DIRS = tuple(
    os.path.dirname(m.__file__ or "") + os.sep for m in (redis_package, asyncio)
)


def unavailable(exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(f"Redis is unavailable: {exc}")


def _leaked_disconnect(exc: BaseException) -> bool:
    """``exc`` is a connection closed under a command that redis-py let through raw.

    redis-py (8.1 and before, redis-py#4287, fixed by #4288) writes through ``self._writer``
    without checking it: a command on a connection that another task disconnects meanwhile
    raises ``AttributeError: 'NoneType' object has no attribute 'writelines'`` (and on some
    Pythons a peer-reset transport raises ``TypeError``). The async cluster client disconnects
    every connection of every node when one command meets ``CLUSTERDOWN`` (the few seconds of a
    failover), so the other commands in flight at that moment fail this way. Only such errors
    raised inside redis-py or asyncio count; ours stay bugs.
    """
    if not isinstance(exc, (AttributeError, TypeError)):
        return False
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_TRANSPORT_DIRS)


class Gate:
    """Every command of the process passes here: at most ``limit`` in flight (the cluster
    client raises rather than waits past its connections), and a disconnect redis-py lets
    through raw becomes the ``ConnectionError`` it is (``_leaked_disconnect``), so callers
    answer ``BrokerUnavailable`` and the live reader retries instead of stopping."""

    __slots__ = ("_sem",)

    def __init__(self, limit: int) -> None:
        self._sem = asyncio.Semaphore(limit)

    async def __aenter__(self) -> None:
        await self._sem.acquire()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sem.release()
        if exc is not None and _leaked_disconnect(exc):
            raise RedisConnectionError(f"connection closed under a command ({exc!r})") from exc


class WriteAtOnce(AbstractConnection):
    """A redis-py connection that writes a command as soon as it is sent, and never loses the
    cancellation of the task sending it.

    With a ``socket_timeout``, redis-py sends through ``asyncio.wait_for(
    self._send_packed_command(command))``. On Python 3.11 ``wait_for`` runs that coroutine as
    a task, so the bytes leave on the loop's next turn, after every callback already queued:
    in a gateway that is the flush of a fan-out to every socket (milliseconds), so Redis got a
    publish only once the previous batch was written, and the gateway then waited for its
    answer instead of having it (docs/performance.md, "Redis against memory"). And 3.11's
    ``wait_for`` returns normally when it is cancelled just as the write ends (python/cpython
    gh-86296, rewritten in 3.12), which for a write that needs no drain is nearly every time:
    the cancellation is lost, and a task that loops over commands (a lease refresher) is never
    stopped, so whoever awaits its end waits for ever (a CI run sat 87 minutes in a broker's
    close this way). Here the bytes are written at once and only the ``drain`` (which waits
    when the transport is full) is timed, with ``asyncio.timeout``, which keeps a
    cancellation. What follows a failed write is redis-py's: the connection is dropped and the
    error raised as its own."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        try:
            writer = self._writer
            if writer is None or writer.transport.is_closing():
                # redis-py#4287: a connection another task disconnected meanwhile, or one the
                # server closed (writing to it would only log asyncio's warnings).
                raise RedisConnectionError("connection closed under a command")
            if isinstance(command, str):
                command = command.encode()
            writer.writelines([command] if isinstance(command, bytes) else command)
            if self.socket_timeout:
                async with asyncio.timeout(self.socket_timeout):
                    await writer.drain()
            else:
                await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # A write cut short (cancelled, the connection gone): what was sent of the command
            # is unknown, so the connection cannot be used again.
            await self.disconnect(nowait=True)
            raise


_WRITE_AT_ONCE: dict[type[AbstractConnection], type[AbstractConnection]] = {}


_Conn = TypeVar("_Conn", bound=AbstractConnection)


def write_at_once(cls: type[_Conn]) -> type[_Conn]:
    """``cls`` (the pool's class for its URL: TCP, TLS or Unix socket; a cluster node's) with
    ``WriteAtOnce``."""
    if issubclass(cls, WriteAtOnce):
        return cls
    made = _WRITE_AT_ONCE.get(cls)
    if made is None:
        made = _WRITE_AT_ONCE[cls] = type(cls.__name__, (WriteAtOnce, cls), {})
    return cast("type[_Conn]", made)


class RedisClients:
    """The clients of one broker process, for ``redis://``, ``rediss://`` or ``redis+cluster://``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cluster = urlsplit(url).scheme.lower() == "redis+cluster"
        # Notices: sharded on a cluster, so each goes to its slot's shard only.
        self.publish_verb = "SPUBLISH" if self.cluster else "PUBLISH"
        self.gate = Gate(MAX_CONNECTIONS)
        self.node_kwargs: dict[str, Any] = {}  # credentials for connections to cluster nodes
        self._redis: Redis | RedisCluster | None = None
        self.once: Redis | RedisCluster | None = None
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def redis(self) -> Redis | RedisCluster:
        if self._redis is None:
            raise BrokerUnavailable("the broker is not started")
        return self._redis

    def cluster_client(self) -> RedisCluster:
        r = self.redis
        assert isinstance(r, RedisCluster)
        return r

    def start(self) -> None:
        if self._redis is not None:
            return
        self._redis = self._connect(retries=2)
        self.once = self._connect(retries=0)
        # Entries as Redis sends them, [id, [field, value, …]]: ``entry_message`` reads the flat
        # fields itself (redis-py's parser would build a dict per entry for nothing).
        for command in ("XRANGE", "XREVRANGE"):
            self._redis.set_response_callback(command, raw_reply)
        for name in ENTRY_SCRIPTS:
            self._scripts[name] = self._redis.register_script(source(name))

    def _connect(self, retries: int) -> Redis | RedisCluster:
        """A client; ``retries``: times redis-py sends a command again after a connection error
        or timeout (only for what may safely run twice)."""
        if not self.cluster:
            # Bounded: a burst of reads waits for a connection rather than opening thousands.
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=MAX_CONNECTIONS,
                timeout=5.0,
                decode_responses=True,
                protocol=2,  # scripts answer RESP2 arrays; one shape to parse
                socket_timeout=5.0,
                socket_connect_timeout=2.0,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries),
            )
            pool.connection_class = write_at_once(pool.connection_class)
            return Redis(connection_pool=pool)
        # redis+cluster://[user:password@]host:port: any node; the client learns the others.
        parts = urlsplit(self.url)
        if parts.username:
            self.node_kwargs["username"] = unquote(parts.username)
        if parts.password:
            self.node_kwargs["password"] = unquote(parts.password)
        # The cluster client raises (rather than waits) past max_connections per node: the
        # gate keeps every command of this process within it.
        client = RedisCluster(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            max_connections=MAX_CONNECTIONS,
            decode_responses=True,
            protocol=2,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            # Node connections never retry (redis-py sets that); the cluster level, which
            # refreshes the slot map and sends the command again, keeps its default unless
            # retries are off. Redirections (MOVED, ASK: the command did not run) are followed
            # either way.
            retry=None if retries else Retry(NoBackoff(), 0),
            **self.node_kwargs,
        )
        # The cluster client takes no connection class: its nodes are made from the kwargs its
        # manager keeps (the seed node already was), so both get ``WriteAtOnce`` here.
        manager = client.nodes_manager
        made: type[Connection] = write_at_once(manager.connection_kwargs["connection_class"])
        manager.connection_kwargs["connection_class"] = made
        for node in manager.startup_nodes.values():
            node.connection_class = made
        return client

    def node_client(self, host: str, port: int, socket_timeout: float) -> Redis:
        """A plain client of one cluster node (the live reader's sharded subscription there)."""
        # No retries inside redis-py: a broken connection must reach the reader's loop, which
        # subscribes everything again on a new one (redis-py's own resubscription would send
        # every shard channel in one SSUBSCRIBE, which Redis refuses across slots).
        client = Redis(
            host=host,
            port=port,
            decode_responses=True,
            protocol=2,
            socket_timeout=socket_timeout,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
            **self.node_kwargs,
        )
        pool = client.connection_pool
        pool.connection_class = write_at_once(pool.connection_class)
        return client

    async def close(self) -> None:
        for r in (self._redis, self.once):
            if isinstance(r, RedisCluster):
                await r.aclose()
            elif r is not None:
                await r.aclose(close_connection_pool=True)
        self._redis = self.once = None

    async def ready(self) -> bool:
        """Redis answers: the server, or on a cluster every primary (any address may live on
        any of them)."""
        r = self._redis
        if r is None:
            return False
        try:
            async with asyncio.timeout(2.0), self.gate:
                if isinstance(r, RedisCluster):
                    await r.initialize()
                    primaries = r.get_primaries()
                    answers = [
                        await r.execute_command("PING", target_nodes=node) for node in primaries
                    ]
                    return bool(primaries) and all(answers)
                return bool(await r.ping())
        except (RedisError, RedisClusterException, OSError, TimeoutError):
            return False

    async def run(
        self, script: str, keys: Sequence[str], args: Sequence[Any], *, once: bool = False
    ) -> Any:
        """Run a registered script; ``once``: on the client that never sends it twice."""
        try:
            async with self.gate:
                return await self._scripts[script](
                    keys=keys, args=args, client=self.once if once else None
                )
        except DOWN as exc:
            raise unavailable(exc) from exc
        except KeyError as exc:
            raise BrokerUnavailable("the broker is not started") from exc
