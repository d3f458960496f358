"""The Redis streams broker (``redis://host:port/db``, ``rediss://``): many gateway processes share
one Redis, so a client can publish on one node and read, or resume, on any other.

Keys. Everything one address needs lives under ``wsq:{<tenant>:<address>}`` (tenant and address
percent-escaped, so ``{``, ``}``, ``:`` and ``%`` never appear raw and no address can name another
tenant's keys). The braces are a Redis Cluster hash tag: all keys of one address share a slot.

- ``…:s``  the stream. Entry fields: ``b`` body, ``p`` publisher, ``s`` subject, ``m`` message_id,
  ``c`` content_type, ``h`` headers (JSON), ``t`` ttl (ms). The position is the entry id; the
  message's ``ts`` is its ms part.
- ``…:m``  hash: ``last`` (newest id ever added: survives trimming), ``dropped`` (newest id lost to
  retention, not to its own ttl: ``recovered`` is False after an older position).
- ``…:i:<message_id>`` the position of a message_id, expiring with the dedup window.
- ``…:k:<idempotency key>`` the request fingerprint and results of the HTTP publish made with
  that ``Idempotency-Key`` (JSON), written by the same script as the publish, expiring with the
  dedup window.
- ``…:g:<group>:l`` / ``:w`` / ``:n`` per consumer group: lease deadlines, redelivery delays
  (sorted sets, score = ms) and the redelivered counts (hash).
- ``…:p``  (a Pub/Sub channel, not a key) where each publish announces its newest position.

Publishing is one Lua script per batch: dedup, XADD, exact retention by length and age (the
trimmed entries are looked at so ``dropped`` is exact), expiry of idle keys, then PUBLISH of the
newest position. Accepted means Redis answered the script; any doubt raises ``BrokerUnavailable``.

Live reading: ONE subscription connection per process, subscribed to the channel of every stream
this process tails or watches. A notice makes the process read that stream once from its cursor
(XRANGE; notices that arrive meanwhile coalesce into one more read), so Redis work per message is
one read per process, never per subscriber, and does not grow with the number of streams read (a
blocking XREAD over K keys costs O(K) per wake-up: docs/design.md has the numbers). Each
subscription Redis confirms, after a (re)connection too, triggers a read from the cursor: nothing
published before the subscription held, or during an outage, is lost or repeated. The reader
retries forever with backoff and PINGs a silent connection.

Queues: Redis consumer groups. A leased message sits in the consumer's PEL; released, expired and
filter-skipped ones are moved (XCLAIM) to the pseudo consumer ``~ready``, modified ones to
``~delay`` until their delay is over. ``claim`` serves ``~ready`` first (oldest first: everything
there is older than what the group has not read yet), then XREADGROUP. See docs/design.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis as redis_package
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ClusterError, RedisClusterException, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsq.broker.base import Broker, Watchers
from wsq.config import Settings, TenantConfig
from wsq.core import codec
from wsq.core.addresses import Pattern
from wsq.core.errors import BrokerUnavailable, IdempotencyKeyReused
from wsq.core.messages import (
    Delivery,
    Message,
    NewMessage,
    Outcome,
    Published,
    PublishedOnce,
    ReadResult,
)
from wsq.core.positions import START, parse_position
from wsq.core.wire import stored_props, stored_tail

log = logging.getLogger(__name__)

#: Entries one XREAD returns per stream (more come on the next, immediate, call).
READ_COUNT = 512
#: Connections to Redis per process (one of them holds the subscription).
MAX_CONNECTIONS = 64
#: Seconds of silence on the subscription before the reader PINGs (3 unanswered: reconnect).
HEARTBEAT_S = 5.0
#: How often (s) a watched group is asked about due leases / released messages at the latest.
GROUP_POLL_S = 1.0
#: Longest pause between reconnection attempts of the live reader (s).
MAX_BACKOFF_S = 2.0
#: Entries claim looks at per call beyond what it leases (filter skips, expired).
CLAIM_SCAN = 1024
#: Seconds between refreshes of a cluster's slot map when nothing asks for one sooner.
TOPOLOGY_S = 30.0
#: Connection errors: Redis is down or unreachable (a cluster: a slot without a master, too).
_DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterError,
    RedisClusterException,
    TryAgainError,
)

READY = "~ready"
DELAY = "~delay"

#: Where a transport race surfaces: redis-py's own code and asyncio's streams and transports.
_TRANSPORT_DIRS = tuple(
    os.path.dirname(m.__file__ or "") + os.sep for m in (redis_package, asyncio)
)


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


class _Gate:
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


# -- Lua ------------------------------------------------------------------------------------------

_LUA_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(n) return string.format('%.0f', n) end
local function id_ms(id) return tonumber(string.match(id, '^(%d+)')) end
local function next_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms .. '-' .. fmt(tonumber(seq) + 1)
end
local function field(f, name)
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
  return nil
end
local function expired(id, f, now)
  local ttl = field(f, 't')
  return ttl ~= nil and id_ms(id) + tonumber(ttl) <= now
end
"""

# Retention: at most 1024 entries go per call (a larger backlog goes over the next calls).
# Answers the newest id trimmed (nil: none).
_LUA_TRIM = """
local function trim(s, meta, maxlen, maxage, now)
  local dropped = nil
  local cut = nil
  if maxlen > 0 then
    local excess = redis.call('XLEN', s) - maxlen
    if excess > 0 then
      if excess > 1024 then excess = 1024 end
      local old = redis.call('XRANGE', s, '-', '+', 'COUNT', excess)
      for _, e in ipairs(old) do
        if not expired(e[1], e[2], now) then dropped = e[1] end
      end
      cut = old[#old][1]
      redis.call('XTRIM', s, 'MINID', next_id(cut))
    end
  end
  if maxage > 0 then
    local old = redis.call('XRANGE', s, '-', '(' .. fmt(now - maxage) .. '-0', 'COUNT', 1024)
    if #old > 0 then
      for _, e in ipairs(old) do
        if not expired(e[1], e[2], now) then dropped = e[1] end
      end
      cut = old[#old][1]
      redis.call('XTRIM', s, 'MINID', next_id(cut))
    end
  end
  if dropped then redis.call('HSET', meta, 'dropped', dropped) end
  return cut
end
"""

