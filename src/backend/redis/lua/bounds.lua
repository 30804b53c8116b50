-- KEYS: seq, log. Returns {oldest retained, latest}, {0, 0} when the session has no events.
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
if latest == 0 then return {0, 0} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = latest + 1
if first[1] then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
return {oldest, latest}
