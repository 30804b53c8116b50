#!lua
-- Whether the master answering holds a write made on a connection that was replaced before replicas confirmed it
-- (src/backend/redis/replicated.rs). KEYS[1]: the key the write made. ARGV[1]: 'entry' (a log batch: ARGV[2] its
-- stream id, ARGV[3] its first seq, ARGV[4] its events) or 'turn' (a turn's start: ARGV[2] the turn id its record
-- must name; the record, not the lease, which may have lapsed while the start waited for replicas) or 'step' (a
-- turn's durable step: ARGV[2] its turn id, ARGV[3] its state).
--
-- When it does, the key's own expiry is set again: a write, so a `WAIT` on this connection after it covers the
-- held write too (a replica applies the master's writes in order). Returns 1 when held, else 0.
--
-- The `#!lua` line (no `no-writes` flag) makes Redis refuse the script on a replica before it runs: a demoted
-- master or a replica still syncing must not answer "not held" for a write the real master has.
local held = false
if ARGV[1] == 'entry' then
  local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])[1]
  if e then
    local f, events = nil, nil
    for i = 1, #e[2], 2 do
      if e[2][i] == 'f' then f = e[2][i + 1] elseif e[2][i] == 'e' then events = e[2][i + 1] end
    end
    held = (f == nil or f == ARGV[3]) and events == ARGV[4]
  end
elseif ARGV[1] == 'turn' then
  local record = redis.call('GET', KEYS[1])
  held = record ~= false and cjson.decode(record)['turn_id'] == ARGV[2]
elseif ARGV[1] == 'step' then
  local step = redis.call('HMGET', KEYS[1], 't', 'j')
  held = step[1] == ARGV[2] and step[2] == ARGV[3]
end
if not held then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