# KEYS: stream, meta, idempotency key (when ARGV[8] is 3), dedup keys. ARGV: maxlen, maxage,
# window, idle, n, notification channel, PUBLISH or SPUBLISH (cluster: the notice stays on the
# slot's shard), index of the idempotency key in KEYS (0: none), request fingerprint, then the
# messages as ONE JSON array (redis-py's packing costs ~0.6 us per argument in the gateway; the
# array is one orjson call there and one cjson call here), per message: index of its dedup key
# in KEYS (0: none), number of fields, fields; numbers as strings. Answers
# {status, prev, cut, {id, duplicate}...}: status 0 published, 1 replayed (the results stored
# with the idempotency key; no prev and cut), 2 the key was stored for another fingerprint;
# prev: the newest id before this publish (START: none), cut: the newest id retention trimmed
# ('' none). The new entries are contiguous (one script), so a process whose reader has passed
# on exactly ``prev`` can pass them on itself without reading them back.
_LUA_PUBLISH = (
    _LUA_COMMON
    + _LUA_TRIM
    + """
local s, meta = KEYS[1], KEYS[2]
local maxlen, maxage = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, idle, n = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ik = tonumber(ARGV[8])
if ik > 0 then
  local stored = redis.call('GET', KEYS[ik])
  if stored then
    local rec = cjson.decode(stored)
    if rec[1] ~= ARGV[9] then return {2} end
    local rows = {1}
    for _, r in ipairs(rec[2]) do rows[#rows + 1] = r end
    return rows
  end
end
local now = now_ms()
local out = {}
local last = nil
-- No 'last': nothing was ever added (meta and stream expire together), START as last_position says.
local prev = redis.call('HGET', meta, 'last') or '0-0'
local cut = nil
local A = cjson.decode(ARGV[10])
local i = 1
for m = 1, n do
  local k, nf = tonumber(A[i]), tonumber(A[i + 1])
  local dup = nil
  if k > 0 then dup = redis.call('GET', KEYS[k]) end
  if dup then
    out[m] = {dup, 1}
  else
    local args = {s, '*'}
    for j = i + 2, i + 1 + nf do args[#args + 1] = A[j] end
    local id = redis.call('XADD', unpack(args))
    if k > 0 then redis.call('SET', KEYS[k], id, 'PX', window) end
    out[m] = {id, 0}
    last = id
  end
  i = i + 2 + nf
end
if last then
  redis.call('HSET', meta, 'last', last)
  cut = trim(s, meta, maxlen, maxage, now)
  redis.call(ARGV[7], ARGV[6], last)
end
redis.call('PEXPIRE', s, idle)
redis.call('PEXPIRE', meta, idle)
if ik > 0 then
  redis.call('SET', KEYS[ik], cjson.encode({ARGV[9], out}), 'PX', window)
end
table.insert(out, 1, cut or '')
table.insert(out, 1, prev)
table.insert(out, 1, 0)
return out
"""
)

# KEYS: stream, meta. ARGV: maxlen, maxage, idle, after, count, max bytes (0: no budget), 1 when
# the first unexpired entry comes whatever its size. -> {now, dropped, entries, 1 when stopped at
# the budget, bytes counted}. Under a budget the entries are read 16 at a time, so the script
# holds no more than that beyond what it answers. An entry's size is its body and headers (the
# fields that can be large); expired entries come (counted in ``count``) but do not count.
_LUA_READ = (
    _LUA_COMMON
    + _LUA_TRIM
    + """
local s, meta = KEYS[1], KEYS[2]
local now = now_ms()
if redis.call('EXISTS', s) == 0 then return {now, false, {}, 0, 0} end
trim(s, meta, tonumber(ARGV[1]), tonumber(ARGV[2]), now)
redis.call('PEXPIRE', s, ARGV[3])
redis.call('PEXPIRE', meta, ARGV[3])
local entries = {}
local want, budget, one = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local full, used = 0, 0
if want > 0 and budget <= 0 then
  entries = redis.call('XRANGE', s, '(' .. ARGV[4], '+', 'COUNT', want)
elseif want > 0 then
  local start = '(' .. ARGV[4]
  while #entries < want and full == 0 do
    local n = math.min(want - #entries, 16)
    local page = redis.call('XRANGE', s, start, '+', 'COUNT', n)
    for _, e in ipairs(page) do
      if not expired(e[1], e[2], now) then
        local size = #(field(e[2], 'b') or '') + (tonumber(field(e[2], 'z')) or #(field(e[2], 'h') or ''))
        if used + size > budget and not one then
          full = 1
          break
        end
        used = used + size
        one = false
      end
      entries[#entries + 1] = e
    end
    if #page < n then break end
    start = '(' .. page[#page][1]
  end
end
return {now, redis.call('HGET', meta, 'dropped'), entries, full, used}
"""
)

_LUA_GROUP = """
local READY, DELAY = '~ready', '~delay'
local function forget_consumer(s, g, c)
  if #redis.call('XPENDING', s, g, '-', '+', 1, c) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', s, g, c)
  end
end
-- Lease deadlines and delays that are due: the messages become available (READY).
local function due(s, g, L, W, N, now)
  local ids = redis.call('ZRANGEBYSCORE', L, '-inf', now, 'LIMIT', 0, 256)
  -- The holders of the expired leases: each HTTP claim is a consumer of its own, and one that
  -- is never settled would stay in the group for good. A consumer left holding nothing is
  -- deleted; that is invisible to a live link (XREADGROUP and XCLAIM create it again).
  local holders, seen = {}, {}
  for _, id in ipairs(ids) do
    local p = redis.call('XPENDING', s, g, id, id, 1)
    if #p > 0 and not seen[p[1][2]] then
      seen[p[1][2]] = true
      holders[#holders + 1] = p[1][2]
    end
    if #redis.call('XCLAIM', s, g, READY, 0, id, 'JUSTID') > 0 then
      redis.call('HINCRBY', N, id, 1)
    else
      redis.call('HDEL', N, id)
    end
  end
  if #ids > 0 then redis.call('ZREM', L, unpack(ids)) end
  for _, c in ipairs(holders) do
    if c ~= READY and c ~= DELAY then forget_consumer(s, g, c) end
  end
  ids = redis.call('ZRANGEBYSCORE', W, '-inf', now, 'LIMIT', 0, 256)
  for _, id in ipairs(ids) do
    if #redis.call('XCLAIM', s, g, READY, 0, id, 'JUSTID') == 0 then
      redis.call('HDEL', N, id)
    end
  end
  if #ids > 0 then redis.call('ZREM', W, unpack(ids)) end
end
local function next_deadline(L, W)
  local a = redis.call('ZRANGE', L, 0, 0, 'WITHSCORES')
  local b = redis.call('ZRANGE', W, 0, 0, 'WITHSCORES')
  local best = -1
  if #a > 0 then best = tonumber(a[2]) end
  if #b > 0 and (best < 0 or tonumber(b[2]) < best) then best = tonumber(b[2]) end
  return best
end
local function group_exists(s, g)
  local r = redis.pcall('XPENDING', s, g, '-', '+', 1, READY)
  return not (type(r) == 'table' and r.err)
end
"""

