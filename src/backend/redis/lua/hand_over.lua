-- KEYS: lease, turn record, confirm hash. ARGV: turn id, TurnInfo JSON (held by no pod), hold ms, idle ttl s, call
-- id. A turn that parked hands its lease over to the park only while that call is still the one parked and the
-- lease is still the turn's, in one step: an answer on another pod that took the park and resumed the turn
-- meanwhile keeps the lease it took (a resumed turn has the same turn id, so the lease alone cannot tell).
if redis.call('HGET', KEYS[3], 'call') ~= ARGV[5] then return 0 end
local cur = redis.call('GET', KEYS[1])
if not cur or cjson.decode(cur)['turn_id'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
return 1
