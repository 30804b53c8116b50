-- KEYS: conv hash. ARGV: title. 1 when renamed, 0 when the conversation does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'title', ARGV[1])
return 1
