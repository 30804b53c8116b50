-- KEYS: lease, turn record. Run by the caller that moved the deadline-index entry forward (its claim for
-- LAPSED_RETRY_MS). Returns {'alive', pttl} when a lease still runs (a new turn took the slot), {'claimed', json}
-- when the turn lapsed: the record stays until the caller's `lapsed`-guarded append ends the turn, so a caller
-- that dies or fails meanwhile leaves it to be claimed again. {'gone'} when there is no record.
local ttl = redis.call('PTTL', KEYS[1])
if ttl ~= -2 then return {'alive', ttl} end
local rec = redis.call('GET', KEYS[2])
if not rec then return {'gone'} end
return {'claimed', rec}
