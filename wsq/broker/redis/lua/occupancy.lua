-- An address's occupancy: KEYS[1] the set of processes (owners) with receivers on it, KEYS[2]
-- its occupancy number (bumped when it becomes occupied or vacated: what orders the events).
-- ARGV[1] "add" or "rem", ARGV[2] the owner.
-- -> the new number when the address became occupied (add) or vacated (rem); else 0.
local op, owner = ARGV[1], ARGV[2]
if op == "add" then
  if redis.call("SADD", KEYS[1], owner) == 1 and redis.call("SCARD", KEYS[1]) == 1 then
    local n = redis.call("INCR", KEYS[2])
    redis.call("PERSIST", KEYS[2])
    return n
  end
  return 0
end
if redis.call("SREM", KEYS[1], owner) == 1 and redis.call("EXISTS", KEYS[1]) == 0 then
  local n = redis.call("INCR", KEYS[2])
  -- A vacated address keeps its number a day: an address used again goes on counting.
  redis.call("PEXPIRE", KEYS[2], 86400000)
  return n
end
return 0
