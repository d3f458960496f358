-- needs: common group
-- KEYS: stream, L, W, N, Q, meta. ARGV: group, max groups of the address, idle expiry (ms).
-- -> 1 the group exists (created now, or before), 0 the address has max groups already.
local s, L, W, N, Q, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if group_exists(s, ARGV[1]) then return 1 end
local info = redis.pcall('XINFO', 'STREAM', s)
if type(info) == 'table' and not info.err then
  for i = 1, #info, 2 do
    if info[i] == 'groups' and info[i + 1] >= tonumber(ARGV[2]) then return 0 end
  end
end
create_group(s, ARGV[1], L, W, N, Q)
for _, k in ipairs({s, meta}) do redis.call('PEXPIRE', k, ARGV[3]) end
return 1
