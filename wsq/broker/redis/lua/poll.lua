-- needs: common group
-- KEYS: stream, L, W. ARGV: group. -> {now, anything claimable now (0/1), next deadline}
local s, L, W = KEYS[1], KEYS[2], KEYS[3]
local now = now_ms()
local nd = next_deadline(L, W)
local avail = 0
if nd >= 0 and nd <= now then avail = 1 end
if avail == 0 and group_exists(s, ARGV[1]) then
  if #redis.call('XPENDING', s, ARGV[1], '-', '+', 1, READY) > 0 then avail = 1 end
end
return {now, avail, nd}
