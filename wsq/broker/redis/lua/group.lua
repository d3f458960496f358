-- Consumer groups. Pseudo consumers: READY holds what is available again (released, expired,
-- skipped by a filter), DELAY what waits out a redelivery delay, DEAD what waits to be copied
-- to the dead-letter address, DYING what a process is copying there (its lease in L).
-- L lease deadlines, W delays (sorted sets, score = ms). N (hash), per message id: its
-- redelivered count (field <id>), who held it last and until when it waits for another consumer
-- (<id>> = '<until ms> <consumer>'), why it is dead (<id>!). Q (hash): the standing consumers
-- whose last claim left them wanting work.
-- P, the tenant's rules: {max = max_deliveries, dl = has a dead-letter address, handoff = ms}.
local READY, DELAY, DEAD, DYING = '~ready', '~delay', '~dead', '~dying'
local function policy(max, dl, handoff)
  return {max = tonumber(max), dl = dl == '1', handoff = tonumber(handoff)}
end
local function forget_message(N, id) redis.call('HDEL', N, id, id .. '>', id .. '!') end
local function forget_consumer(s, g, c)
  if #redis.call('XPENDING', s, g, '-', '+', 1, c) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', s, g, c)
  end
end
-- Hands id (in the PEL) to pseudo consumer to; false when the entry is gone (trimmed): then it
-- is out of the PEL and forgotten.
local function move(s, g, N, to, id)
  if #redis.call('XCLAIM', s, g, to, 0, id, 'JUSTID') > 0 then return true end
  redis.call('XACK', s, g, id)
  forget_message(N, id)
  return false
end
-- id leaves the group for good for reason: to DEAD when there is a dead-letter address, else
-- dropped. Answers 'dead', 'dropped' or 'gone'.
local function to_dead(s, g, N, id, reason, P)
  if P.dl then
    if not move(s, g, N, DEAD, id) then return 'gone' end
    redis.call('HSET', N, id .. '!', reason)
    return 'dead'
  end
  redis.call('XACK', s, g, id)
  forget_message(N, id)
  return 'dropped'
end
-- A delivery of id to c ended without 'accepted': released, or (failed) modified, abandoned or
-- its lease ran out, which counts. Answers 'ready', 'delayed', 'dead', 'dropped' or 'gone'.
local function give_back(s, g, L, W, N, id, c, failed, delay, P, now)
  redis.call('ZREM', L, id)
  if failed then
    local n = redis.call('HINCRBY', N, id, 1)
    if P.max > 0 and n >= P.max then return to_dead(s, g, N, id, 'delivery-limit', P) end
  end
  if delay > 0 then
    if not move(s, g, N, DELAY, id) then return 'gone' end
    redis.call('ZADD', W, now + delay, id)
    redis.call('HSET', N, id .. '>', fmt(now + delay + P.handoff) .. ' ' .. c)
    return 'delayed'
  end
  if not move(s, g, N, READY, id) then return 'gone' end
  redis.call('HSET', N, id .. '>', fmt(now + P.handoff) .. ' ' .. c)
  return 'ready'
end
-- Whether c leaves READY entry id to another consumer: c held it last, lately.
local function avoids(N, id, c, now)
  local h = redis.call('HGET', N, id .. '>')
  if not h then return false end
  local untl, last = string.match(h, '^(%d+) (.*)$')
  return last == c and tonumber(untl) > now
end
-- Lease deadlines and delays that are due: the messages become available (READY), or dead.
-- Answers {dead (any went to DEAD), dropped (how many were dropped), how many became READY}.
local function due(s, g, L, W, N, now, P)
  local res = {0, 0, 0}
  local ids = redis.call('ZRANGEBYSCORE', L, '-inf', now, 'LIMIT', 0, 256)
  -- The holders of the expired leases: each HTTP claim is a consumer of its own, and one that
  -- is never settled would stay in the group for good. A consumer left holding nothing is
  -- deleted; that is invisible to a live link (XREADGROUP and XCLAIM create it again).
  local holders, seen = {}, {}
  for _, id in ipairs(ids) do
    local p = redis.call('XPENDING', s, g, id, id, 1)
    redis.call('ZREM', L, id)
    if #p == 0 then
      forget_message(N, id)
    elseif p[1][2] == DYING then
      -- A process took it to dead-letter and did not finish: another try.
      if move(s, g, N, DEAD, id) then res[1] = 1 end
    else
      local holder = p[1][2]
      if not seen[holder] then
        seen[holder] = true
        holders[#holders + 1] = holder
      end
      local r = give_back(s, g, L, W, N, id, holder, true, 0, P, now)
      if r == 'dead' then res[1] = 1
      elseif r == 'dropped' then res[2] = res[2] + 1
      elseif r == 'ready' then res[3] = res[3] + 1 end
    end
  end
  for _, c in ipairs(holders) do
    if c ~= READY and c ~= DELAY and c ~= DEAD then forget_consumer(s, g, c) end
  end
  ids = redis.call('ZRANGEBYSCORE', W, '-inf', now, 'LIMIT', 0, 256)
  for _, id in ipairs(ids) do
    if move(s, g, N, READY, id) then res[3] = res[3] + 1 end
  end
  if #ids > 0 then redis.call('ZREM', W, unpack(ids)) end
  return res
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
-- At the oldest retained message, as a first claim finds it (a queue keeps what was published
-- before its first consumer came); state left by an earlier group of that name goes.
local function create_group(s, g, L, W, N, Q)
  redis.call('XGROUP', 'CREATE', s, g, '0', 'MKSTREAM')
  redis.call('DEL', L, W, N, Q)
end
local function dead_pending(s, g)
  return #redis.call('XPENDING', s, g, '-', '+', 1, DEAD) > 0
end
