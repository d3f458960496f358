-- needs: common trim
-- KEYS: stream, meta. ARGV: maxlen, maxage, idle, after, count, max bytes (0: no budget), 1 when
-- the first unexpired entry comes whatever its size. -> {now, dropped, entries, 1 when stopped at
-- the budget, bytes counted}. Under a budget the entries are read 16 at a time, so the script
-- holds no more than that beyond what it answers. An entry's size is its body and headers (the
-- fields that can be large); expired entries come (counted in ``count``) but do not count.
local s, meta = KEYS[1], KEYS[2]
local now = now_ms()
if redis.call('EXISTS', s) == 0 then return {now, false, {}, 0, 0} end
trim(s, meta, tonumber(ARGV[1]), tonumber(ARGV[2]), now)
redis.call('PEXPIRE', s, ARGV[3])
redis.call('PEXPIRE', meta, ARGV[3])
local entries = {}
local want, budget, one = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local full, used = 0, 0
if want > 0 and budget <= 0 then
  entries = redis.call('XRANGE', s, '(' .. ARGV[4], '+', 'COUNT', want)
elseif want > 0 then
  local start = '(' .. ARGV[4]
  while #entries < want and full == 0 do
    local n = math.min(want - #entries, 16)
    local page = redis.call('XRANGE', s, start, '+', 'COUNT', n)
    for _, e in ipairs(page) do
      if not expired(e[1], e[2], now) then
        local size = #(field(e[2], 'b') or '') + (tonumber(field(e[2], 'z')) or #(field(e[2], 'h') or ''))
        if used + size > budget and not one then
          full = 1
          break
        end
        used = used + size
        one = false
      end
      entries[#entries + 1] = e
    end
    if #page < n then break end
    start = '(' .. page[#page][1]
  end
end
return {now, redis.call('HGET', meta, 'dropped'), entries, full, used}
