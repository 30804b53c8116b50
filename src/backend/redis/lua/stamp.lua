-- KEYS: contact hash. ARGV: name, email, phone ('' = keep), ttl s. A new email or phone clears `verified`:
-- a proof of ownership is for the contact the code went to.
local function set(field, value)
  if value == '' then return end
  local old = redis.call('HGET', KEYS[1], field)
  if old ~= value then
    redis.call('HSET', KEYS[1], field, value)
    if field ~= 'name' then redis.call('HDEL', KEYS[1], 'verified') end
  end
end
set('name', ARGV[1])
set('email', ARGV[2])
set('phone', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
