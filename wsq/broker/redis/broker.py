"""``RedisBroker``: the Broker interface on Redis streams, from its parts.

``client`` (connections and the command gate), ``scripts`` (the Lua in ``lua/``), ``keys``
(key names), ``entries`` (the entry codec), ``reader`` (live reading: one subscription per
process) and ``groups`` (queues). Publishing, history reads and lookups are here.

Publishing is one Lua script per batch: dedup, XADD, exact retention by length, age and bytes
(the trimmed entries are looked at so ``dropped`` is exact; the meta hash counts the bytes), expiry of idle keys, then PUBLISH of the
newest position. Accepted means Redis answered the script; any doubt raises ``BrokerUnavailable``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from wsq.broker.base import Broker, Tail
from wsq.broker.redis.client import DOWN, RedisClients, unavailable
from wsq.broker.redis.entries import entry_fields, entry_message, flat_row
from wsq.broker.redis.groups import ConsumerGroups
from wsq.broker.redis.keys import address_base, bound_keys, dedup_key, idempotency_key
from wsq.broker.redis.presence import RedisPresenceStore
from wsq.broker.redis.quotas import RedisQuotaStore
from wsq.broker.redis.reader import LiveReader
from wsq.broker.redis.relay import RedisRelay
from wsq.broker.redis.scripts import retention
from wsq.core import codec
from wsq.core.errors import BrokerUnavailable, IdempotencyKeyReused
from wsq.core.messages import (
    Message,
    NewMessage,
    Published,
    PublishedOnce,
    ReadResult,
    message_size,
    published_from_text,
)
from wsq.core.policy import StoragePolicies
from wsq.core.positions import START, parse_position

#: Entries one ``XREVRANGE`` of ``read_back`` asks for: pages stay near their byte budget.
READ_BACK_CHUNK = 50


class RedisBroker(ConsumerGroups, Broker):
    """Addresses in Redis streams, shared by every gateway process using the same Redis.

    Queues (claim, settle, renew, watch_group) come from ``ConsumerGroups``."""

    def __init__(
        self, url: str, policies: StoragePolicies, *, quota_lease_ms: int = 30_000
    ) -> None:
        self._policies = policies
        self._clients = RedisClients(url)
        self._quotas = self.quota_store = RedisQuotaStore(self._clients, quota_lease_ms)
        self._reader = LiveReader(self._clients, policies)
        self.presence_store = RedisPresenceStore(self._clients, quota_lease_ms, self._reader)
        self._relay = RedisRelay(url)
        self._group_watches = {}
        self._dead_letterers = set()
        self._closed = False

    @property
    def live_reads(self) -> int:
        """Reads the live reader made (for tests and metrics)."""
        return self._reader.live_reads

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False
        self._clients.start()
        self._reader.start()
        self._quotas.start()

    async def close(self) -> None:
        self._closed = True
        await self._quotas.close()
        await self.presence_store.close()
        await self.relay.close()
        await self._reader.close()
        self._close_groups()
        await self._clients.close()

    async def ready(self) -> bool:
        return not self._closed and await self._clients.ready()

    def reader_lag_s(self) -> float:
        return self._reader.lag_s()

    # -- publishing --------------------------------------------------------------------------

    async def publish(
        self, tenant: str, address: str, messages: Sequence[NewMessage]
    ) -> list[Published]:
        if not messages:
            if self._closed:
                raise BrokerUnavailable("the broker is closed")
            return []
        return (await self._publish(tenant, address, messages, None, "")).results

    async def publish_once(
        self,
        tenant: str,
        address: str,
        messages: Sequence[NewMessage],
        key: str,
        fingerprint: str,
    ) -> PublishedOnce:
        return await self._publish(tenant, address, messages, key, fingerprint)

    async def _publish_dead(
        self, tenant: str, address: str, messages: Sequence[NewMessage]
    ) -> list[Published]:
        """Dead letters are stored whatever their message_id: no dedup (contract section 5)."""
        return (await self._publish(tenant, address, messages, None, "", dedup=False)).results

    async def _publish(
        self,
        tenant: str,
        address: str,
        messages: Sequence[NewMessage],
        key: str | None,
        fingerprint: str,
        dedup: bool = True,
    ) -> PublishedOnce:
        if self._closed:
            raise BrokerUnavailable("the broker is closed")
        cfg = self._policies.of(tenant)
        base = address_base(tenant, address)
        keys = [f"{base}:s", f"{base}:m", *bound_keys(base)]
        ik = 0
        if key is not None and cfg.dedup_window_ms > 0:
            # Same hash tag as the stream: stored in the same script as the publish.
            keys.append(idempotency_key(base, key))
            ik = len(keys)
        args: list[Any] = [
            *retention(cfg),
            # A dedup key never outlives its address (an idle address is gone entirely).
            min(cfg.dedup_window_ms, cfg.idle_expiry_ms),
            cfg.idle_expiry_ms,
            len(messages),
            f"{base}:p",
            self._clients.publish_verb,
            ik,
            fingerprint,
        ]
        dedup = dedup and cfg.dedup_window_ms > 0
        items: list[str] = []
        stored: list[list[str]] = []
        for nm in messages:
            k = 0
            if dedup and nm.message_id is not None:
                keys.append(dedup_key(base, nm.message_id))
                k = len(keys)
            fields = entry_fields(nm)
            stored.append(fields)
            items += (str(k), str(len(fields)), *fields)
        args += (codec.dumps(items), cfg.max_dedup_ids, cfg.max_idempotency_keys)
        st = self._reader.streams.get((tenant, address))
        # ``once``: never sent twice by redis-py (wsq.broker.redis.client says why).
        if st is None:
            reply = await self._clients.run("publish", keys, args, once=True)
        else:
            st.publishing += 1
            try:
                reply = await self._clients.run("publish", keys, args, once=True)
                if reply[0] == 0 and st.tails and st.cursor == reply[1]:
                    self._reader.pass_on_own(st, stored, reply[3:], reply[2])
            finally:
                self._reader.own_publish_done(st)
        status = reply[0]
        if status == 2:
            raise IdempotencyKeyReused("the Idempotency-Key was used for another request")
        if status == 1:
            return PublishedOnce(published_from_text(str(reply[1])), replayed=True)
        out = [Published(id_, duplicate=bool(dup)) for id_, dup in reply[3:]]
        self._reader.tell_groups(tenant, address, out)
        return PublishedOnce(out)

    # -- copy (feed) -------------------------------------------------------------------------

    async def last_position(self, tenant: str, address: str) -> str:
        try:
            async with self._clients.gate:
                last = await self._clients.redis.hget(f"{address_base(tenant, address)}:m", "last")
        except DOWN as exc:
            raise unavailable(exc) from exc
        return str(last) if last else START

    async def read(
        self, tenant: str, address: str, after: str, limit: int, max_bytes: int | None = None
    ) -> ReadResult:
        pos = parse_position(after)
        cfg = self._policies.of(tenant)
        base = address_base(tenant, address)
        keys = (f"{base}:s", f"{base}:m")
        out: list[Message] = []
        recovered = True
        cursor = after
        first = True
        used = 0
        while True:
            want = max(limit - len(out), 0)
            if max_bytes is not None and out and used >= max_bytes:
                return ReadResult(out, recovered)
            # 0: no budget; otherwise what is left of it (at least 1: 0 means none).
            budget = 0 if max_bytes is None else max(max_bytes - used, 1)
            now, dropped, entries, full, size = await self._clients.run(
                "read",
                keys,
                (
                    *(*retention(cfg), cfg.idle_expiry_ms),
                    *(cursor, want, budget, 1 if not out else 0),
                ),
            )
            used += int(size)
            if first:
                first = False
                # START asks for whatever is retained: nothing it names was lost.
                recovered = pos == (0, 0) or not dropped or parse_position(dropped) <= pos
            for id_, flat in entries:
                m = entry_message(id_, flat)
                if m.expires_at is None or m.expires_at > now:
                    out.append(m)
            if full or len(entries) < want or len(out) >= limit or not entries:
                return ReadResult(out, recovered)
            cursor = entries[-1][0]

    async def read_back(
        self, tenant: str, address: str, before: str | None, limit: int, max_bytes: int
    ) -> list[Message]:
        if limit <= 0:
            return []
        cfg = self._policies.of(tenant)
        base = address_base(tenant, address)
        # The read script with nothing to read: retention trimmed first, and Redis's clock.
        now, *_ = await self._clients.run(
            "read",
            (f"{base}:s", f"{base}:m"),
            (*(*retention(cfg), cfg.idle_expiry_ms), *(START, 0, 0, 0)),
        )
        # Small pages, so that what is held stays near ``max_bytes`` whatever the sizes.
        out: list[Message] = []
        used = 0
        top = "+" if before is None else f"({before}"
        while len(out) < limit and (not out or used < max_bytes):
            count = min(limit - len(out), READ_BACK_CHUNK)
            try:
                async with self._clients.gate:
                    rows: Any = await self._clients.redis.xrevrange(
                        f"{base}:s", max=top, min="-", count=count
                    )
            except DOWN as exc:
                raise unavailable(exc) from exc
            for id_, flat in rows:
                m = entry_message(id_, flat)
                if m.expires_at is not None and m.expires_at <= int(now):
                    continue
                used += message_size(m)
                if out and used > max_bytes:
                    return out
                out.append(m)
            if len(rows) < count:
                break
            top = f"({rows[-1][0]}"
        return out

    def tail(
        self,
        tenant: str,
        address: str,
        after: str,
        on_messages: Callable[[list[Message]], None],
    ) -> Tail:
        return self._reader.tail(tenant, address, after, on_messages)

    # -- reconciliation ----------------------------------------------------------------------

    async def lookup(self, tenant: str, address: str, message_id: str) -> Message | None:
        """From the dedup key only (one GET, one XRANGE of that id), never by scanning the
        stream: past the dedup window, not found."""
        base = address_base(tenant, address)
        r = self._clients.redis
        try:
            async with self._clients.gate:
                hit = await r.get(dedup_key(base, message_id))
                if not hit:
                    return None
                rows: Any = await r.xrange(f"{base}:s", min=hit, max=hit)
        except DOWN as exc:
            raise unavailable(exc) from exc
        return entry_message(*flat_row(rows[0])) if rows else None
