-- Helpers every script uses: Redis time in ms, ids, entry fields, ttl expiry.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(n) return string.format('%.0f', n) end
local function id_ms(id) return tonumber(string.match(id, '^(%d+)')) end
local function next_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms .. '-' .. fmt(tonumber(seq) + 1)
end
local function field(f, name)
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
  return nil
end
local function expired(id, f, now)
  local ttl = field(f, 't')
  return ttl ~= nil and id_ms(id) + tonumber(ttl) <= now
end
