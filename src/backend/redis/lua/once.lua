-- Wraps a write script so a resend of the same call is answered from the first run's reply (fred resends a
-- command after a dropped connection, and after a MOVED redirect). The last two KEYS are the slot's ops hash
-- and its previous generation, the last ARGV a token unique to the call. The body, the cap and the TTL
-- (placeholders in capitals between double underscores) are filled in by scripts.rs.
-- A full ops hash becomes the previous generation (replacing the one before), so the last __OPS_CAP__ replies
-- at least are always remembered while a busy slot keeps at most twice that: a session that writes every
-- few seconds for hours holds a few KB here, not a reply per write.
local ops, prev = KEYS[#KEYS - 1], KEYS[#KEYS]
local token = ARGV[#ARGV]
local cached = redis.call('HGET', ops, token) or redis.call('HGET', prev, token)
if cached then return cjson.decode(cached) end
local function run()
__BODY__
end
local result = run()
if redis.call('HLEN', ops) >= __OPS_CAP__ then redis.call('RENAME', ops, prev) end
redis.call('HSET', ops, token, cjson.encode(result))
redis.call('EXPIRE', ops, __OPS_TTL_S__)
return result
