-- KEYS: lease, turn record. ARGV: turn id, TurnInfo JSON, lease ms, idle ttl s. A parked turn that resumes takes
-- its lease back only while the turn record is still its own, in one step with the check: a sweeper that ended
-- the lapsed turn left a tombstone in the record's place with its ending ('ended'); a newer turn that took the
-- slot wrote its own ('replaced'). A resend finds the lease already its own and answers 'held' again.
local rec = redis.call('GET', KEYS[2])
if not rec or cjson.decode(rec)['ended'] then return 'ended' end
if cjson.decode(rec)['turn_id'] ~= ARGV[1] then return 'replaced' end
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur)['turn_id'] ~= ARGV[1] then return 'replaced' end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
return 'held'
