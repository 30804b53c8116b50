-- KEYS: confirm hash, lease. ARGV: the expected call id ('' = any), the hold ms a taken park's lease is cut to.
-- Removes the parked turn and returns {json, call},
-- or {} when none (or another call's park is there): exactly one caller gets it.
__CUT_HOLD__
local json = redis.call('HGET', KEYS[1], 'json')
if not json then return {} end
local call = redis.call('HGET', KEYS[1], 'call') or ''
if ARGV[1] ~= '' and ARGV[1] ~= call then return {} end
redis.call('DEL', KEYS[1])
cut_hold(KEYS[2], ARGV[2])
return {json, call}
