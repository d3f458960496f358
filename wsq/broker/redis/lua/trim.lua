-- Retention: at most 1024 entries go per call (a larger backlog goes over the next calls).
-- Answers the newest id trimmed (nil: none).
local function trim(s, meta, maxlen, maxage, now)
  local dropped = nil
  local cut = nil
  -- Trim the entries ``old`` (the oldest of the stream, in order): the newest of them that had
  -- not expired by its own ttl was lost to retention.
  local function drop(old)
    for _, e in ipairs(old) do
      if not expired(e[1], e[2], now) then dropped = e[1] end
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
  if dropped then redis.call('HSET', meta, 'dropped', dropped) end
  return cut
end
