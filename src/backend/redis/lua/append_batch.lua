-- KEYS: seq, log, lease, turn record, epoch, session record, recent tokens, the turn's step. ARGV: log_len,
-- idle_ttl_s, channel, publish command (PUBLISH, SPUBLISH, or empty: the caller publishes), guard (none, holder,
-- release, lapsed, live, orphan), guard turn id (the request id for orphan), a fresh epoch (used only when the
-- session has none: the counter is new), the call's token, for a running turn's append the first seq its pod
-- expects it to get ('0' when it has no idea) or '' for any other call, the number of events, then the events
-- joined by newlines (one argument: the script does no work per event, which in Lua, building and interning a
-- string per event, cost ~1 µs each).
--
-- One stream entry per batch, id `<last seq>-0`, fields `f` (first seq), `k` (the call's token) and `e` (the
-- events, one per line: JSON text never holds a raw newline), so a batch costs one XADD however many events it
-- carries. The stream is trimmed by MINID to the entries that hold one of the last log_len seqs. A reader cuts
-- the first entry it reads at its `afterSeq` (log.rs).
--
-- Resend safety (fred resends a call whose connection dropped, and the call may have run): a running turn's
-- append that finds the counter where its pod expected it cannot have run before (a run moves the counter past
-- it), and its pod knows where to expect it (after its last append, or its step); one that finds it elsewhere
-- looks for its token among the last 16 entries (its session's other writers may have appended since: this
-- reads whole entries, so it is kept for the rare case) and, when found, answers the first run's seq and appends
-- nothing. So a turn's appends pay for no token bookkeeping. Any other call (a publish, an interaction's event)
-- keeps its token among the last eight calls' in one small key, read with the guard and written after the
-- append, and a resend finds it there.
--
-- Then the guard is checked, in the same step (see `Guard` in src/backend/mod.rs); -1 when it does not hold.
-- An ending (release, lapsed, orphan) leaves a tombstone in the turn record's place, `{"ended": turn id,
-- "request_id": ...}`, kept with the session: it tells the orphan guard that the turn did end (its ending is
-- logged) from a record a failover took back.
-- A running turn's appends (holder, and its ending: release) read the lease, the epoch (and the turn record) in
-- one MGET and renew no expiry: the keys' TTLs are renewed with the session's (`lua/touch.lua`, which every turn
-- passes through before it starts), when the counter is created, and by appends from outside a turn, so a turn
-- pays for no expiry of its own. Publishes one bus message: `<first seq>:<epoch>`, then the events
-- (src/backend/framing.rs). If the counter vanished while the stream survived, seqs continue after the
-- stream. Returns the first seq.
local guard, turn, token = ARGV[5], ARGV[6], ARGV[8]
local n = tonumber(ARGV[10])
local payload = ARGV[11]

-- One read for the guard, the epoch and either the counter (a turn's append) or the recent calls' tokens (and the
-- turn record when the guard needs it).
local turns = ARGV[9] ~= ''
local reads = {KEYS[3], KEYS[5], turns and KEYS[1] or KEYS[7]}
if guard == 'release' or guard == 'lapsed' or guard == 'orphan' then reads[4] = KEYS[4] end
local v = redis.call('MGET', unpack(reads))
local lease, epoch, record = v[1], v[2], v[4]
-- With no publish command the caller publishes once replicas have the write (`redis_wait_replicas`): the reply
-- is then {first seq, epoch}, so it can frame the bus message.
local function done(first)
  if ARGV[4] == '' then return {first, epoch} end
  return first
end
if n > 0 and turns and tonumber(ARGV[9]) ~= tonumber(v[3] or '0') + 1 then
  for _, entry in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 16)) do
    local f, k = nil, nil
    for i = 1, #entry[2], 2 do
      if entry[2][i] == 'f' then f = entry[2][i + 1] elseif entry[2][i] == 'k' then k = entry[2][i + 1] end
    end
    if k == token then return done(tonumber(f or string.match(entry[1], '^(%d+)'))) end
  end
end
if n > 0 and not turns and v[3] then
  local seen = string.match(' ' .. v[3], ' ' .. string.gsub(token, '%p', '%%%0') .. ':(%d+)')
  if seen then return done(tonumber(seen)) end
end
local function owns(rec) return rec and cjson.decode(rec)['turn_id'] == turn end
if guard == 'holder' or guard == 'release' then
  if not owns(lease) then return -1 end
elseif guard == 'lapsed' then
  if lease or not owns(record) then return -1 end
elseif guard == 'live' then
  if redis.call('EXISTS', KEYS[6]) == 0 then return -1 end
elseif guard == 'orphan' then
  -- No lease (no pod runs the session's turn), no record at all (neither a turn for a sweeper to claim nor the
  -- tombstone of an ending), and the session exists: the turn's state is gone, so it ends here.
  if lease or record or redis.call('EXISTS', KEYS[6]) == 0 then return -1 end
end
local function tombstone(rec)
  local r = rec and cjson.decode(rec) or {turn_id = '', request_id = turn}
  return cjson.encode({ended = r['turn_id'], request_id = r['request_id']})
end
if guard == 'release' then
  if owns(record) then
    redis.call('DEL', KEYS[3], KEYS[8])
    redis.call('SET', KEYS[4], tombstone(record), 'EX', ARGV[2])
  else
    redis.call('DEL', KEYS[3])
  end
elseif guard == 'lapsed' then
  redis.call('DEL', KEYS[8])
  redis.call('SET', KEYS[4], tombstone(record), 'EX', ARGV[2])
elseif guard == 'orphan' then
  redis.call('SET', KEYS[4], tombstone(nil), 'EX', ARGV[2])
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
  'f', string.format('%d', first), 'k', token, 'e', payload)
if touch then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[5], ARGV[2])
end
if not turns then
  local kept = {token .. ':' .. string.format('%d', first)}
  for entry in string.gmatch(v[3] or '', '%S+') do
    if #kept < 8 then kept[#kept + 1] = entry end
  end
  redis.call('SET', KEYS[7], table.concat(kept, ' '), 'EX', ARGV[2])
end
if ARGV[4] == '' then return done(first) end
redis.call(ARGV[4], ARGV[3], string.format('%d', first) .. ':' .. epoch .. '\n' .. payload)
return first
