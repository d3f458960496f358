"""The live reader: ONE Pub/Sub subscription per process (per primary on a cluster) for every
stream this process tails or watches, and one read per notice.

A notice (``…:p``, the newest position after each publish) makes the process read that stream
once from its cursor (XRANGE; notices that arrive meanwhile coalesce into one more read), so
Redis work per message is one read per process, never per subscriber, and does not grow with
the number of streams read (a blocking XREAD over K keys costs O(K) per wake-up:
docs/design.md has the numbers). Each subscription Redis confirms, after a (re)connection too,
triggers a read from the cursor: nothing published before the subscription held, or during an
outage, is lost or repeated. The reader retries forever with backoff and PINGs a silent
connection. The notice ``r:<group>`` tells the group's watchers that messages were released.

The same channels carry presence: ``v:<version>``, sent by the presence script at each change
of the address's room, goes to the room's watcher in this process (``watch_room``), which reads
the room then; each (re)subscription tells it too (``None``), since notices sent while the
subscription did not hold are lost. A room watched here keeps its channel subscribed whether
or not the stream is read.

A publish of this process passes its own new entries on without reading them back when the
reader had passed on exactly what came before them (``pass_on_own``).

The module is longer than 600 lines: its one subscription serves streams, groups and presence
rooms, and its connection loops and their bookkeeping are one state machine best read whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from wsq.background import stop
from wsq.broker.base import Tail, Watchers, fan_out
from wsq.broker.redis.client import DOWN, RedisClients
from wsq.broker.redis.entries import entry_message, flat_row
from wsq.broker.redis.keys import address_base, group_keys
from wsq.broker.redis.scripts import retention
from wsq.core.errors import BrokerUnavailable
from wsq.core.messages import Message, Published
from wsq.core.policy import StoragePolicies
from wsq.core.positions import parse_position

log = logging.getLogger(__name__)

#: Entries one XRANGE returns per stream (more come on the next, immediate, call).
READ_COUNT = 512
#: Seconds of silence on the subscription before the reader PINGs (3 unanswered: reconnect).
HEARTBEAT_S = 5.0
#: Longest pause between reconnection attempts of the live reader (s).
MAX_BACKOFF_S = 2.0
#: Seconds between refreshes of a cluster's slot map when nothing asks for one sooner.
TOPOLOGY_S = 30.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class Stream:
    """A stream this process reads live: its tails, its watched groups, one cursor."""

    __slots__ = (
        "address",
        "again",
        "behind_pos",
        "behind_since",
        "channel",
        "cursor",
        "groups",
        "key",
        "meta",
        "noticed",
        "notified",
        "publishing",
        "pulling",
        "tails",
        "tenant",
    )

    def __init__(self, tenant: str, address: str, cursor: str | None) -> None:
        base = address_base(tenant, address)
        self.tenant = tenant
        self.address = address
        self.key = f"{base}:s"
        self.meta = f"{base}:m"
        self.channel = f"{base}:p"
        self.pulling = False  # a read of the stream is in flight
        self.again = False  # notified meanwhile: read once more
        # The newest id the reader has passed on; None until known (then: the newest).
        self.cursor = cursor
        self.tails: list[Tail] = []
        self.groups: list[GroupWatch] = []
        # Newest id whose publish this process told the group watchers of itself.
        self.notified = (0, 0)
        # Publishes of this process to the stream awaiting Redis's answer, and the newest
        # notice that came meanwhile: the answer may pass it on itself, no read needed.
        self.publishing = 0
        self.noticed = (0, 0)
        # Since when (monotonic s; 0: not) a notice named a position the reader has not passed
        # on yet, and the newest such position: the reader's lag (``LiveReader.lag_s``).
        self.behind_since = 0.0
        self.behind_pos = (0, 0)


class GroupWatch:
    """The watchers of one consumer group in this process, and its one timer."""

    __slots__ = ("group", "keys", "stream", "timer", "timer_at", "watchers")

    def __init__(self, stream: Stream, group: str) -> None:
        self.stream = stream
        self.group = group
        base = address_base(stream.tenant, stream.address)
        self.keys = (stream.key, *group_keys(base, group))
        self.watchers = Watchers()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0


class Feed:
    """One Pub/Sub connection of the live reader: to the Redis server (``node`` None), or to
    one primary of a cluster, subscribed to the sharded channels of the slots it owns."""

    __slots__ = ("node", "ps", "resync", "subscribed", "tasks")

    def __init__(self, node: str | None) -> None:
        self.node = node
        self.ps: PubSub | None = None
        self.subscribed: set[str] = set()  # channels asked for on ``ps``
        self.resync = asyncio.Event()  # the channels wanted here may have changed
        self.tasks: list[asyncio.Task[None]] = []


class LiveReader:
    """The streams this process reads live, and the subscription connections that say when."""

    def __init__(self, clients: RedisClients, policies: StoragePolicies) -> None:
        self._clients = clients
        self._policies = policies
        self.streams: dict[tuple[str, str], Stream] = {}
        self.by_channel: dict[str, Stream] = {}
        # Channel -> the presence watcher of its address's room here (``watch_room``).
        self.rooms: dict[str, Callable[[str | None], None]] = {}
        # One feed (key None) on a single Redis, one per primary (key "host:port") on a
        # cluster, where notices are sharded channels.
        self.feeds: dict[str | None, Feed] = {}
        self._background: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._topology = asyncio.Event()  # cluster: refresh the slot map and the feeds
        self._topology_known = False
        # A channel of this process alone: keeps the subscription open when nothing is read.
        self._control = f"wsq:reader:{uuid.uuid4().hex}"
        self.closed = False
        #: Reads the live reader made (for tests and metrics).
        self.live_reads = 0
        # Since when (monotonic s; 0: not) the subscription has been failing.
        self.down_since = 0.0

    def start(self) -> None:
        self.closed = False
        if self._background:
            return
        loop = asyncio.get_running_loop()
        if self._clients.cluster:
            self._background = [loop.create_task(self._topology_forever())]
        else:
            feed = self.feeds[None] = Feed(None)
            self._background = [
                loop.create_task(self._listen_forever(feed)),
                loop.create_task(self._sync_forever(feed)),
            ]

    async def close(self) -> None:
        self.closed = True
        tasks = [*self._background, *self._tasks]
        for feed in self.feeds.values():
            tasks += feed.tasks
        self.feeds = {}
        self._background = []
        # Cancelled again soon: its reads have nothing to give back on the way out, and a
        # cancellation that meets a read timeout inside redis-py can be lost.
        await stop(tasks, retry_s=0.5)
        self._topology_known = False

    def lag_s(self) -> float:
        """How far behind the live reader is (s): the oldest notice of a stream not yet passed
        on, or while the subscription fails and something is read, the time since it failed."""
        now = time.monotonic()
        lag = now - self.down_since if self.down_since and self.streams else 0.0
        for st in self.streams.values():
            if st.behind_since:
                lag = max(lag, now - st.behind_since)
        return lag

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- tails ---------------------------------------------------------------------------------

    def tail(
        self,
        tenant: str,
        address: str,
        after: str,
        on_messages: Callable[[list[Message]], None],
    ) -> Tail:
        pos = parse_position(after)
        st = self.streams.get((tenant, address)) or self.add_stream(tenant, address, after)
        t = Tail(on_messages, lambda t: self._drop_tail(st, t))
        if st.cursor is None:
            # Watched only so far: the reader starts where this tail does.
            st.cursor = after
            st.tails.append(t)
            self.pull_soon(st)
            return t
        cur = parse_position(st.cursor)
        if pos > cur:
            t.after = pos
        elif pos < cur:
            t.pending = []
            self.spawn(self._backlog(st, t, after, st.cursor))
        st.tails.append(t)
        return t

    def _drop_tail(self, st: Stream, t: Tail) -> None:
        st.tails.remove(t)
        self.release(st)

    async def _backlog(self, st: Stream, t: Tail, after: str, upto: str) -> None:
        """Hand ``t`` what lies in (after, upto], then what the reader queued meanwhile."""
        cfg = self._policies.of(st.tenant)
        end = parse_position(upto)
        backlog: list[Message] = []
        cursor = after
        delay = 0.05
        while not t.closed:
            try:
                now, _, entries, _, _ = await self._clients.run(
                    "read",
                    (st.key, st.meta),
                    (
                        *retention(cfg),
                        cfg.idle_expiry_ms,
                        cursor,
                        READ_COUNT,
                        0,
                        0,
                    ),
                )
            except BrokerUnavailable:
                await asyncio.sleep(delay * random.random())
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            done = len(entries) < READ_COUNT
            for id_, flat in entries:
                m = entry_message(id_, flat)
                if m.pos > end:
                    done = True
                    break
                if m.expires_at is None or m.expires_at > now:
                    backlog.append(m)
                cursor = id_
            if done:
                break
        t.hand_over(backlog)

    def release(self, st: Stream) -> None:
        """Forget ``st`` once nothing reads it (and unsubscribe from its notifications)."""
        if not st.tails and not st.groups:
            key = (st.tenant, st.address)
            if self.streams.get(key) is st:
                del self.streams[key]
                if self.by_channel.get(st.channel) is st:
                    del self.by_channel[st.channel]
                self.resync_all()

    def add_stream(self, tenant: str, address: str, cursor: str | None) -> Stream:
        st = self.streams[(tenant, address)] = Stream(tenant, address, cursor)
        self.by_channel[st.channel] = st
        self.resync_all()
        return st

    def watch_room(self, channel: str, on_notice: Callable[[str | None], None]) -> None:
        """Subscribe ``channel`` for a presence room: ``on_notice`` gets each ``v:<version>``
        notice, and None at each (re)subscription (what was sent before it is lost)."""
        self.rooms[channel] = on_notice
        self.resync_all()

    def unwatch_room(self, channel: str) -> None:
        if self.rooms.pop(channel, None) is not None:
            self.resync_all()

    # -- the live reader's Pub/Sub connections ------------------------------------------------

    def resync_all(self) -> None:
        for feed in self.feeds.values():
            feed.resync.set()

    def _wanted(self, feed: Feed) -> set[str]:
        """The channels ``feed`` should be subscribed to."""
        channels = self.by_channel.keys() | self.rooms.keys()
        if feed.node is None:
            return channels
        cluster = self._clients.cluster_client()
        out = set()
        for channel in channels:
            try:
                node = cluster.get_node_from_key(channel)
            except RedisClusterException:  # slot not covered (yet): the topology is refreshed
                self._topology.set()
                continue
            if node is not None and node.name == feed.node:
                out.add(channel)
        return out

    def _open_feed(self, feed: Feed) -> tuple[PubSub, Redis | None]:
        """A new Pub/Sub for ``feed`` (and, for a cluster node, the client that owns it)."""
        if feed.node is None:
            return self._clients.redis.pubsub(), None
        host, _, port = feed.node.rpartition(":")
        client = self._clients.node_client(host, int(port), socket_timeout=HEARTBEAT_S * 2)
        return client.pubsub(), client

    async def _listen_forever(self, feed: Feed) -> None:
        """The live reader's connection ``feed``: notices in, confirmations trigger reads.

        Every (re)subscription is confirmed by Redis; on each confirmation the stream is read
        from its cursor, so what was published before the subscription took hold (or while Redis
        was away) comes too, once.
        """
        failures = 0
        while not self.closed and self.feeds.get(feed.node) is feed:
            ps, client = self._open_feed(feed)
            try:
                # The control channel (plain Pub/Sub) keeps the connection subscribed when no
                # stream is read; nobody publishes to it.
                await ps.subscribe(self._control)
                feed.ps = ps
                feed.subscribed = set()
                feed.resync.set()
                idle = 0.0
                # Not ``while True``: redis-py may swallow a cancellation that meets its own
                # read timeout (it turns into a TimeoutError), so the loop also checks close().
                while not self.closed and self.feeds.get(feed.node) is feed:
                    msg = await ps.get_message(timeout=HEARTBEAT_S)
                    if msg is None:
                        idle += HEARTBEAT_S
                        if idle > 3 * HEARTBEAT_S:
                            raise RedisConnectionError("no answer to PING on the subscription")
                        await ps.ping()
                        continue
                    idle = 0.0
                    self.down_since = 0.0
                    if failures:
                        log.warning("live reader: Redis is back; resuming every stream")
                        failures = 0
                    kind = msg["type"]
                    if kind in ("message", "smessage"):
                        self._on_notice(msg["channel"], msg["data"])
                    elif kind in ("subscribe", "ssubscribe"):
                        self._on_subscribed(msg["channel"])
                    elif kind == "sunsubscribe":
                        # Ours, or Redis moved the channel's slot to another node: then the
                        # slot map is refreshed and the channel subscribed where it lives now.
                        feed.subscribed.discard(msg["channel"])
                        if msg["channel"] in self.by_channel or msg["channel"] in self.rooms:
                            self._topology.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if not self.down_since:
                    self.down_since = time.monotonic()
                if failures == 1:
                    log.warning("live reader: %s; retrying until Redis answers", exc)
                else:
                    log.debug("live reader: still failing (%s)", exc)
                if feed.node is not None:
                    self._topology.set()  # a failover may have moved this node's slots
                # Full jitter: many gateways must not all reconnect at once.
                delay = min(MAX_BACKOFF_S, 0.05 * 2 ** min(failures, 10))
                await asyncio.sleep(delay * random.random())
            finally:
                if feed.ps is ps:
                    feed.ps = None
                    feed.subscribed = set()
                with contextlib.suppress(Exception):
                    await ps.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()

    async def _sync_forever(self, feed: Feed) -> None:
        """Keep ``feed``'s channels equal to the streams read here (that live on its node)."""
        while not self.closed:
            await feed.resync.wait()
            feed.resync.clear()
            ps = feed.ps
            if ps is None:
                continue
            want = self._wanted(feed)
            add = sorted(want - feed.subscribed)
            drop = sorted(feed.subscribed - want)
            try:
                if feed.node is None:
                    for i in range(0, len(add), 1000):
                        await ps.subscribe(*add[i : i + 1000])
                    for i in range(0, len(drop), 1000):
                        await ps.unsubscribe(*drop[i : i + 1000])
                else:
                    # Sharded channels: one slot per SSUBSCRIBE (every channel has its own
                    # hash tag). Sent raw: the feed, not redis-py, resubscribes after a failure.
                    for channel in add:
                        await ps.execute_command("SSUBSCRIBE", channel)
                    for channel in drop:
                        await ps.execute_command("SUNSUBSCRIBE", channel)
            except Exception as exc:
                log.debug("live reader: (un)subscribe failed (%s)", exc)
                continue  # the listener reconnects and subscribes everything again
            if feed.ps is ps:
                feed.subscribed.update(add)
                feed.subscribed.difference_update(drop)

    async def _topology_forever(self) -> None:
        """Cluster only: one feed per primary, following the slot map (failover, resharding).

        Refreshed when a feed fails, when Redis moves a subscribed channel's slot, when a slot
        is not covered, and every ``TOPOLOGY_S`` seconds.
        """
        cluster = self._clients.cluster_client()
        failures = 0
        loop = asyncio.get_running_loop()
        while not self.closed:
            self._topology.clear()
            try:
                if self._topology_known:
                    await cluster.nodes_manager.initialize()
                else:
                    await cluster.initialize()
                    self._topology_known = True
                primaries: set[str | None] = {n.name for n in cluster.get_primaries()}
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.debug("cluster topology refresh failed (%s)", exc)
                delay = min(MAX_BACKOFF_S, 0.05 * 2 ** min(failures, 10))
                await asyncio.sleep(delay * random.random())
                continue
            for name in primaries - set(self.feeds):
                feed = self.feeds[name] = Feed(name)
                feed.tasks = [
                    loop.create_task(self._listen_forever(feed)),
                    loop.create_task(self._sync_forever(feed)),
                ]
            for gone in set(self.feeds) - set(primaries):
                for t in self.feeds.pop(gone).tasks:
                    t.cancel()
            self.resync_all()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TOPOLOGY_S):
                    await self._topology.wait()
            # Several reasons at once (every channel of a moved slot) make one refresh.
            await asyncio.sleep(0.05)

    def _on_subscribed(self, channel: str) -> None:
        room = self.rooms.get(channel)
        if room is not None:
            room(None)
        st = self.by_channel.get(channel)
        if st is None:
            return
        # Whatever came before the subscription held: read it, and tell the groups.
        self.pull_soon(st)
        for gw in st.groups:
            gw.watchers.notify()

    def _on_notice(self, channel: str, last: str) -> None:
        """A publish on a stream read here (``last`` is its newest position), or ``r:<group>``:
        messages of that group were made available again (released) by some process; or
        ``v:<version>``: the address's presence room changed."""
        if last.startswith("v:"):
            room = self.rooms.get(channel)
            if room is not None:
                room(last)
            return
        st = self.by_channel.get(channel)
        if st is None:
            return
        if last.startswith("r:"):
            group = last[2:]
            for gw in st.groups:
                if gw.group == group:
                    gw.watchers.notify()
            return
        try:
            pos = parse_position(last)
        except ValueError:
            return
        if st.groups and pos > st.notified:
            st.notified = pos
            for gw in st.groups:
                gw.watchers.notify()
        if st.tails and st.cursor is not None and pos > parse_position(st.cursor):
            if not st.behind_since:
                st.behind_since = time.monotonic()
            st.behind_pos = max(st.behind_pos, pos)
            if st.publishing:
                # Likely our own publish, whose answer is on its way: decided then.
                st.noticed = max(st.noticed, pos)
            else:
                self.pull_soon(st)

    def pull_soon(self, st: Stream) -> None:
        """Read ``st`` from its cursor: at most one read in flight per stream (bursts coalesce)."""
        if st.cursor is None or not st.tails:
            return
        if st.pulling:
            st.again = True
            return
        st.pulling = True
        self.spawn(self._pull(st))

    async def _pull(self, st: Stream) -> None:
        try:
            while self.streams.get((st.tenant, st.address)) is st and st.tails:
                st.again = False
                cursor = st.cursor
                assert cursor is not None
                self.live_reads += 1
                async with self._clients.gate:
                    rows: Any = await self._clients.redis.xrange(
                        st.key, min="(" + cursor, count=READ_COUNT
                    )
                entries = rows if rows and type(rows[0][1]) is list else list(map(flat_row, rows))
                if self.streams.get((st.tenant, st.address)) is not st:
                    return
                if st.cursor != cursor:
                    # Passed on meanwhile by this process's own publish: read on from there.
                    continue
                if entries:
                    self._dispatch(st, entries, _now_ms())
                if len(entries) < READ_COUNT and not st.again:
                    st.behind_since = 0.0  # read to the end: nothing noticed is left behind
                    return
        except DOWN as exc:
            # Try again shortly; after a longer outage the listener's resubscription does too.
            log.debug("live read failed (%s)", exc)
            asyncio.get_running_loop().call_later(0.2, self.pull_soon, st)
        finally:
            st.pulling = False

    def own_publish_done(self, st: Stream) -> None:
        """A publish of this process to ``st`` has its answer (or failed)."""
        st.publishing -= 1
        if st.noticed > (0, 0):
            # Notices held back while we waited: read what was not passed on.
            if st.cursor is not None and st.noticed > parse_position(st.cursor):
                self.pull_soon(st)
            st.noticed = (0, 0)

    def tell_groups(self, tenant: str, address: str, results: list[Published]) -> None:
        """This process published ``results`` on the address: wake its watched groups now."""
        st = self.streams.get((tenant, address))
        if st is not None and st.groups:
            new = [r.id for r in results if not r.duplicate]
            if new:
                # Told here at once; the reader then skips this publish for the watchers.
                st.notified = max(st.notified, parse_position(new[-1]))
                for gw in st.groups:
                    gw.watchers.notify()

    def pass_on_own(self, st: Stream, stored: list[list[str]], rows: list[Any], cut: str) -> None:
        """Pass on what this process just published, without reading it back: the reader has
        passed on everything up to the entry before it (``prev``), and the new entries follow
        that one in the stream with nothing between (they were added by one script). A read in
        flight meanwhile sees the cursor move and reads again from the new cursor."""
        entries = [
            (id_, fields) for (id_, dup), fields in zip(rows, stored, strict=True) if not dup
        ]
        if not entries:
            return
        if cut and parse_position(cut) >= parse_position(entries[0][0]):
            return  # retention took some of them already: a read says what is left
        self._dispatch(st, entries, _now_ms())

    def _dispatch(self, st: Stream, entries: list[tuple[str, list[str]]], now: int) -> None:
        messages = [entry_message(id_, flat) for id_, flat in entries]
        st.cursor = messages[-1].id
        if st.behind_since and messages[-1].pos >= st.behind_pos:
            st.behind_since = 0.0
        live = [m for m in messages if m.expires_at is None or m.expires_at > now]
        if live:
            fan_out(st.tails, live)
