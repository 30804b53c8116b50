-- KEYS: confirm hash, lease. ARGV: the expected call id ('' = any), the hold ms a taken park's lease is cut to.
-- Removes the parked turn and returns {json, call},
-- or {} when none (or another call's park is there): exactly one caller gets it.
-- A taker resumes or ends the turn at once; should its pod die first, the park's hold (the lease handed to the
-- park, `pod_id` empty, until the park's deadline) must not keep the session for the rest of the deadline: it is
-- cut to `hold_ms` (twice the lease; the caller brought the turn's lapsed-lease entry forward to then).
local function cut_hold(lease, hold_ms)
  local held = redis.call('GET', lease)
  if held and cjson.decode(held)['pod_id'] == '' and redis.call('PTTL', lease) > tonumber(hold_ms) then
    redis.call('PEXPIRE', lease, hold_ms)
  end
end
local json = redis.call('HGET', KEYS[1], 'json')
if not json then return {} end
local call = redis.call('HGET', KEYS[1], 'call') or ''
if ARGV[1] ~= '' and ARGV[1] ~= call then return {} end
redis.call('DEL', KEYS[1])
cut_hold(KEYS[2], ARGV[2])
return {json, call}
