-- Bounds on an address's dedup ids and idempotency keys (max_dedup_ids, max_idempotency_keys).
-- An index is a sorted set of what follows ``prefix`` (``…:i:`` / ``…:k:``) in the names of
-- the keys it bounds, scored by the ms each was stored, strictly increasing (a thousandth of a
-- ms apart within one ms) so the oldest is always the first. ``remember`` adds one; ``bound``
-- drops what is past the window (its key expired by itself) and, past ``max``, forgets the
-- oldest: their keys are deleted, so a late retry of those is stored again (docs/security.md).
local function index(key, prefix, now)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local score = now
  if #top > 0 and tonumber(top[2]) >= now then score = tonumber(top[2]) end
  return {key = key, prefix = prefix, score = score, added = false}
end
local function remember(ix, key)
  ix.score = ix.score + 0.001
  redis.call('ZADD', ix.key, string.format('%.3f', ix.score), string.sub(key, #ix.prefix + 1))
  ix.added = true
end
local function bound(ix, now, window, max)
  if not ix.added then return end
  redis.call('ZREMRANGEBYSCORE', ix.key, '-inf', now - window)
  local extra = redis.call('ZCARD', ix.key) - max
  if extra > 0 then
    local old = redis.call('ZPOPMIN', ix.key, extra)
    for i = 1, #old, 2 do redis.call('DEL', ix.prefix .. old[i]) end
  end
  redis.call('PEXPIRE', ix.key, window)
end
