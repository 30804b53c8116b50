-- A taker resumes or ends the turn at once; should its pod die first, the park's hold (the lease handed to the
-- park, `pod_id` empty, until the park's deadline) must not keep the session for the rest of the deadline: it is
-- cut to `hold_ms` (twice the lease; the caller brought the turn's lapsed-lease entry forward to then; '0': no
-- cut, and nothing read).
local function cut_hold(lease, hold_ms)
  if hold_ms == '0' then return end
  local held = redis.call('GET', lease)
  if held and cjson.decode(held)['pod_id'] == '' and redis.call('PTTL', lease) > tonumber(hold_ms) then
    redis.call('PEXPIRE', lease, hold_ms)
  end
end
