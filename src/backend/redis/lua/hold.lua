-- KEYS: the holds zset (holder -> until ms). ARGV: holder, limit, until ms, now ms, ttl ms. A new holder gets a
-- place only while fewer than `limit` hold one. 1 when held (or renewed), 0 when refused. The place is added
-- first and taken back past the limit: a renewal costs no membership check. Lapsed holds are pruned only when
-- a new holder finds the set past the limit (then it counts again without them): they count for nothing, and
-- pruning on every hold was one more command per turn. The set never holds more than `limit + 1` members.
if redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) == 1 and redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[2]) then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
  if redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[2]) then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 0
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
