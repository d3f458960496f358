-- needs: common group match
-- KEYS: stream, L, W, N, Q, meta. ARGV: group, consumer, count, lease, pattern, idle, scan,
-- room (-1: a one-off consumer, nothing recorded), max_deliveries, has dead letter (0/1),
-- handoff ms, notice channel, PUBLISH or SPUBLISH.
-- -> {now, next deadline, dead pending (0/1), dropped, {id, fields, redelivered}...}
-- Leases and delays that ran out are announced on the channel ("r:<group>") as releases are:
-- the group's consumers on every process claim their share of them at once.
local s, L, W, N, Q, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local g, c = ARGV[1], ARGV[2]
local count, lease, pat = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local idle, scan, room = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local P = policy(ARGV[9], ARGV[10], ARGV[11])
local now = now_ms()
if not group_exists(s, g) then create_group(s, g, L, W, N, Q) end
local res = due(s, g, L, W, N, now, P)
if res[3] > 0 then redis.call(ARGV[13], ARGV[12], 'r:' .. g) end
local deadline = now + lease
local out = {now, 0, res[1], res[2]}
local got = 0
local function take(id, f)
  redis.call('ZADD', L, deadline, id)
  got = got + 1
  out[#out + 1] = {id, f, tonumber(redis.call('HGET', N, id) or '0')}
end
-- Another standing consumer wants work: what c let go lately waits for it (HANDOFF_MS).
local others = redis.call('HLEN', Q)
if redis.call('HEXISTS', Q, c) == 1 then others = others - 1 end
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
      forget_message(N, id)
    elseif matches(pat, field(ent[1][2], 's')) and not (others > 0 and avoids(N, id, c, now)) then
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
if room >= 0 then
  if got < room then
    -- Consumers of a process that died unannounced are never removed: start afresh past 4096.
    if redis.call('HLEN', Q) >= 4096 then redis.call('DEL', Q) end
    redis.call('HSET', Q, c, now)
  else
    redis.call('HDEL', Q, c)
  end
end
if got == 0 then forget_consumer(s, g, c) end
out[2] = next_deadline(L, W)
if res[1] == 0 and dead_pending(s, g) then out[3] = 1 end
for _, k in ipairs({s, L, W, N, Q, meta}) do redis.call('PEXPIRE', k, idle) end
return out
