-- needs: common group
-- KEYS: stream, L, N. ARGV: group, mode, lease (ms), idle expiry (ms), ids...
-- mode t (take): leases up to 64 messages waiting in DEAD to DYING for this process to copy to
--   the dead-letter address -> {{id, fields, reason}...}; one that expires goes back to DEAD.
-- mode d (done): the copies of ids are stored: they leave the group -> {}.
local s, L, N = KEYS[1], KEYS[2], KEYS[3]
local g, mode = ARGV[1], ARGV[2]
if not group_exists(s, g) then return {} end
local out = {}
if mode == 't' then
  local deadline = now_ms() + tonumber(ARGV[3])
  for _, e in ipairs(redis.call('XPENDING', s, g, '-', '+', 64, DEAD)) do
    local id = e[1]
    local ent = redis.call('XRANGE', s, id, id)
    if #ent == 0 then
      redis.call('XACK', s, g, id)
      forget_message(N, id)
    else
      redis.call('XCLAIM', s, g, DYING, 0, id, 'JUSTID')
      redis.call('ZADD', L, deadline, id)
      out[#out + 1] = {id, ent[1][2], redis.call('HGET', N, id .. '!') or 'rejected'}
    end
  end
else
  for i = 5, #ARGV do
    local id = ARGV[i]
    if #redis.call('XPENDING', s, g, id, id, 1, DYING) == 1 then
      redis.call('XACK', s, g, id)
      redis.call('ZREM', L, id)
      forget_message(N, id)
    end
  end
end
for _, k in ipairs({s, L, N}) do redis.call('PEXPIRE', k, ARGV[4]) end
return out
