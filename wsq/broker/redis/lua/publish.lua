-- needs: common trim bound
-- KEYS: stream, meta, the indexes of dedup ids and idempotency keys (``bound``), idempotency key
-- (when ARGV[9] is 5), dedup keys. ARGV: maxlen, maxage, maxbytes, window, idle, n, notification
-- channel, PUBLISH or SPUBLISH (cluster: the notice stays on the slot's shard), index of the
-- idempotency key in KEYS (0: none), request fingerprint, then the messages as ONE JSON array
-- (redis-py's packing costs ~0.6 us per argument in the gateway; the array is one orjson call
-- there and one cjson call here), per message: index of its dedup key in KEYS (0: none), number
-- of fields, fields; numbers as strings; then max_dedup_ids and max_idempotency_keys.
-- Answers {status, prev, cut, {id, duplicate}...}: status 0 published, 1 replayed ({1, the
-- results stored with the idempotency key as text, wsq.core.messages.published_text; the key
-- holds that text, a space and the fingerprint}), 2 the key was stored for another fingerprint;
-- prev: the newest id before this publish (START: none), cut: the newest id retention trimmed
-- ('' none). The new entries are contiguous (one script), so a process whose reader has passed
-- on exactly ``prev`` can pass them on itself without reading them back. Each entry adds its
-- size (#b + #x) to the meta hash's ``bytes``.
local s, meta = KEYS[1], KEYS[2]
local maxlen, maxage, maxbytes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, idle, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ik = tonumber(ARGV[9])
local base = string.sub(s, 1, -2)
if ik > 0 then
  local stored = redis.call('GET', KEYS[ik])
  if stored then
    local text, fp = string.match(stored, '^([%d%-%+=,]*) (.*)$')
    if text == nil then -- written before the text form: {fingerprint, {{id, dup}...}}
      local rec = cjson.decode(stored)
      fp, text = rec[1], {}
      for _, r in ipairs(rec[2]) do text[#text + 1] = (r[2] == 1 and '=' or '') .. r[1] end
      text = table.concat(text, ',')
    end
    if fp ~= ARGV[10] then return {2} end
    return {1, text}
  end
end
-- The results as wsq.core.messages.published_text writes them: runs of new ids, duplicates.
local function published_text(out)
  local items, ms, seq, k = {}, nil, 0, 0
  local function flush()
    if ms then items[#items + 1] = ms .. '-' .. fmt(seq) .. (k > 0 and ('+' .. k) or '') end
    ms = nil
  end
  for _, r in ipairs(out) do
    if r[2] == 1 then
      flush()
      items[#items + 1] = '=' .. r[1]
    else
      local m, q = string.match(r[1], '^(%d+)-(%d+)$')
      q = tonumber(q)
      if m == ms and q == seq + k + 1 then
        k = k + 1
      else
        flush()
        ms, seq, k = m, q, 0
      end
    end
  end
  flush()
  return table.concat(items, ',')
end
local now = now_ms()
local out = {}
local last = nil
-- No 'last': nothing was ever added (meta and stream expire together), START as last_position says.
local prev = redis.call('HGET', meta, 'last') or '0-0'
if prev ~= '0-0' and redis.call('HEXISTS', meta, 'bytes') == 0 then
  -- Entries stored before bytes were counted: not counted (trim.lua trims them first).
  redis.call('HSET', meta, 'bfrom', prev)
end
local cut = nil
local added = 0
local ids = index(KEYS[3], base .. 'i:', now)
local A = cjson.decode(ARGV[11])
local i = 1
for m = 1, n do
  local k, nf = tonumber(A[i]), tonumber(A[i + 1])
  local dup = nil
  if k > 0 then dup = redis.call('GET', KEYS[k]) end
  if dup then
    out[m] = {dup, 1}
  else
    local args = {s, '*'}
    for j = i + 2, i + 1 + nf, 2 do
      args[#args + 1] = A[j]
      args[#args + 1] = A[j + 1]
      if A[j] == 'b' or A[j] == 'x' then added = added + #A[j + 1] end
    end
    local id = redis.call('XADD', unpack(args))
    if k > 0 then
      redis.call('SET', KEYS[k], id, 'PX', window)
      remember(ids, KEYS[k])
    end
    out[m] = {id, 0}
    last = id
  end
  i = i + 2 + nf
end
if last then
  bound(ids, now, window, tonumber(ARGV[12]))
  redis.call('HSET', meta, 'last', last)
  redis.call('HINCRBY', meta, 'bytes', added)
  cut = trim(s, meta, maxlen, maxage, maxbytes, now)
  redis.call(ARGV[8], ARGV[7], last)
end
redis.call('PEXPIRE', s, idle)
redis.call('PEXPIRE', meta, idle)
if ik > 0 then
  redis.call('SET', KEYS[ik], published_text(out) .. ' ' .. ARGV[10], 'PX', window)
  local keys = index(KEYS[4], base .. 'k:', now)
  remember(keys, KEYS[ik])
  bound(keys, now, window, tonumber(ARGV[13]))
end
table.insert(out, 1, cut or '')
table.insert(out, 1, prev)
table.insert(out, 1, 0)
return out
