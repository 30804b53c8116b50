-- KEYS: the window's counter. ARGV: limit, window ms, amount. 1 when the amount was counted, 0 when it would
-- take the count past the limit (nothing counted). The counter expires with its window.
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[3])
if n + amount > tonumber(ARGV[1]) then return 0 end
redis.call('INCRBY', KEYS[1], amount)
if n == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
