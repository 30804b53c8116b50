-- KEYS: one window's counter. Uncounts one use if the window still counts any: a counter that already expired
-- (the window turned) is never recreated, so no counter is ever left without its TTL.
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return n
