-- KEYS: conv hash. ARGV: field, value. Sets one field of a conversation that exists (title, supports): 1 when
-- set, 0 when the conversation does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
