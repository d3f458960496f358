-- needs: common group
-- KEYS: stream, L, W, N. ARGV: group, consumer, outcome (a r m h), delay, notice channel,
-- PUBLISH or SPUBLISH, idle expiry (ms), ids... -> {now, any available now (0/1), next deadline, {id, fields}...
-- (outcome h: held, unchanged)}. Messages made available at once are announced on the channel
-- ("r:<group>"), so consumers of the group on other processes claim them at once.
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
