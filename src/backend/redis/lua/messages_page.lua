-- KEYS: msgs list, conv hash. ARGV: before index ('' = from the newest), limit. Indexes count every message
-- the conversation ever had (the list keeps the newest `session.conversation_max_messages`; the ones trimmed
-- are `message_count` minus the list's length). Returns {start index, more (1/0), messages…} oldest first,
-- read atomically so the index and the page agree.
local len = redis.call('LLEN', KEYS[1])
local trimmed = math.max((tonumber(redis.call('HGET', KEYS[2], 'message_count')) or len) - len, 0)
local stop = len
if ARGV[1] ~= '' then stop = math.max(math.min(tonumber(ARGV[1]) - trimmed, len), 0) end
local start = math.max(stop - tonumber(ARGV[2]), 0)
local more = 0
if start > 0 then more = 1 end
local out = {start + trimmed, more}
if stop > start then
  local items = redis.call('LRANGE', KEYS[1], start, stop - 1)
  for i = 1, #items do out[#out + 1] = items[i] end
end
return out
