-- Consumer groups: READY holds what is available again (released, expired, skipped by a
-- filter), DELAY what waits out a redelivery delay; L lease deadlines, W delays (sorted sets,
-- score = ms), N redelivered counts (hash).
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
