-- A room's members (KEYS[1], hash: member id -> {"o": owner, "m": member}) and its version
-- (KEYS[2], a counter bumped at every change: what the other processes poll).
-- ARGV[1] "join": ARGV[2] id, ARGV[3] value, ARGV[4] the most members; 1 added, 0 full.
-- ARGV[1] "drop": ARGV[2..] ids; the ids removed (only the caller that removed one hears of it).
local op = ARGV[1]
if op == "join" then
  if redis.call("HEXISTS", KEYS[1], ARGV[2]) == 0
      and redis.call("HLEN", KEYS[1]) >= tonumber(ARGV[4]) then
    return 0
  end
  redis.call("HSET", KEYS[1], ARGV[2], ARGV[3])
  redis.call("INCR", KEYS[2])
  redis.call("PERSIST", KEYS[2])
  return 1
end
local removed = {}
for i = 2, #ARGV do
  if redis.call("HDEL", KEYS[1], ARGV[i]) == 1 then
    removed[#removed + 1] = ARGV[i]
  end
end
if #removed > 0 then
  redis.call("INCR", KEYS[2])
  -- An empty room's hash is gone; its version stays a day (never restarting under a watcher).
  if redis.call("EXISTS", KEYS[1]) == 0 then
    redis.call("PEXPIRE", KEYS[2], 86400000)
  end
end
return removed
