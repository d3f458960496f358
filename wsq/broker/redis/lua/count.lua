-- needs: common
-- A tenant's count of one kind (connections, links) across gateway processes. KEYS: the
-- tenant's hash, one field per process: '<count> <ms its share expires>'. ARGV: this process,
-- how many it gives back now, how many more it wants (0: none), the tenant's limit (-1: no
-- check), the lease (ms), 1 to set its count to ARGV[3] (a refresh) instead.
-- -> {1 granted or 0 refused, the tenant's count after}
-- A process refreshes its share well within the lease; one that died stops, and its share is
-- dropped here by the first call after the lease ran out (the whole hash goes when every
-- process's has).
local h, me = KEYS[1], ARGV[1]
local back, want, limit, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local now = now_ms()
local others, mine = 0, 0
local all = redis.call('HGETALL', h)
for i = 1, #all, 2 do
  local n, exp = string.match(all[i + 1], '^(%d+) (%d+)$')
  if all[i] == me then
    mine = tonumber(n)
  elseif not n or tonumber(exp) <= now then
    redis.call('HDEL', h, all[i])
  else
    others = others + tonumber(n)
  end
end
if ARGV[6] == '1' then
  mine, want = want, 0
else
  mine = math.max(mine - back, 0)
end
local granted = 1
if want > 0 then
  if limit >= 0 and others + mine + want > limit then granted = 0 else mine = mine + want end
end
if mine > 0 then
  redis.call('HSET', h, me, fmt(mine) .. ' ' .. fmt(now + lease))
  redis.call('PEXPIRE', h, lease)
else
  redis.call('HDEL', h, me)
end
return {granted, others + mine}
