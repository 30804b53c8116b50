-- KEYS: confirm hash. Removes the parked turn and returns {json, call}, or {} when none: exactly one caller
-- gets it.
local json = redis.call('HGET', KEYS[1], 'json')
if not json then return {} end
local call = redis.call('HGET', KEYS[1], 'call') or ''
redis.call('DEL', KEYS[1])
return {json, call}
