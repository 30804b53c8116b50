-- KEYS: lease, turn record. ARGV: TurnInfo JSON, lease ms, idle ttl s. 1 when the slot was free.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
return 1
