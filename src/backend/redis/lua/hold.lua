-- KEYS: the holds zset (holder -> until ms). ARGV: holder, limit, until ms, now ms, ttl ms. Lapsed holds go;
-- a new holder gets a place only while fewer than `limit` hold one. 1 when held (or renewed), 0 when refused.
-- The place is added first and taken back past the limit: a renewal costs no membership check.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
if redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) == 1 and redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
