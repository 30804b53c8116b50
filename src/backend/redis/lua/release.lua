-- KEYS: lease, turn record, step. ARGV: turn id. Deletes whichever of the two still belongs to that turn (the
-- step with the record).
local released = 0
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur)['turn_id'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
local rec = redis.call('GET', KEYS[2])
if rec and cjson.decode(rec)['turn_id'] == ARGV[1] then
  redis.call('DEL', KEYS[2], KEYS[3])
  released = 1
end
return released
