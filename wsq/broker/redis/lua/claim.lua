-- needs: common group match
-- KEYS: stream, L, W, N, meta. ARGV: group, consumer, count, lease, pattern, idle, scan.
-- -> {now, next deadline, {id, fields, redelivered}...}
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
