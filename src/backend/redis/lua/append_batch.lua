-- KEYS: seq, log. ARGV: log_len, idle_ttl_s, channel, publish command (PUBLISH or SPUBLISH), then the events
-- (run through once.lua, which adds the ops key and the call token: hence `#ARGV - 5` events).
-- Assigns consecutive seqs, appends each event with id `<seq>-0` (trimmed exactly to log_len), refreshes both
-- TTLs and publishes one message of `<seq>:<event>` lines, all atomically, so the log and the bus agree on order
-- and seq has no gaps. If the counter vanished while the stream survived, seqs continue after the stream.
-- Returns the first seq.
local n = #ARGV - 5
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
if first == 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if tail[1] then
    first = tonumber(string.match(tail[1][1], '^(%d+)')) + 1
    last = first + n - 1
    redis.call('SET', KEYS[1], string.format('%d', last))
  end
end
local lines = {}
for i = 1, n do
  local id = string.format('%d', first + i - 1)
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], id .. '-0', 'e', ARGV[4 + i])
  lines[i] = id .. ':' .. ARGV[4 + i]
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call(ARGV[4], ARGV[3], table.concat(lines, '\n'))
return first
