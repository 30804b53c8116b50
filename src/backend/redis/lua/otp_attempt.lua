-- KEYS: otp hash (json, exp, max, used). ARGV: now ms. Counts one attempt before the pod compares, so guesses
-- spread over pods share one budget. Returns {'check', json, used} | {'none'} | {'expired'} | {'locked'}.
local v = redis.call('HMGET', KEYS[1], 'json', 'exp', 'max', 'used')
if not v[1] then return {'none'} end
if tonumber(ARGV[1]) >= tonumber(v[2]) then return {'expired'} end
if tonumber(v[4] or '0') >= tonumber(v[3]) then return {'locked'} end
local used = redis.call('HINCRBY', KEYS[1], 'used', 1)
return {'check', v[1], tostring(used)}
