-- Retention by length, age and bytes: at most 1024 entries go per call for each (a larger
-- backlog goes over the next calls). The meta hash's ``bytes`` is what the stream's entries
-- cost (``size``, kept by publish.lua and here), counted from after ``bfrom`` when the stream
-- held entries before bytes were counted (an upgrade): those are trimmed first, not counted.
-- The newest entry always stays. Answers the newest id trimmed (nil: none).
local function size(f)
  return #(field(f, 'b') or '') + #(field(f, 'x') or field(f, 'h') or '')
end
local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  return am > bm or (am == bm and tonumber(as) > tonumber(bs))
end
local function trim(s, meta, maxlen, maxage, maxbytes, now)
  local dropped = nil
  local cut = nil
  local gone = 0
  local counted = redis.call('HMGET', meta, 'bytes', 'bfrom')
  local total, from = tonumber(counted[1]) or 0, counted[2]
  -- Trim the entries ``old`` (the oldest of the stream, in order): the newest of them that had
  -- not expired by its own ttl was lost to retention.
  local function drop(old)
    for _, e in ipairs(old) do
      if not expired(e[1], e[2], now) then dropped = e[1] end
      if not from or after(e[1], from) then gone = gone + size(e[2]) end
    end
    cut = old[#old][1]
    redis.call('XTRIM', s, 'MINID', next_id(cut))
  end
  if maxlen > 0 then
    local excess = redis.call('XLEN', s) - maxlen
    if excess > 0 then
      if excess > 1024 then excess = 1024 end
      drop(redis.call('XRANGE', s, '-', '+', 'COUNT', excess))
    end
  end
  if maxage > 0 then
    local old = redis.call('XRANGE', s, '-', '(' .. fmt(now - maxage) .. '-0', 'COUNT', 1024)
    if #old > 0 then drop(old) end
  end
  if maxbytes > 0 and total - gone > maxbytes then
    local left = total - gone
    local n = redis.call('XLEN', s)
    local budget = 1024
    while left > maxbytes and n > 1 and budget > 0 do
      local page = redis.call('XRANGE', s, '-', '+', 'COUNT', math.min(16, n - 1, budget))
      local take = {}
      for _, e in ipairs(page) do
        if left <= maxbytes then break end
        take[#take + 1] = e
        if not from or after(e[1], from) then left = left - size(e[2]) end
      end
      if #take == 0 then break end
      drop(take)
      n = n - #take
      budget = budget - #take
    end
  end
  if gone > 0 then redis.call('HSET', meta, 'bytes', fmt(math.max(total - gone, 0))) end
  if dropped then redis.call('HSET', meta, 'dropped', dropped) end
  return cut
end
