-- A room's members (KEYS[1], hash: member id -> {"o": owner, "m": member}) and its version
-- (KEYS[2], a counter bumped at every change).
-- ARGV[1] the room's notice channel (the address's, in its slot), ARGV[2] "PUBLISH" or
-- "SPUBLISH" (a cluster): every change announces "v:<new version>" there, so that the nodes
-- watching the room read it when it changes instead of polling it.
-- ARGV[3] "join": ARGV[4] id, ARGV[5] value, ARGV[6] the most members; 1 added, 0 full.
-- ARGV[3] "drop": ARGV[4..] ids; the ids removed (only the caller that removed one hears of it).
local op = ARGV[3]
local function announce()
  local version = redis.call("INCR", KEYS[2])
  redis.call(ARGV[2], ARGV[1], "v:" .. version)
end
if op == "join" then
  if redis.call("HEXISTS", KEYS[1], ARGV[4]) == 0
      and redis.call("HLEN", KEYS[1]) >= tonumber(ARGV[6]) then
    return 0
  end
  redis.call("HSET", KEYS[1], ARGV[4], ARGV[5])
  announce()
  redis.call("PERSIST", KEYS[2])
  return 1
end
local removed = {}
for i = 4, #ARGV do
  if redis.call("HDEL", KEYS[1], ARGV[i]) == 1 then
    removed[#removed + 1] = ARGV[i]
  end
end
if #removed > 0 then
  announce()
  -- An empty room's hash is gone; its version stays a day (never restarting under a watcher).
  if redis.call("EXISTS", KEYS[1]) == 0 then
    redis.call("PEXPIRE", KEYS[2], 86400000)
  end
end
return removed
