-- KEYS: msgs list. ARGV: before index ('' = from the newest), limit. Returns {start index, messages…} oldest
-- first, read atomically so the index and the page agree.
local len = redis.call('LLEN', KEYS[1])
local stop = len
if ARGV[1] ~= '' then stop = math.min(tonumber(ARGV[1]), len) end
local start = math.max(stop - tonumber(ARGV[2]), 0)
local out = {start}
if stop > start then
  local items = redis.call('LRANGE', KEYS[1], start, stop - 1)
  for i = 1, #items do out[#out + 1] = items[i] end
end
return out