# A subject pattern (wsq.core.addresses.Pattern) in Lua: '*' one token, '>' last, 1 or more.
_LUA_MATCH = """
local function split(text)
  local out, start = {}, 1
  while true do
    local i = string.find(text, '.', start, true)
    if not i then out[#out + 1] = string.sub(text, start); return out end
    out[#out + 1] = string.sub(text, start, i - 1)
    start = i + 1
  end
end
local function matches(pat, subject)
  if pat == '' then return true end
  if not subject then return false end
  local p, t = split(pat), split(subject)
  local tail = p[#p] == '>'
  local n = #p
  if tail then
    n = n - 1
    if #t <= n then return false end
  elseif #t ~= n then
    return false
  end
  for i = 1, n do
    if p[i] ~= '*' and p[i] ~= t[i] then return false end
  end
  return true
end
"""

# KEYS: stream, L, W, N, meta. ARGV: group, consumer, count, lease, pattern, idle, scan.
# -> {now, next deadline, {id, fields, redelivered}...}
_LUA_CLAIM = (
    _LUA_COMMON
    + _LUA_GROUP
    + _LUA_MATCH
    + """
local s, L, W, N, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local g, c = ARGV[1], ARGV[2]
local count, lease, pat = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local idle, scan = ARGV[6], tonumber(ARGV[7])
local now = now_ms()
if not group_exists(s, g) then
  redis.call('XGROUP', 'CREATE', s, g, '0', 'MKSTREAM')
  redis.call('DEL', L, W, N)
end
due(s, g, L, W, N, now)
local deadline = now + lease
local out = {now, 0}
local got = 0
local function take(id, f)
  redis.call('ZADD', L, deadline, id)
  got = got + 1
  out[#out + 1] = {id, f, tonumber(redis.call('HGET', N, id) or '0')}
end
local looked = 0
local start = '-'
while got < count and looked < scan do
  local p = redis.call('XPENDING', s, g, start, '+', 64, READY)
  for _, e in ipairs(p) do
    local id = e[1]
    looked = looked + 1
    start = '(' .. id
    local ent = redis.call('XRANGE', s, id, id)
    if #ent == 0 or expired(id, ent[1][2], now) then
      redis.call('XACK', s, g, id)
      redis.call('HDEL', N, id)
    elseif matches(pat, field(ent[1][2], 's')) then
      redis.call('XCLAIM', s, g, c, 0, id, 'JUSTID')
      take(id, ent[1][2])
      if got >= count then break end
    end
  end
  if #p < 64 then break end
end
while got < count and looked < scan do
  local want = count - got
  local r = redis.call('XREADGROUP', 'GROUP', g, c, 'COUNT', want, 'STREAMS', s, '>')
  if not r then break end
  local entries = r[1][2]
  for _, e in ipairs(entries) do
    local id, f = e[1], e[2]
    looked = looked + 1
    if expired(id, f, now) then
      redis.call('XACK', s, g, id)
    elseif matches(pat, field(f, 's')) then
      take(id, f)
    else
      redis.call('XCLAIM', s, g, READY, 0, id, 'JUSTID')
    end
  end
  if #entries < want then break end
end
if got == 0 then forget_consumer(s, g, c) end
out[2] = next_deadline(L, W)
for _, k in ipairs({s, L, W, N, meta}) do redis.call('PEXPIRE', k, idle) end
return out
"""
)

# KEYS: stream, L, W, N. ARGV: group, consumer, outcome (a r m h), delay, notice channel,
# PUBLISH or SPUBLISH, idle expiry (ms), ids... -> {now, any available now (0/1), next deadline, {id, fields}...
# (outcome h: held, unchanged)}. Messages made available at once are announced on the channel
# ("r:<group>"), so consumers of the group on other processes claim them at once.
_LUA_SETTLE = (
    _LUA_COMMON
    + _LUA_GROUP
    + """
local s, L, W, N = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local g, c, outcome, delay = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
if not group_exists(s, g) then return {now, 0, -1} end
local out = {now, 0, -1}
for i = 8, #ARGV do
  local id = ARGV[i]
  if #redis.call('XPENDING', s, g, id, id, 1, c) == 1 then
    if outcome == 'a' then
      redis.call('XACK', s, g, id)
      redis.call('ZREM', L, id)
      redis.call('HDEL', N, id)
    elseif outcome == 'h' then
      local ent = redis.call('XRANGE', s, id, id)
      if #ent > 0 then out[#out + 1] = {id, ent[1][2]} end
    else
      redis.call('ZREM', L, id)
      if outcome == 'm' then redis.call('HINCRBY', N, id, 1) end
      if outcome == 'm' and delay > 0 then
        redis.call('XCLAIM', s, g, DELAY, 0, id, 'JUSTID')
        redis.call('ZADD', W, now + delay, id)
      else
        redis.call('XCLAIM', s, g, READY, 0, id, 'JUSTID')
        out[2] = 1
      end
    end
  end
end
if outcome ~= 'h' then forget_consumer(s, g, c) end
if out[2] == 1 then redis.call(ARGV[6], ARGV[5], 'r:' .. g) end
if outcome ~= 'h' then
  -- Keys this call may have created (delays, counts) expire with the address too.
  for _, k in ipairs({s, L, W, N}) do redis.call('PEXPIRE', k, ARGV[7]) end
end
out[3] = next_deadline(L, W)
return out
"""
)

# KEYS: stream, L. ARGV: group, consumer, lease, ids... -> ids renewed
_LUA_RENEW = (
    _LUA_COMMON
    + _LUA_GROUP
    + """
local s, L = KEYS[1], KEYS[2]
local g, c = ARGV[1], ARGV[2]
if not group_exists(s, g) then return {} end
local deadline = now_ms() + tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if #redis.call('XPENDING', s, g, id, id, 1, c) == 1 then
    redis.call('ZADD', L, 'XX', deadline, id)
    out[#out + 1] = id
  end
end
return out
"""
)

