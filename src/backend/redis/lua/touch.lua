-- KEYS: session, seq, log, epoch, contact. ARGV: idle TTL s, how recently (s) the TTLs may have been refreshed
-- for this touch to leave them. Returns the session record and refreshes the TTL of the session and of what
-- lives and dies with it (log, counter, epoch, the person's contact and verified flag), so none of them expires
-- under a live session. A session in use refreshes them at most once per that period (a turn's every action
-- would otherwise pay five commands for it): it expires between `idle - period` and `idle` after its last use.
-- Both the record's and the counter's TTLs are looked at: the record is renewed alone when it is written again,
-- the counter (with the log and epoch) alone by appends from outside a turn.
local fresh = tonumber(ARGV[1]) - tonumber(ARGV[2])
local ttl = redis.call('TTL', KEYS[1])
if ttl == -2 then return false end
if ttl >= 0 and ttl > fresh then
  local log_ttl = redis.call('TTL', KEYS[2])
  if log_ttl == -2 or log_ttl > fresh then return redis.call('GET', KEYS[1]) end
end
local rec = redis.call('GETEX', KEYS[1], 'EX', ARGV[1])
if rec then
  for i = 2, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
end
return rec
