-- KEYS: the window's counter. ARGV: limit, window ms, amount. 1 when the amount was counted, 0 when it would
-- take the count past the limit (nothing counted). The counter expires with its window. Counted first and
-- taken back when refused: an admitted use costs one increment, not a read and an increment.
local amount = tonumber(ARGV[3])
local n = redis.call('INCRBY', KEYS[1], amount)
if n > tonumber(ARGV[1]) then
  if n == amount then redis.call('DEL', KEYS[1]) else redis.call('DECRBY', KEYS[1], amount) end
  return 0
end
if n == amount then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