# KEYS: stream, L, W. ARGV: group. -> {now, anything claimable now (0/1), next deadline}
_LUA_POLL = (
    _LUA_COMMON
    + _LUA_GROUP
    + """
local s, L, W = KEYS[1], KEYS[2], KEYS[3]
local now = now_ms()
local nd = next_deadline(L, W)
local avail = 0
if nd >= 0 and nd <= now then avail = 1 end
if avail == 0 and group_exists(s, ARGV[1]) then
  if #redis.call('XPENDING', s, ARGV[1], '-', '+', 1, READY) > 0 then avail = 1 end
end
return {now, avail, nd}
"""
)

# -- keys and entries --------------------------------------------------------------------------


@lru_cache(maxsize=65_536)
def _base(tenant: str, address: str) -> str:
    """The key prefix of one address: a hash tag no other (tenant, address) can produce."""
    return f"wsq:{{{quote(tenant, safe='')}:{quote(address, safe='')}}}"


def _group_keys(base: str, group: str) -> tuple[str, str, str]:
    g = f"{base}:g:{quote(group, safe='')}"
    return f"{g}:l", f"{g}:w", f"{g}:n"


def _id_part(message_id: str) -> str:
    """A message_id as part of a key name. JSON lets a client send a lone surrogate, which
    UTF-8 cannot encode strictly: ``surrogatepass`` keeps such an id distinct instead of
    refusing the publish."""
    return quote(message_id, safe="", errors="surrogatepass")


def _fields(nm: NewMessage) -> list[str]:
    """The fields of a new entry: ``b`` body, ``x`` the props as they go on the wire (without
    ``ts`` and ``expires``: readers concatenate the tail instead of encoding it), and for the Lua
    scripts ``s`` subject (filters), ``t`` ttl (expiry) and ``z`` the headers' size (reads'
    byte budgets)."""
    out = [
        "b",
        nm.body,
        "x",
        stored_props(nm.publisher, nm.subject, nm.message_id, nm.content_type, nm.headers),
    ]
    if nm.subject is not None:
        out += ("s", nm.subject)
    if nm.ttl_ms is not None:
        out += ("t", str(nm.ttl_ms))
    if nm.headers is not None:
        # What a read's byte budget counts of the headers (``message_size``), which the read
        # script cannot take out of ``x``.
        out += ("z", str(len(codec.dumps(dict(nm.headers)))))
    return out


def _message(id_: str, flat: Sequence[str]) -> Message:
    """An entry -> Message, its wire tail already built (``_fields``' format)."""
    n = len(flat)
    if n < 4 or flat[2] != "x":
        return _old_message(id_, flat)
    body = flat[1]
    props = flat[3]
    subject = ttl = None
    for i in range(4, n - 1, 2):
        name = flat[i]
        if name == "s":
            subject = flat[i + 1]
        elif name == "t":
            ttl = flat[i + 1]
    ms_text, _, seq = id_.partition("-")
    ms = int(ms_text)
    expires_at = ms + int(ttl) if ttl is not None else None
    return Message(
        id_,
        body,
        ts=ms,
        publisher="",
        subject=subject,
        expires_at=expires_at,
        pos=(ms, int(seq)),
        wire=stored_tail(id_, ms_text, body, props, expires_at),
        stored=props,
    )


