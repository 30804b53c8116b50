-- KEYS: lease, turn record. ARGV: TurnInfo JSON, lease ms, idle ttl s. 1 when the slot was free, or already holds
-- this very turn (a resend of a call that ran: the lease value is the turn's own, so the answer is the same
-- without bookkeeping).
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
  return 0
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
return 1
