-- KEYS: lease, turn record, step (hash, see checkpoint.lua), seq, log. ARGV: the lapsed turn id, the new TurnInfo
-- JSON, its turn id, lease ms, idle ttl s, most takeovers. A sweeper takes a lapsed turn over under a new turn
-- id (the lease generation that fences the old pod out) only while no lease runs, the turn record is still the
-- lapsed turn's and it left a step, in one step with the checks. Returns {'taken', step seq, state, takeovers,
-- seq now, the log's entries from the one holding the step's next seq on (what the client may already have of a
-- cut reply: read here, on the master that took the turn, not later from wherever a read lands)}, or {'gone'},
-- {'unsaved'}, {'exhausted'}.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'gone'} end
local rec = redis.call('GET', KEYS[2])
if not rec or cjson.decode(rec)['turn_id'] ~= ARGV[1] then return {'gone'} end
local step = redis.call('HMGET', KEYS[3], 't', 's', 'j', 'n')
if step[1] ~= ARGV[1] or not step[3] then return {'unsaved'} end
-- `n` names the turn its count belongs to (checkpoint.lua); a bare count was written by an older pod, which reset it
-- for each new turn.
local n = 0
local owner, count = string.match(step[4] or '', '^(.+):(%d+)$')
if owner then
  if owner == ARGV[1] then n = tonumber(count) end
elseif step[4] then
  n = tonumber(step[4]) or 0
end
if n >= tonumber(ARGV[6]) then return {'exhausted'} end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[5])
redis.call('HSET', KEYS[3], 't', ARGV[3], 'n', ARGV[3] .. ':' .. string.format('%d', n + 1))
local seq = redis.call('GET', KEYS[4]) or '0'
local sent = redis.call('XRANGE', KEYS[5], string.format('%d', tonumber(step[2]) + 1) .. '-0', '+', 'COUNT', tonumber(ARGV[7]))
return {'taken', step[2], step[3], tostring(n + 1), seq, sent}
