-- KEYS: conv hash, msgs list. ARGV: message JSON, now_ms, inbound (1/0), title from the message, conversation
-- TTL s (renewed on both keys: a conversation lives that long after its last message), messages kept (the
-- oldest past it are trimmed; `message_count` keeps counting every message, so indexes stay absolute).
-- Returns {user id, org id} of the conversation (for the per-user index), or nil when it does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[6]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('HINCRBY', KEYS[1], 'message_count', 1)
redis.call('HSET', KEYS[1], 'updated_at_ms', ARGV[2])
if ARGV[3] == '1' and (redis.call('HGET', KEYS[1], 'title') or '') == '' then
  redis.call('HSET', KEYS[1], 'title', ARGV[4])
end
return redis.call('HMGET', KEYS[1], 'user_id', 'org_id')
