-- needs: common trim bound
-- KEYS: stream, meta, the indexes of dedup ids and idempotency keys (``bound``), idempotency key
-- (when ARGV[8] is 5), dedup keys. ARGV: maxlen, maxage,
-- window, idle, n, notification channel, PUBLISH or SPUBLISH (cluster: the notice stays on the
-- slot's shard), index of the idempotency key in KEYS (0: none), request fingerprint, then the
-- messages as ONE JSON array (redis-py's packing costs ~0.6 us per argument in the gateway; the
-- array is one orjson call there and one cjson call here), per message: index of its dedup key
-- in KEYS (0: none), number of fields, fields; numbers as strings; then max_dedup_ids and
-- max_idempotency_keys. Answers
-- {status, prev, cut, {id, duplicate}...}: status 0 published, 1 replayed (the results stored
-- with the idempotency key; no prev and cut), 2 the key was stored for another fingerprint;
-- prev: the newest id before this publish (START: none), cut: the newest id retention trimmed
-- ('' none). The new entries are contiguous (one script), so a process whose reader has passed
-- on exactly ``prev`` can pass them on itself without reading them back.
local s, meta = KEYS[1], KEYS[2]
local maxlen, maxage = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, idle, n = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ik = tonumber(ARGV[8])
local base = string.sub(s, 1, -2)
if ik > 0 then
  local stored = redis.call('GET', KEYS[ik])
  if stored then
    local rec = cjson.decode(stored)
    if rec[1] ~= ARGV[9] then return {2} end
    local rows = {1}
    for _, r in ipairs(rec[2]) do rows[#rows + 1] = r end
    return rows
  end
end
local now = now_ms()
local out = {}
local last = nil
-- No 'last': nothing was ever added (meta and stream expire together), START as last_position says.
local prev = redis.call('HGET', meta, 'last') or '0-0'
local cut = nil
local ids = index(KEYS[3], base .. 'i:', now)
local A = cjson.decode(ARGV[10])
local i = 1
for m = 1, n do
  local k, nf = tonumber(A[i]), tonumber(A[i + 1])
  local dup = nil
  if k > 0 then dup = redis.call('GET', KEYS[k]) end
  if dup then
    out[m] = {dup, 1}
  else
    local args = {s, '*'}
    for j = i + 2, i + 1 + nf do args[#args + 1] = A[j] end
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
  bound(ids, now, window, tonumber(ARGV[11]))
  redis.call('HSET', meta, 'last', last)
  cut = trim(s, meta, maxlen, maxage, now)
  redis.call(ARGV[7], ARGV[6], last)
end
redis.call('PEXPIRE', s, idle)
redis.call('PEXPIRE', meta, idle)
if ik > 0 then
  redis.call('SET', KEYS[ik], cjson.encode({ARGV[9], out}), 'PX', window)
  local keys = index(KEYS[4], base .. 'k:', now)
  remember(keys, KEYS[ik])
  bound(keys, now, window, tonumber(ARGV[12]))
end
table.insert(out, 1, cut or '')
table.insert(out, 1, prev)
table.insert(out, 1, 0)
return out
