-- KEYS: session, seq, log, epoch. ARGV: idle TTL s. Returns the session record and refreshes the TTL of the
-- session and of its log, counter and epoch, so the log expires with its session and never before it.
local rec = redis.call('GETEX', KEYS[1], 'EX', ARGV[1])
if rec then
  for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
end
return rec