def _old_message(id_: str, flat: Sequence[str]) -> Message:
    """An entry written before ``x`` (``p`` publisher, ``m`` message_id, ``c`` content_type,
    ``h`` headers as JSON): still read, so that an upgrade keeps what Redis holds."""
    f = dict(zip(flat[::2], flat[1::2], strict=True))
    ms = int(id_.partition("-")[0])
    ttl = f.get("t")
    headers = f.get("h")
    return Message(
        id_,
        f.get("b", "null"),
        ts=ms,
        publisher=f.get("p", ""),
        subject=f.get("s"),
        message_id=f.get("m"),
        content_type=f.get("c"),
        headers=json.loads(headers) if headers is not None else None,
        expires_at=ms + int(ttl) if ttl is not None else None,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- live reading: tails and group watches -------------------------------------------------------


class _Stream:
    """A stream this process reads live: its tails, its watched groups, one cursor."""

    __slots__ = (
        "address",
        "again",
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
        base = _base(tenant, address)
        self.tenant = tenant
        self.address = address
        self.key = f"{base}:s"
        self.meta = f"{base}:m"
        self.channel = f"{base}:p"
        self.pulling = False  # a read of the stream is in flight
        self.again = False  # notified meanwhile: read once more
        # The newest id the reader has passed on; None until known (then: the newest).
        self.cursor = cursor
        self.tails: list[_Tail] = []
        self.groups: list[_GroupWatch] = []
        # Newest id whose publish this process told the group watchers of itself.
        self.notified = (0, 0)
        # Publishes of this process to the stream awaiting Redis's answer, and the newest
        # notice that came meanwhile: the answer may pass it on itself, no read needed.
        self.publishing = 0
        self.noticed = (0, 0)


class _Tail:
    __slots__ = ("after", "broker", "callback", "closed", "pending", "stream")

    def __init__(
        self, broker: RedisBroker, stream: _Stream, callback: Callable[[list[Message]], None]
    ) -> None:
        self.broker = broker
        self.stream = stream
        self.callback = callback
        self.closed = False
        # Backlog being read: live messages wait here behind it.
        self.pending: list[Message] | None = None
        # Tailing after a position newer than the reader's cursor: skip up to it.
        self.after: tuple[int, int] | None = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pending = None
            with contextlib.suppress(ValueError):
                self.stream.tails.remove(self)
            self.broker._release(self.stream)


class _GroupWatch:
    """The watchers of one consumer group in this process, and its one timer."""

    __slots__ = ("group", "keys", "stream", "timer", "timer_at", "watchers")

    def __init__(self, stream: _Stream, group: str) -> None:
        self.stream = stream
        self.group = group
        base = _base(stream.tenant, stream.address)
        self.keys = (stream.key, *_group_keys(base, group))
        self.watchers = Watchers()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0


class _Watch:
    __slots__ = ("broker", "callback", "closed", "gw")

    def __init__(self, broker: RedisBroker, gw: _GroupWatch, callback: Callable[[], None]) -> None:
        self.broker = broker
        self.gw = gw
        self.callback = callback
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.broker._unwatch(self)


class _Feed:
    """One Pub/Sub connection of the live reader: to the Redis server (``node`` None), or to
    one primary of a cluster, subscribed to the sharded channels of the slots it owns."""

    __slots__ = ("node", "ps", "resync", "subscribed", "tasks")

    def __init__(self, node: str | None) -> None:
        self.node = node
        self.ps: PubSub | None = None
        self.subscribed: set[str] = set()  # channels asked for on ``ps``
        self.resync = asyncio.Event()  # the channels wanted here may have changed
        self.tasks: list[asyncio.Task[None]] = []


class RedisBroker(Broker):
    """Addresses in Redis streams, shared by every gateway process using the same Redis."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._url = settings.broker.url
        self._cluster = urlsplit(self._url).scheme.lower() == "redis+cluster"
        # Notices: sharded on a cluster, so each goes to its slot's shard only.
        self._pub = "SPUBLISH" if self._cluster else "PUBLISH"
        self._redis: Redis | RedisCluster | None = None
        # The publish script's own client, with redis-py's retries off: a connection lost after
        # the script was sent may have stored the batch, and running it again would store the
        # messages without a message_id twice. The caller gets BrokerUnavailable and retries
        # with its message_ids (dedup answers the first positions). Reads, claims and settles
        # go through ``_redis``, which retries.
        self._once: Redis | RedisCluster | None = None
        self._node_kwargs: dict[str, Any] = {}  # credentials for connections to cluster nodes
        self._limit = _Gate(MAX_CONNECTIONS)
        self._scripts: dict[str, AsyncScript] = {}
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._groups: dict[tuple[str, str, str], _GroupWatch] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._by_channel: dict[str, _Stream] = {}
        self._background: list[asyncio.Task[None]] = []
        # The live reader's Pub/Sub connections: one (key None) on a single Redis, one per
        # primary (key "host:port") on a cluster, where notices are sharded channels.
        self._feeds: dict[str | None, _Feed] = {}
        self._topology = asyncio.Event()  # cluster: refresh the slot map and the feeds
        self._topology_known = False
        # A channel of this process alone: keeps the subscription open when nothing is read.
        self._control = f"wsq:reader:{uuid.uuid4().hex}"
        self._closed = False
        #: Reads the live reader made (for tests and metrics).
        self.live_reads = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def redis(self) -> Redis | RedisCluster:
        if self._redis is None:
            raise BrokerUnavailable("the broker is not started")
        return self._redis

    def _cluster_client(self) -> RedisCluster:
        r = self.redis
        assert isinstance(r, RedisCluster)
        return r

    async def start(self) -> None:
        self._closed = False
        if self._redis is None:
            self._redis = self._connect(retries=2)
            self._once = self._connect(retries=0)
            # Entries as Redis sends them, [id, [field, value, …]]: ``_message`` reads the flat
            # fields itself (redis-py's parser would build a dict per entry for nothing).
            for command in ("XRANGE", "XREVRANGE"):
                self._redis.set_response_callback(command, _raw)
            for name, text in (
                ("publish", _LUA_PUBLISH),
                ("read", _LUA_READ),
                ("claim", _LUA_CLAIM),
                ("settle", _LUA_SETTLE),
                ("renew", _LUA_RENEW),
                ("poll", _LUA_POLL),
            ):
                self._scripts[name] = self._redis.register_script(text)
        if not self._background:
            loop = asyncio.get_running_loop()
            if self._cluster:
                self._background = [loop.create_task(self._topology_forever())]
            else:
                feed = self._feeds[None] = _Feed(None)
                self._background = [
                    loop.create_task(self._listen_forever(feed)),
                    loop.create_task(self._sync_forever(feed)),
                ]

    def _connect(self, retries: int) -> Redis | RedisCluster:
        """A client; ``retries``: times redis-py sends a command again after a connection error
        or timeout (only for what may safely run twice)."""
        if not self._cluster:
            # Bounded: a burst of reads waits for a connection rather than opening thousands.
            pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=MAX_CONNECTIONS,
                timeout=5.0,
                decode_responses=True,
                protocol=2,  # scripts answer RESP2 arrays; one shape to parse
                socket_timeout=5.0,
                socket_connect_timeout=2.0,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries),
            )
            return Redis(connection_pool=pool)
        # redis+cluster://[user:password@]host:port: any node; the client learns the others.
        parts = urlsplit(self._url)
        if parts.username:
            self._node_kwargs["username"] = unquote(parts.username)
        if parts.password:
            self._node_kwargs["password"] = unquote(parts.password)
        # The cluster client raises (rather than waits) past max_connections per node:
        # ``_limit`` keeps every command of this process within it.
        return RedisCluster(
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
            **self._node_kwargs,
        )

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._background, *self._tasks]
        for feed in self._feeds.values():
            tasks += feed.tasks
        self._feeds = {}
        self._background = []
        # Cancel, and cancel again what is still running: a cancellation that meets a read
        # timeout inside redis-py can be lost (the task then ends at its next loop check).
        pending = set(tasks)
        for _ in range(20):
            if not pending:
                break
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        if pending:
            log.warning("broker close: %d background tasks did not stop", len(pending))
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()  # retrieved: no "never retrieved" warning
        for gw in self._groups.values():
            if gw.timer is not None:
                gw.timer.cancel()
                gw.timer = None
        self._topology_known = False
        for r in (self._redis, self._once):
            if isinstance(r, RedisCluster):
                await r.aclose()
            elif r is not None:
                await r.aclose(close_connection_pool=True)
        self._redis = self._once = None

    async def ready(self) -> bool:
        """Redis answers: the server, or on a cluster every primary (any address may live on
        any of them)."""
        if self._closed or self._redis is None:
            return False
        r = self._redis
        try:
            async with asyncio.timeout(2.0), self._limit:
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

    # -- helpers -----------------------------------------------------------------------------

    def _tenant(self, name: str) -> TenantConfig:
        cfg = self._settings.tenants.get(name)
        if cfg is None:
            cfg = TenantConfig(name=name, issuer=name, keys=())
        return cfg

    async def _run(
        self,
        script: str,
        keys: Sequence[str],
        args: Sequence[Any],
        client: Redis | RedisCluster | None = None,
    ) -> Any:
        try:
            async with self._limit:
                return await self._scripts[script](keys=keys, args=args, client=client)
        except _DOWN as exc:
            raise BrokerUnavailable(f"Redis is unavailable: {exc}") from exc
        except KeyError as exc:
            raise BrokerUnavailable("the broker is not started") from exc

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

    async def _publish(
        self,
        tenant: str,
        address: str,
        messages: Sequence[NewMessage],
        idempotency_key: str | None,
        fingerprint: str,
    ) -> PublishedOnce:
        if self._closed:
            raise BrokerUnavailable("the broker is closed")
        cfg = self._tenant(tenant)
        base = _base(tenant, address)
        keys = [f"{base}:s", f"{base}:m"]
        ik = 0
        if idempotency_key is not None and cfg.dedup_window_ms > 0:
            # Same hash tag as the stream: stored in the same script as the publish.
            keys.append(f"{base}:k:{quote(idempotency_key, safe='')}")
            ik = len(keys)
        args: list[Any] = [
            cfg.retention_max_len,
            cfg.retention_max_age_ms,
            # A dedup key never outlives its address (an idle address is gone entirely).
            min(cfg.dedup_window_ms, cfg.idle_expiry_ms),
            cfg.idle_expiry_ms,
            len(messages),
            f"{base}:p",
            self._pub,
            ik,
            fingerprint,
        ]
        dedup = cfg.dedup_window_ms > 0
        items: list[str] = []
        stored: list[list[str]] = []
        for nm in messages:
            k = 0
            if dedup and nm.message_id is not None:
                keys.append(f"{base}:i:{_id_part(nm.message_id)}")
                k = len(keys)
            fields = _fields(nm)
            stored.append(fields)
            items += (str(k), str(len(fields)), *fields)
        args.append(codec.dumps(items))
        st = self._streams.get((tenant, address))
        # Never sent twice by redis-py (see ``_once``).
        if st is None:
            reply = await self._run("publish", keys, args, self._once)
        else:
            st.publishing += 1
            try:
                reply = await self._run("publish", keys, args, self._once)
                if reply[0] == 0 and st.tails and st.cursor == reply[1]:
                    self._pass_on_own(st, stored, reply[3:], reply[2])
            finally:
                st.publishing -= 1
                if st.noticed > (0, 0):
                    # Notices held back while we waited: read what was not passed on.
                    if st.cursor is not None and st.noticed > parse_position(st.cursor):
                        self._pull_soon(st)
                    st.noticed = (0, 0)
        status = reply[0]
        if status == 2:
            raise IdempotencyKeyReused("the Idempotency-Key was used for another request")
        if status == 1:
            return PublishedOnce(
                [Published(str(id_), duplicate=bool(dup)) for id_, dup in reply[1:]],
                replayed=True,
            )
        out = [Published(id_, duplicate=bool(dup)) for id_, dup in reply[3:]]
        st = self._streams.get((tenant, address))
        if st is not None and st.groups:
            new = [r.id for r in out if not r.duplicate]
            if new:
                # Told here at once; the reader then skips this publish for the watchers.
                st.notified = max(st.notified, parse_position(new[-1]))
                for gw in st.groups:
                    gw.watchers.notify()
        return PublishedOnce(out)

    # -- copy (feed) -------------------------------------------------------------------------

    async def last_position(self, tenant: str, address: str) -> str:
        try:
            async with self._limit:
                last = await self.redis.hget(f"{_base(tenant, address)}:m", "last")
        except _DOWN as exc:
            raise BrokerUnavailable(f"Redis is unavailable: {exc}") from exc
        return str(last) if last else START

    async def read(
        self, tenant: str, address: str, after: str, limit: int, max_bytes: int | None = None
    ) -> ReadResult:
        pos = parse_position(after)
        cfg = self._tenant(tenant)
        base = _base(tenant, address)
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
            now, dropped, entries, full, size = await self._run(
                "read",
                keys,
                (
                    *(cfg.retention_max_len, cfg.retention_max_age_ms, cfg.idle_expiry_ms),
                    *(cursor, want, budget, 1 if not out else 0),
                ),
            )
            used += int(size)
            if first:
                first = False
                # START asks for whatever is retained: nothing it names was lost.
                recovered = pos == (0, 0) or not dropped or parse_position(dropped) <= pos
            for id_, flat in entries:
                m = _message(id_, flat)
                if m.expires_at is None or m.expires_at > now:
                    out.append(m)
            if full or len(entries) < want or len(out) >= limit or not entries:
                return ReadResult(out, recovered)
            cursor = entries[-1][0]

    def tail(
        self,
        tenant: str,
        address: str,
        after: str,
        on_messages: Callable[[list[Message]], None],
    ) -> _Tail:
        pos = parse_position(after)
        st = self._streams.get((tenant, address)) or self._add_stream(tenant, address, after)
        t = _Tail(self, st, on_messages)
        if st.cursor is None:
            # Watched only so far: the reader starts where this tail does.
            st.cursor = after
            st.tails.append(t)
            self._pull_soon(st)
            return t
        else:
            cur = parse_position(st.cursor)
            if pos > cur:
                t.after = pos
            elif pos < cur:
                t.pending = []
                self._spawn(self._backlog(t, after, st.cursor))
        st.tails.append(t)
        return t

    async def _backlog(self, t: _Tail, after: str, upto: str) -> None:
        """Hand ``t`` what lies in (after, upto], then what the reader queued meanwhile."""
        st = t.stream
        cfg = self._tenant(st.tenant)
        end = parse_position(upto)
        backlog: list[Message] = []
        cursor = after
        delay = 0.05
        while not t.closed:
            try:
                now, _, entries, _, _ = await self._run(
                    "read",
                    (st.key, st.meta),
                    (
                        cfg.retention_max_len,
                        cfg.retention_max_age_ms,
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
                m = _message(id_, flat)
                if m.pos > end:
                    done = True
                    break
                if m.expires_at is None or m.expires_at > now:
                    backlog.append(m)
                cursor = id_
            if done:
                break
        if t.closed or t.pending is None:
            return
        batch = backlog + t.pending
        t.pending = None
        if batch:
            try:
                t.callback(batch)
            except Exception:
                log.exception("tail callback failed")

    def _release(self, st: _Stream) -> None:
        """Forget ``st`` once nothing reads it (and unsubscribe from its notifications)."""
        if not st.tails and not st.groups:
            key = (st.tenant, st.address)
            if self._streams.get(key) is st:
                del self._streams[key]
                if self._by_channel.get(st.channel) is st:
                    del self._by_channel[st.channel]
                self._resync_all()

    def _add_stream(self, tenant: str, address: str, cursor: str | None) -> _Stream:
        st = self._streams[(tenant, address)] = _Stream(tenant, address, cursor)
        self._by_channel[st.channel] = st
        self._resync_all()
        return st

    # -- the live reader's Pub/Sub connections ------------------------------------------------

    def _resync_all(self) -> None:
        for feed in self._feeds.values():
            feed.resync.set()

    def _wanted(self, feed: _Feed) -> set[str]:
        """The channels ``feed`` should be subscribed to."""
        if feed.node is None:
            return set(self._by_channel)
        cluster = self._cluster_client()
        out = set()
        for channel in self._by_channel:
            try:
                node = cluster.get_node_from_key(channel)
            except RedisClusterException:  # slot not covered (yet): the topology is refreshed
                self._topology.set()
                continue
            if node is not None and node.name == feed.node:
                out.add(channel)
        return out

    def _open_feed(self, feed: _Feed) -> tuple[PubSub, Redis | None]:
        """A new Pub/Sub for ``feed`` (and, for a cluster node, the client that owns it)."""
        if feed.node is None:
            return self.redis.pubsub(), None
        host, _, port = feed.node.rpartition(":")
        # No retries inside redis-py: a broken connection must reach the loop below, which
        # subscribes everything again on a new one (redis-py's own resubscription would send
        # every shard channel in one SSUBSCRIBE, which Redis refuses across slots).
        client = Redis(
            host=host,
            port=int(port),
            decode_responses=True,
            protocol=2,
            socket_timeout=HEARTBEAT_S * 2,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
            **self._node_kwargs,
        )
        return client.pubsub(), client

    async def _listen_forever(self, feed: _Feed) -> None:
        """The live reader's connection ``feed``: notices in, confirmations trigger reads.

        Every (re)subscription is confirmed by Redis; on each confirmation the stream is read
        from its cursor, so what was published before the subscription took hold (or while Redis
        was away) comes too, once.
        """
        failures = 0
        while not self._closed and self._feeds.get(feed.node) is feed:
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
                while not self._closed and self._feeds.get(feed.node) is feed:
                    msg = await ps.get_message(timeout=HEARTBEAT_S)
                    if msg is None:
                        idle += HEARTBEAT_S
                        if idle > 3 * HEARTBEAT_S:
                            raise RedisConnectionError("no answer to PING on the subscription")
                        await ps.ping()
                        continue
                    idle = 0.0
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
                        if msg["channel"] in self._by_channel:
                            self._topology.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
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
                    await ps.aclose()  # type: ignore[no-untyped-call]
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()

    async def _sync_forever(self, feed: _Feed) -> None:
        """Keep ``feed``'s channels equal to the streams read here (that live on its node)."""
        while not self._closed:
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
        cluster = self._cluster_client()
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._closed:
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
            for name in primaries - set(self._feeds):
                feed = self._feeds[name] = _Feed(name)
                feed.tasks = [
                    loop.create_task(self._listen_forever(feed)),
                    loop.create_task(self._sync_forever(feed)),
                ]
            for gone in set(self._feeds) - set(primaries):
                for t in self._feeds.pop(gone).tasks:
                    t.cancel()
            self._resync_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._topology.wait(), TOPOLOGY_S)
            # Several reasons at once (every channel of a moved slot) make one refresh.
            await asyncio.sleep(0.05)

    def _on_subscribed(self, channel: str) -> None:
        st = self._by_channel.get(channel)
        if st is None:
            return
        # Whatever came before the subscription held: read it, and tell the groups.
        self._pull_soon(st)
        for gw in st.groups:
            gw.watchers.notify()

    def _on_notice(self, channel: str, last: str) -> None:
        """A publish on a stream read here (``last`` is its newest position), or ``r:<group>``:
        messages of that group were made available again (released) by some process."""
        st = self._by_channel.get(channel)
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
            if st.publishing:
                # Likely our own publish, whose answer is on its way: decided then.
                st.noticed = max(st.noticed, pos)
            else:
                self._pull_soon(st)

    def _pull_soon(self, st: _Stream) -> None:
        """Read ``st`` from its cursor: at most one read in flight per stream (bursts coalesce)."""
        if st.cursor is None or not st.tails:
            return
        if st.pulling:
            st.again = True
            return
        st.pulling = True
        self._spawn(self._pull(st))

    async def _pull(self, st: _Stream) -> None:
        try:
            while self._streams.get((st.tenant, st.address)) is st and st.tails:
                st.again = False
                cursor = st.cursor
                assert cursor is not None
                self.live_reads += 1
                async with self._limit:
                    rows: Any = await self.redis.xrange(st.key, min="(" + cursor, count=READ_COUNT)
                entries = rows if rows and type(rows[0][1]) is list else list(map(_flat, rows))
                if self._streams.get((st.tenant, st.address)) is not st:
                    return
                if st.cursor != cursor:
                    # Passed on meanwhile by this process's own publish: read on from there.
                    continue
                if entries:
                    self._dispatch(st, entries, _now_ms())
                if len(entries) < READ_COUNT and not st.again:
                    return
        except _DOWN as exc:
            # Try again shortly; after a longer outage the listener's resubscription does too.
            log.debug("live read failed (%s)", exc)
            asyncio.get_running_loop().call_later(0.2, self._pull_soon, st)
        finally:
            st.pulling = False

    def _pass_on_own(self, st: _Stream, stored: list[list[str]], rows: list[Any], cut: str) -> None:
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

    def _dispatch(self, st: _Stream, entries: list[tuple[str, list[str]]], now: int) -> None:
        messages = [_message(id_, flat) for id_, flat in entries]
        st.cursor = messages[-1].id
        live = [m for m in messages if m.expires_at is None or m.expires_at > now]
        if not live:
            return
        for t in tuple(st.tails):  # a callback may open or close tails
            if t.closed:
                continue
            batch = live
            if t.after is not None:
                after = t.after
                batch = [m for m in live if m.pos > after]
                if not batch:
                    continue
                t.after = None
            if t.pending is not None:
                t.pending.extend(batch)
                continue
            try:
                t.callback(batch)
            except Exception:
                log.exception("tail callback failed")

    # -- move (queue) ------------------------------------------------------------------------

    async def claim(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        count: int,
        lease_ms: int,
        subject_filter: Pattern | None = None,
    ) -> list[Delivery]:
        if count <= 0:
            return []
        cfg = self._tenant(tenant)
        base = _base(tenant, address)
        keys = (f"{base}:s", *_group_keys(base, group), f"{base}:m")
        rows = await self._run(
            "claim",
            keys,
            (
                group,
                consumer,
                count,
                lease_ms,
                subject_filter.text if subject_filter is not None else "",
                cfg.idle_expiry_ms,
                count + CLAIM_SCAN,
            ),
        )
        self._deadline(tenant, address, group, rows[0], rows[1])
        return [Delivery(_message(id_, flat), int(n)) for id_, flat, n in rows[2:]]

    async def settle(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        outcome: Outcome,
    ) -> None:
        if not ids:
            return
        cfg = self._tenant(tenant)
        base = _base(tenant, address)
        keys = (f"{base}:s", *_group_keys(base, group))
        code = {
            Outcome.ACCEPTED: "a",
            Outcome.RELEASED: "r",
            Outcome.MODIFIED: "m",
            Outcome.REJECTED: "a",
        }[outcome]
        if outcome is Outcome.REJECTED and cfg.dead_letter is not None:
            # Dead-letter first, then remove: a failure in between redelivers, never loses.
            held = await self._run(
                "settle",
                keys,
                (group, consumer, "h", 0, f"{base}:p", self._pub, cfg.idle_expiry_ms, *ids),
            )
            dead = [_message(id_, flat) for id_, flat in held[3:]]
            if not dead:
                return
            await self.publish(tenant, cfg.dead_letter, [_dead_letter(m, address) for m in dead])
            ids = [m.id for m in dead]
        rows = await self._run(
            "settle",
            keys,
            (
                *(group, consumer, code, cfg.redelivery_delay_ms),
                *(f"{base}:p", self._pub, cfg.idle_expiry_ms),
                *ids,
            ),
        )
        self._deadline(tenant, address, group, rows[0], rows[2])
        if rows[1]:
            gw = self._groups.get((tenant, address, group))
            if gw is not None:
                gw.watchers.notify()

    async def renew(
        self,
        tenant: str,
        address: str,
        group: str,
        consumer: str,
        ids: Sequence[str],
        lease_ms: int,
    ) -> list[str]:
        if not ids:
            return []
        base = _base(tenant, address)
        lease_key = _group_keys(base, group)[0]
        rows = await self._run("renew", (f"{base}:s", lease_key), (group, consumer, lease_ms, *ids))
        return [str(r) for r in rows]

    def watch_group(
        self, tenant: str, address: str, group: str, on_available: Callable[[], None]
    ) -> _Watch:
        gw = self._groups.get((tenant, address, group))
        if gw is None:
            st = self._streams.get((tenant, address)) or self._add_stream(tenant, address, None)
            gw = self._groups[(tenant, address, group)] = _GroupWatch(st, group)
            st.groups.append(gw)
        w = _Watch(self, gw, on_available)
        gw.watchers.append(w)
        # Something may wait already (published before, or a lease runs out): say so once, and
        # learn the group's next deadline.
        with contextlib.suppress(RuntimeError):
            gw.watchers.notify()
            if gw.timer is None:
                self._spawn(self._poll(gw))
        return w

    def _unwatch(self, w: _Watch) -> None:
        gw = w.gw
        with contextlib.suppress(ValueError):
            gw.watchers.remove(w)
        if gw.watchers:
            return
        if gw.timer is not None:
            gw.timer.cancel()
            gw.timer = None
        st = gw.stream
        key = (st.tenant, st.address, gw.group)
        if self._groups.get(key) is gw:
            del self._groups[key]
        with contextlib.suppress(ValueError):
            st.groups.remove(gw)
        self._release(st)

    def _deadline(self, tenant: str, address: str, group: str, now: int, deadline: int) -> None:
        """A claim or settle told the group's next deadline (Redis time): wake up for it."""
        gw = self._groups.get((tenant, address, group))
        if gw is not None and deadline >= 0:
            # One ms late rather than early.
            self._arm(gw, max(0, int(deadline) - int(now) + 1) / 1000)

    def _arm(self, gw: _GroupWatch, delay: float) -> None:
        if self._closed or not gw.watchers:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + min(delay, GROUP_POLL_S)
        if gw.timer is not None:
            if gw.timer_at <= when:
                return
            gw.timer.cancel()
        gw.timer = loop.call_at(when, self._on_timer, gw)
        gw.timer_at = when

    def _on_timer(self, gw: _GroupWatch) -> None:
        gw.timer = None
        if gw.watchers and not self._closed:
            self._spawn(self._poll(gw))

    async def _poll(self, gw: _GroupWatch) -> None:
        """Ask Redis whether anything became claimable (a lease ran out, here or elsewhere)."""
        delay = GROUP_POLL_S
        try:
            now, avail, deadline = await self._run("poll", gw.keys[:3], (gw.group,))
            if avail:
                gw.watchers.notify()
            elif deadline >= 0:
                delay = max(0, int(deadline) - int(now) + 1) / 1000
        except (BrokerUnavailable, RedisError):
            log.debug("group poll failed", exc_info=True)
        self._arm(gw, delay)

    # -- reconciliation ----------------------------------------------------------------------

    async def lookup(self, tenant: str, address: str, message_id: str) -> Message | None:
        base = _base(tenant, address)
        stream = f"{base}:s"
        r = self.redis
        try:
            async with self._limit:
                return await self._lookup(r, base, stream, message_id)
        except _DOWN as exc:
            raise BrokerUnavailable(f"Redis is unavailable: {exc}") from exc

    @staticmethod
    async def _lookup(
        r: Redis | RedisCluster, base: str, stream: str, message_id: str
    ) -> Message | None:
        hit = await r.get(f"{base}:i:{_id_part(message_id)}")
        if hit:
            rows: Any = await r.xrange(stream, min=hit, max=hit)
            if rows:
                return _message(*_flat(rows[0]))
        # Past the dedup window: search the retained messages, newest first.
        end = "+"
        while True:
            rows = await r.xrevrange(stream, max=end, min="-", count=256)
            for row in rows:
                id_, flat = _flat(row)
                m = _message(id_, flat)
                if m.message_id == message_id:
                    return m
            if len(rows) < 256:
                return None
            end = "(" + rows[-1][0]


def _raw(response: Any, **options: Any) -> Any:
    return response


def _flat(row: Any) -> tuple[str, list[str]]:
    """An XRANGE row (id, [field, value, …]) -> (id, flat fields); (id, {field: value}) too,
    as redis-py parses it by default."""
    id_, fields = row
    if isinstance(fields, dict):
        flat: list[str] = []
        for k, v in fields.items():
            flat += (k, v)
        return str(id_), flat
    return str(id_), fields


def _dead_letter(m: Message, address: str) -> NewMessage:
    headers: dict[str, Any] = dict(m.headers) if m.headers else {}
    headers["x-dead-letter-from"] = address
    headers["x-dead-letter-id"] = m.id
    return NewMessage(
        body=m.body,
        publisher=m.publisher,
        subject=m.subject,
        message_id=m.message_id,
        content_type=m.content_type,
        headers=headers,
    )
