-- KEYS: seq, log, lease, turn record, epoch, session record. ARGV: log_len, idle_ttl_s, channel, publish command
-- (PUBLISH or SPUBLISH), guard (none, holder, release, lapsed, live), guard turn id, a fresh epoch (used only when the session has
-- none: the counter is new), then the events (run through once.lua, which adds the ops key and the call token:
-- hence `#ARGV - 8` events).
-- The guard is checked first, in the same step (see `Guard` in src/backend/mod.rs); -1 when it does not hold.
-- Assigns consecutive seqs, appends each event with id `<seq>-0` (trimmed exactly to log_len), refreshes both
-- TTLs and publishes one message of `<seq>:<event>` lines, all atomically, so the log and the bus agree on order
-- and seq has no gaps. Each bus line is `<seq>:<epoch>:<event>`. If the counter vanished while the stream survived, seqs continue after the stream.
-- Returns the first seq.
local guard, turn = ARGV[5], ARGV[6]
local function owned(key)
  local v = redis.call('GET', key)
  return v and cjson.decode(v)['turn_id'] == turn
end
if guard == 'holder' or guard == 'release' then
  if not owned(KEYS[3]) then return -1 end
elseif guard == 'lapsed' then
  if redis.call('EXISTS', KEYS[3]) == 1 or not owned(KEYS[4]) then return -1 end
elseif guard == 'live' then
  if redis.call('EXISTS', KEYS[6]) == 0 then return -1 end
end
if guard == 'release' or guard == 'lapsed' then
  redis.call('DEL', KEYS[3])
  if owned(KEYS[4]) then redis.call('DEL', KEYS[4]) end
end
local n = #ARGV - 8
if n == 0 then return 0 end
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  epoch = ARGV[7]
  redis.call('SET', KEYS[5], epoch)
end
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
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], id .. '-0', 'e', ARGV[7 + i])
  lines[i] = id .. ':' .. epoch .. ':' .. ARGV[7 + i]
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[5], ARGV[2])
redis.call(ARGV[4], ARGV[3], table.concat(lines, '\n'))
return first
