-- A lease one process holds on something of an address (a sink's turn to read it).
-- KEYS[1] the lease; ARGV[1] the holder; ARGV[2] ms, "0" to give it up.
-- -> 1 when the holder has it (taken, renewed or given up), 0 when another holds it.
local cur = redis.call("GET", KEYS[1])
if ARGV[2] == "0" then
  if cur == ARGV[1] then redis.call("DEL", KEYS[1]) end
  return 1
end
if cur and cur ~= ARGV[1] then return 0 end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
return 1
