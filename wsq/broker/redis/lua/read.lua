-- needs: common trim
-- KEYS: stream, meta. ARGV: maxlen, maxage, maxbytes, idle, after, count, max bytes of the
-- answer (0: no budget), 1 when the first unexpired entry comes whatever its size. -> {now,
-- dropped, entries, 1 when stopped at the budget, bytes counted}. Under a budget the entries are
-- read 16 at a time, so the script holds no more than that beyond what it answers. An entry's
-- size is what it costs the address (trim.lua's ``size``: body and props); expired entries come
-- (counted in ``count``) but do not count.
local s, meta = KEYS[1], KEYS[2]
local now = now_ms()
if redis.call('EXISTS', s) == 0 then return {now, false, {}, 0, 0} end
trim(s, meta, tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), now)
redis.call('PEXPIRE', s, ARGV[4])
redis.call('PEXPIRE', meta, ARGV[4])
local entries = {}
local want, budget, one = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8] == '1'
local full, used = 0, 0
if want > 0 and budget <= 0 then
  entries = redis.call('XRANGE', s, '(' .. ARGV[5], '+', 'COUNT', want)
elseif want > 0 then
  local start = '(' .. ARGV[5]
  while #entries < want and full == 0 do
    local n = math.min(want - #entries, 16)
    local page = redis.call('XRANGE', s, start, '+', 'COUNT', n)
    for _, e in ipairs(page) do
      if not expired(e[1], e[2], now) then
        local sz = size(e[2])
        if used + sz > budget and not one then
          full = 1
          break
        end
        used = used + sz
        one = false
      end
      entries[#entries + 1] = e
    end
    if #page < n then break end
    start = '(' .. page[#page][1]
  end
end
return {now, redis.call('HGET', meta, 'dropped'), entries, full, used}
