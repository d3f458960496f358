-- needs: common group
-- KEYS: stream, L, W. ARGV: group.
-- -> {now, anything claimable now (0/1), next deadline, dead letters pending (0/1)}
local s, L, W = KEYS[1], KEYS[2], KEYS[3]
local now = now_ms()
local nd = next_deadline(L, W)
local avail, dead = 0, 0
if nd >= 0 and nd <= now then avail = 1 end
if group_exists(s, ARGV[1]) then
  if avail == 0 and #redis.call('XPENDING', s, ARGV[1], '-', '+', 1, READY) > 0 then avail = 1 end
  if dead_pending(s, ARGV[1]) then dead = 1 end
end
return {now, avail, nd, dead}
