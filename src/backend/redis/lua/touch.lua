-- KEYS: session, seq, log, epoch, contact. ARGV: idle TTL s. Returns the session record and refreshes the TTL
-- of the session and of what lives and dies with it (log, counter, epoch, the person's contact and verified
-- flag), so none of them expires under a live session.
local rec = redis.call('GETEX', KEYS[1], 'EX', ARGV[1])
if rec then
  for i = 2, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
end
return rec
