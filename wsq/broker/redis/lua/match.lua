-- A subject pattern (wsq.core.addresses.Pattern) in Lua: '*' one token, '>' last, 1 or more.
local function split(text)
  local out, start = {}, 1
  while true do
    local i = string.find(text, '.', start, true)
    if not i then out[#out + 1] = string.sub(text, start); return out end
    out[#out + 1] = string.sub(text, start, i - 1)
    start = i + 1
  end
end
local function matches(pat, subject)
  if pat == '' then return true end
  if not subject then return false end
  local p, t = split(pat), split(subject)
  local tail = p[#p] == '>'
  local n = #p
  if tail then
    n = n - 1
    if #t <= n then return false end
  elseif #t ~= n then
    return false
  end
  for i = 1, n do
    if p[i] ~= '*' and p[i] ~= t[i] then return false end
  end
  return true
end
