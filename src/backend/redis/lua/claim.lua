-- KEYS: lease, turn record. ARGV: the turn the index entry names (empty for entries of the older form, which name
-- only the session). Run by the caller that moved the deadline-index entry forward (its claim for
-- LAPSED_RETRY_MS). Returns {'gone'} when the record is not that turn's (it ended; another turn may run now, with
-- its own entry), {'alive', pttl} when the turn's lease still runs, {'claimed', json} when the turn lapsed: the
-- record stays until the caller's `lapsed`-guarded append ends the turn, so a caller that dies or fails meanwhile
-- leaves it to be claimed again.
local rec = redis.call('GET', KEYS[2])
if not rec then return {'gone'} end
if ARGV[1] ~= '' and cjson.decode(rec)['turn_id'] ~= ARGV[1] then return {'gone'} end
local ttl = redis.call('PTTL', KEYS[1])
if ttl ~= -2 then return {'alive', ttl} end
return {'claimed', rec}
