-- KEYS: seq, log. Returns {oldest retained, latest}, {0, 0} when the session has no events. An entry holds a
-- batch: its first seq is its `f` field (an entry without one, written before batches, holds the seq of its id).
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
if latest == 0 then return {0, 0} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = latest + 1
if first[1] then
  local f = first[1][2]
  if f[1] == 'f' then oldest = tonumber(f[2]) else oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
end
return {oldest, latest}
