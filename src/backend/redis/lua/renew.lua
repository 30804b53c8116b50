-- KEYS: lease, turn record. ARGV: turn id, TurnInfo JSON, lease ms, idle ttl s. Compare-and-set on turn id.
local cur = redis.call('GET', KEYS[1])
if not cur or cjson.decode(cur)['turn_id'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
return 1
