-- KEYS: lease, step (hash), seq. ARGV: turn id, the turn's state, idle ttl s. Records a running turn's durable
-- step only while the turn holds its lease, in one step with the check, so a pod that lost its lease (frozen past
-- it, and taken over) cannot overwrite the step its successor resumes from. The hash: `t` the turn id, `s` the
-- log's seq now (events after it were sent since the step), `j` the state, and `n` (`<turn id>:<count>`, written by
-- `take_over.lua` only) the takeovers of the turn it names: a field that names another turn counts none, so a new
-- turn needs no read or reset of what an earlier one left. The hash's expiry is set when a step creates it (all
-- three fields new): the turn's ending deletes it. Returns 0 when the lease is not the turn's, else the seq the
-- log's next event gets (the turn's next append expects it: see append_batch.lua).
-- The lease and the counter in one read (a step is one of the few writes every turn makes).
local read = redis.call('MGET', KEYS[1], KEYS[3])
local cur = read[1]
if not cur or cjson.decode(cur)['turn_id'] ~= ARGV[1] then return 0 end
local seq = read[2] or '0'
if redis.call('HSET', KEYS[2], 't', ARGV[1], 's', seq, 'j', ARGV[2]) == 3 then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return tonumber(seq) + 1
