-- needs: common
-- A tenant's live addresses (max_addresses). KEYS: its sorted set, scored by the ms each
-- address idles out. ARGV: address, limit, idle expiry (ms).
-- -> 0 when the address is (now) live until now + idle; else, changing nothing, the ms until
-- the oldest live address idles out.
local z, a = KEYS[1], ARGV[1]
local limit, idle = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
if not redis.call('ZSCORE', z, a) and redis.call('ZCARD', z) >= limit then
  local oldest = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  return math.max(tonumber(oldest[2]) - now, 1)
end
redis.call('ZADD', z, now + idle, a)
redis.call('PEXPIRE', z, idle)
return 0
