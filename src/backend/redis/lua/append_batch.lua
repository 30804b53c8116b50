-- KEYS: seq, log, lease, turn record, epoch, session record. ARGV: log_len, idle_ttl_s, channel, publish command
-- (PUBLISH or SPUBLISH), guard (none, holder, release, lapsed, live), guard turn id, a fresh epoch (used only when
-- the session has none: the counter is new), the call's token, `1` when this call retries one whose outcome is
-- unknown, the number of events, then the events joined by newlines (one argument: the script does no work per
-- event, which in Lua, building and interning a string per event, cost ~1 µs each).
--
-- One stream entry per batch, id `<last seq>-0`, fields `f` (first seq), `t` (the token), `e` (the events, one
-- per line: JSON text never holds a raw newline), so a batch costs one XADD however many events it carries. The
-- stream is trimmed by MINID to the entries that hold one of the last log_len seqs. A reader cuts the first
-- entry it reads at its `afterSeq` (log.rs).
--
-- Resend safety without bookkeeping: the pod sends this script once (no automatic resend after a dropped
-- connection); a retry of a call whose outcome is unknown passes `1`, and the script first looks for the token in
-- the stream's last entries: found, the first run's first seq is returned and nothing runs again.
--
-- The guard is checked first, in the same step (see `Guard` in src/backend/mod.rs); -1 when it does not hold.
-- A running turn's appends (holder, and its ending: release) read the lease, the epoch (and the turn record) in
-- one MGET and renew no expiry: the keys' TTLs are renewed with the session's (`lua/touch.lua`, which every turn
-- passes through before it starts), when the counter is created, and by appends from outside a turn, so a turn
-- pays for no expiry of its own. Publishes one bus message: `<first seq>:<epoch>`, then the events
-- (src/backend/framing.rs). If the counter vanished while the stream survived, seqs continue after the
-- stream. Returns the first seq.
local guard, turn, token = ARGV[5], ARGV[6], ARGV[8]
local n = tonumber(ARGV[10])
local payload = ARGV[11]

if ARGV[9] == '1' and n > 0 then
  for _, entry in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 256)) do
    local f = entry[2]
    if f[3] == 't' and f[4] == token then return tonumber(f[2]) end
  end
end

local epoch
if guard == 'holder' then
  local v = redis.call('MGET', KEYS[3], KEYS[5])
  if not v[1] or cjson.decode(v[1])['turn_id'] ~= turn then return -1 end
  epoch = v[2]
elseif guard == 'release' then
  local v = redis.call('MGET', KEYS[3], KEYS[5], KEYS[4])
  if not v[1] or cjson.decode(v[1])['turn_id'] ~= turn then return -1 end
  epoch = v[2]
  if v[3] and cjson.decode(v[3])['turn_id'] == turn then
    redis.call('DEL', KEYS[3], KEYS[4])
  else
    redis.call('DEL', KEYS[3])
  end
else
  if guard == 'lapsed' then
    if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
    local t = redis.call('GET', KEYS[4])
    if not t or cjson.decode(t)['turn_id'] ~= turn then return -1 end
  elseif guard == 'live' then
    if redis.call('EXISTS', KEYS[6]) == 0 then return -1 end
  end
  if n > 0 then epoch = redis.call('GET', KEYS[5]) end
end
if guard == 'lapsed' then
  redis.call('DEL', KEYS[4])
end
if n == 0 then return 0 end

local touch = guard ~= 'holder' and guard ~= 'release'
if not epoch then
  epoch = ARGV[7]
  redis.call('SET', KEYS[5], epoch)
  touch = true
end
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
if first == 1 then
  touch = true
  if redis.call('EXISTS', KEYS[2]) == 1 then
    local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
    if tail[1] then
      first = tonumber(string.match(tail[1][1], '^(%d+)')) + 1
      last = first + n - 1
      redis.call('SET', KEYS[1], string.format('%d', last))
    end
  end
end
local keep_from = last - tonumber(ARGV[1]) + 1
if keep_from < 1 then keep_from = 1 end
redis.call('XADD', KEYS[2], 'MINID', string.format('%d', keep_from), string.format('%d', last) .. '-0',
  'f', string.format('%d', first), 't', token, 'e', payload)
if touch then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[5], ARGV[2])
end
redis.call(ARGV[4], ARGV[3], string.format('%d', first) .. ':' .. epoch .. '\n' .. payload)
return first
