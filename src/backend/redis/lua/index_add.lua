-- KEYS: one index zset. ARGV: deadline ms, connection id, now ms, keep ms. Adds the member, prunes expired
-- members and keeps the index alive at least `keep` ms, so an index never outlives its members by much and
-- never expires before them.
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
