-- needs: common group
-- KEYS: stream, L. ARGV: group, consumer, lease, ids... -> ids renewed
local s, L = KEYS[1], KEYS[2]
local g, c = ARGV[1], ARGV[2]
if not group_exists(s, g) then return {} end
local deadline = now_ms() + tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if #redis.call('XPENDING', s, g, id, id, 1, c) == 1 then
    redis.call('ZADD', L, 'XX', deadline, id)
    out[#out + 1] = id
  end
end
return out
