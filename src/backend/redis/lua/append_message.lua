-- KEYS: conv hash, msgs list. ARGV: message JSON, now_ms, inbound (1/0), title from the message, conversation
-- TTL s (a conversation lives that long after its last message), messages kept (the oldest past it are
-- trimmed; `message_count` keeps counting every message, so indexes stay absolute), the message's id, the
-- refresh period ms.
-- Resend safety: the ids of the last eight messages are kept in the hash (`recent`, read and written with the
-- fields this script reads and writes anyway), so a resend of a call that ran stores nothing twice.
-- Both keys' TTLs are renewed when the last renewal (`kept_at_ms`) is older than the refresh period: a
-- conversation in steady use pays for its expiries once per period, not on every message.
-- Returns {user id, org id, 1 when the TTLs were renewed (the indexes' are then renewed too) else 0}, or nil when
-- the conversation does not exist.
local conv = redis.call('HMGET', KEYS[1], 'user_id', 'org_id', 'title', 'kept_at_ms', 'message_count', 'recent')
if not conv[1] then return false end
local recent = conv[6] or ''
if string.find(' ' .. recent .. ' ', ' ' .. ARGV[7] .. ' ', 1, true) then return {conv[1], conv[2], 0} end
local kept = tonumber(ARGV[6])
if redis.call('RPUSH', KEYS[2], ARGV[1]) > kept then redis.call('LTRIM', KEYS[2], -kept, -1) end
local now = tonumber(ARGV[2])
local renew = not conv[4] or now - tonumber(conv[4]) >= tonumber(ARGV[8])
local ids = {ARGV[7]}
for id in string.gmatch(recent, '%S+') do
  if #ids < 8 then ids[#ids + 1] = id end
end
local fields = {'updated_at_ms', ARGV[2], 'message_count', string.format('%d', (tonumber(conv[5]) or 0) + 1),
  'recent', table.concat(ids, ' ')}
if ARGV[3] == '1' and (conv[3] or '') == '' then
  fields[#fields + 1] = 'title'
  fields[#fields + 1] = ARGV[4]
end
if renew then
  fields[#fields + 1] = 'kept_at_ms'
  fields[#fields + 1] = ARGV[2]
end
redis.call('HSET', KEYS[1], unpack(fields))
if renew then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  return {conv[1], conv[2], 1}
end
return {conv[1], conv[2], 0}
