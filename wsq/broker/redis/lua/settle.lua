-- needs: common group
-- KEYS: stream, L, W, N, Q. ARGV: group, consumer, outcome (a accepted, j rejected, r released,
-- m modified, x abandoned: the consumer left, its deliveries ended without an outcome), delay,
-- notice channel, PUBLISH or SPUBLISH, idle expiry (ms), max_deliveries, has dead letter (0/1),
-- handoff ms, ids... -> {now, any available now (0/1), next deadline, dead pending (0/1),
-- dropped}. Messages made available at once are announced on the channel ("r:<group>"), so
-- consumers of the group on other processes claim them at once.
local s, L, W, N, Q = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local g, c, outcome, delay = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local P = policy(ARGV[8], ARGV[9], ARGV[10])
local now = now_ms()
if outcome == 'x' then redis.call('HDEL', Q, c) end
if not group_exists(s, g) then return {now, 0, -1, 0, 0} end
local out = {now, 0, -1, 0, 0}
for i = 11, #ARGV do
  local id = ARGV[i]
  if #redis.call('XPENDING', s, g, id, id, 1, c) == 1 then
    local r
    if outcome == 'a' then
      redis.call('XACK', s, g, id)
      redis.call('ZREM', L, id)
      forget_message(N, id)
    elseif outcome == 'j' then
      redis.call('ZREM', L, id)
      r = to_dead(s, g, N, id, 'rejected', P)
    elseif outcome == 'r' then
      r = give_back(s, g, L, W, N, id, c, false, 0, P, now)
    elseif outcome == 'm' then
      r = give_back(s, g, L, W, N, id, c, true, delay, P, now)
    else
      r = give_back(s, g, L, W, N, id, c, true, 0, P, now)
    end
    if r == 'ready' then out[2] = 1
    elseif r == 'dead' then out[4] = 1
    elseif r == 'dropped' then out[5] = out[5] + 1 end
  end
end
forget_consumer(s, g, c)
if out[2] == 1 then redis.call(ARGV[6], ARGV[5], 'r:' .. g) end
-- Keys this call may have created (delays, counts) expire with the address too.
for _, k in ipairs({s, L, W, N, Q}) do redis.call('PEXPIRE', k, ARGV[7]) end
out[3] = next_deadline(L, W)
return out
