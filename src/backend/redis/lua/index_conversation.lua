-- KEYS: one conversation index zset (a user's or an org's). ARGV: updated ms, conversation id, oldest live
-- score (members updated before it belong to expired conversations), index TTL s, cap (0: none).
-- Adds the conversation, prunes the expired, renews the index and, past the cap, pops the least recently
-- updated. Returns the popped conversation ids (the caller deletes them), so the index stays bounded.
redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local cap = tonumber(ARGV[5])
if cap > 0 then
  local excess = redis.call('ZCARD', KEYS[1]) - cap
  if excess > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[1], excess)
    local ids = {}
    for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
    return ids
  end
end
return {}
