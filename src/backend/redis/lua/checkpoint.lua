-- KEYS: lease, step (hash), seq. ARGV: turn id, the turn's state, idle ttl s. Records a running turn's durable
-- step only while the turn holds its lease, in one step with the check, so a pod that lost its lease (frozen past
-- it, and taken over) cannot overwrite the step its successor resumes from. The hash: `t` the turn id, `s` the
-- log's seq now (events after it were sent since the step), `j` the state, `n` takeovers so far (kept while the
-- hash is the same turn's; a new turn starts at none). Its expiry is set once, when a turn first writes it: the
-- turn's ending deletes it.
local cur = redis.call('GET', KEYS[1])
if not cur or cjson.decode(cur)['turn_id'] ~= ARGV[1] then return 0 end
local seq = redis.call('GET', KEYS[3]) or '0'
if redis.call('HGET', KEYS[2], 't') == ARGV[1] then
  redis.call('HSET', KEYS[2], 's', seq, 'j', ARGV[2])
else
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 't', ARGV[1], 's', seq, 'j', ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return 1
