-- KEYS: lease, turn record. Run by the caller that won the deadline-index ZREM. Returns {'alive', pttl} when a
-- lease still runs (a new turn took the slot), {'claimed', json} when the lapsed turn is handed over, {'gone'}.
local ttl = redis.call('PTTL', KEYS[1])
if ttl ~= -2 then return {'alive', ttl} end
local rec = redis.call('GET', KEYS[2])
if not rec then return {'gone'} end
redis.call('DEL', KEYS[2])
return {'claimed', rec}
