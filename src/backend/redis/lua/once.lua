-- Wraps a write script so a resend of the same call is answered from the first run's reply (fred resends a
-- command after a dropped connection, and after a MOVED redirect). The last KEY is the slot's ops hash, the last
-- ARGV a token unique to the call. The body, the cap and the TTL (placeholders in capitals between double
-- underscores) are filled in by scripts.rs.
local ops = KEYS[#KEYS]
local token = ARGV[#ARGV]
local cached = redis.call('HGET', ops, token)
if cached then return cjson.decode(cached) end
local function run()
__BODY__
end
local result = run()
if redis.call('HLEN', ops) >= __OPS_CAP__ then redis.call('DEL', ops) end
redis.call('HSET', ops, token, cjson.encode(result))
redis.call('EXPIRE', ops, __OPS_TTL_S__)
return result
